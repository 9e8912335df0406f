//! Fuzz target `json_messages`: see `signalr_protocol_fuzz::json_messages`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signalr_protocol_fuzz::json_messages(data));
