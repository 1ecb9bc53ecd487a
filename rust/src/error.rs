//! The one error type of the core. Every fallible path returns it; the binding maps it once
//! (python.rs) to ValueError / OSError, so no user input can reach a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller-supplied argument is out of range or malformed (vocab size, pattern, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Tokenizer data (tokens, merges, special tokens) is inconsistent; `location` names the entry.
    #[error("invalid tokenizer data at {location}: {what}")]
    InvalidData { what: String, location: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid UTF-8 at byte offset {offset}", path.display())]
    InvalidUtf8 { path: PathBuf, offset: u64 },

    #[error("unknown token id {id} at position {position}")]
    UnknownId { id: u64, position: usize },

    /// The regex engine gave up (backtracking limit) on some input.
    #[error("pre-tokenizer regex failed: {0}")]
    Regex(String),

    /// A callback supplied by the caller (e.g. a progress hook) asked to stop.
    #[error("interrupted by callback")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid_data(what: impl Into<String>, location: impl Into<String>) -> Self {
        Error::InvalidData {
            what: what.into(),
            location: location.into(),
        }
    }
}
