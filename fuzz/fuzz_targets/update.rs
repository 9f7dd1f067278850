//! Update parsing and application never panic, and a failed update leaves the document as it was.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zeroservices_core::fuzzing::update(data));
