//! ROUTER frame classification and reply decoding never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zeroservices_core::fuzzing::frames(data));
