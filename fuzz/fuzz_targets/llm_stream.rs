#![no_main]

// The properties of the `fuzz_llm_stream` test, fed from libFuzzer's bytes.
#[allow(dead_code, unused_imports)]
#[path = "../../control-plane/tests/fuzz_llm_stream.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::fuzz_bytes(data));
