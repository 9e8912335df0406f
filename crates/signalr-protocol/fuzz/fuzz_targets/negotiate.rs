//! Fuzz target `negotiate`: see `signalr_protocol_fuzz::negotiate`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signalr_protocol_fuzz::negotiate(data));
