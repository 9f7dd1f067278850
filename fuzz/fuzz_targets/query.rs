//! Filter, sort and projection parsing, and filter evaluation, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zeroservices_core::fuzzing::query(data));
