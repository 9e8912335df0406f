//! Fuzz target `classic_invocation`: see `signalr_protocol_fuzz::classic::classic_invocation`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signalr_protocol_fuzz::classic::classic_invocation(data));
