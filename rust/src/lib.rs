//! bpe_fast: exact byte-level BPE (training, encoding, decoding) as a pure-Rust core.
//! The Python binding lives in one file, `python.rs`, compiled with the `python` feature.

#[cfg(feature = "python")]
mod python;
