//! Fuzz target `msgpack_messages`: see `signalr_protocol_fuzz::msgpack_messages`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signalr_protocol_fuzz::msgpack_messages(data));
