//! Fuzz target `handshake_request`: see `signalr_protocol_fuzz::handshake_request`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signalr_protocol_fuzz::handshake_request(data));
