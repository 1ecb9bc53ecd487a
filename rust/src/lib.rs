//! bpe_fast: exact byte-level BPE (training, encoding, decoding) as a pure-Rust core.
//! The Python binding lives in one file, `python.rs`, compiled with the `python` feature.

mod char_atoms;
pub mod count;
pub mod encode;
pub mod error;
pub mod fast_split;
mod memory_hints;
pub mod ordered;
mod pair_index;
mod piece_cache;
pub mod pretokenize;
pub mod recover;
pub mod threads;
pub mod tiktoken_file;
pub mod tokenizer;
pub mod train;
mod unicode_tables;
pub mod window_split;
pub mod word_table;

pub use count::ChunkCounter;
pub use error::{Error, Result};
pub use pretokenize::Pattern;
pub use recover::recover_merges;
pub use tokenizer::Tokenizer;
pub use train::{train_merges, TrainOptions};

#[cfg(feature = "python")]
mod python;
