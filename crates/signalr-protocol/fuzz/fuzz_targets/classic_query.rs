//! Fuzz target `classic_query`: see `signalr_protocol_fuzz::classic::classic_query`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signalr_protocol_fuzz::classic::classic_query(data));
