#![no_main]

// The properties of the `fuzz_frame` test, fed from libFuzzer's bytes.
#[allow(dead_code, unused_imports)]
#[path = "../../shared/tests/fuzz_frame.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::fuzz_bytes(data));
