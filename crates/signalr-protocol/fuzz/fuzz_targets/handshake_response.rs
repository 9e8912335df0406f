//! Fuzz target `handshake_response`: see `signalr_protocol_fuzz::handshake_response`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signalr_protocol_fuzz::handshake_response(data));
