//! The checks behind the fuzz targets in fuzz_targets/, one module per target, each a
//! `check(data: &[u8])` that panics when an invariant breaks.
//!
//! These files depend only on `bpe_fast` and std, so rust/tests/fuzz_regressions.rs compiles
//! them too and replays saved inputs (fuzz/regressions/) under plain `cargo test`.

pub mod decode_ids;
pub mod encode_roundtrip;
pub mod input;
pub mod invariants;
pub mod reference;
pub mod train;
pub mod trained;
pub mod vocab_load;
