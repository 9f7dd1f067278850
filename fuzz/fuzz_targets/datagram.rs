//! Discovery datagram parsing (with and without a cluster key) never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zeroservices_core::fuzzing::datagram(data));
