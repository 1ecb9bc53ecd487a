#![no_main]
//! See fuzz/src/decode_ids.rs for the input layout and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpe_fast_fuzz::decode_ids::check(data));
