#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| choir::fuzzing::relay(data));
