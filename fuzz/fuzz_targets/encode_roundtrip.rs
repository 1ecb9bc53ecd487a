#![no_main]
//! See fuzz/src/encode_roundtrip.rs for the input layout and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpe_fast_fuzz::encode_roundtrip::check(data));
