#![no_main]
//! See fuzz/src/train.rs for the input layout and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bpe_fast_fuzz::train::check(data));
