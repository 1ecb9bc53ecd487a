//! Target `encode_roundtrip`: arbitrary text through a small trained tokenizer.
//!
//! Invariants (`invariants::check_encoding`): every id is below the vocab size, decoding gives
//! the text back exactly, the encoding equals the naive BPE of DESIGN.md section 3, and every
//! entry point (encode_ordinary, encode, cached, batched, flat) agrees.
//! The tokenizer is either one trained once on `trained::CORPUS` under each pattern, or one
//! trained on the input itself, so that its merges are ones the text at hand can use (long runs
//! of a token, merges over any bytes the fuzzer likes), or one trained on CJK text with enough
//! whole-character tokens for the atom path (rust/src/char_atoms.rs).

use std::sync::OnceLock;

use bpe_fast::{Pattern, Tokenizer};

use crate::input::Input;
use crate::reference::NaiveBpe;
use crate::trained::{cjk_corpus, train_tokenizer, CORPUS};
use crate::vocab_load::PATTERNS;

/// Merges of the tokenizers trained on the corpus (vocab 256 + 300 + specials).
const CORPUS_MERGES: usize = 300;

fn corpus_tokenizers() -> &'static [(Tokenizer, NaiveBpe)] {
    static BUILT: OnceLock<Vec<(Tokenizer, NaiveBpe)>> = OnceLock::new();
    BUILT.get_or_init(|| {
        PATTERNS
            .iter()
            .map(|name| {
                let pattern = Pattern::parse(name).expect("listed pattern");
                let tok = train_tokenizer(&[CORPUS, CORPUS], pattern, CORPUS_MERGES);
                let naive = NaiveBpe::new(tok.tokens(), tok.merges());
                (tok, naive)
            })
            .collect()
    })
}

/// Trained on `trained::cjk_corpus` under o200k's pattern: enough whole-character tokens that CJK
/// takes the atom path (checked when built).
fn cjk_tokenizer() -> &'static (Tokenizer, NaiveBpe) {
    static BUILT: OnceLock<(Tokenizer, NaiveBpe)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let corpus = cjk_corpus();
        let tok = train_tokenizer(&[corpus.as_str()], Pattern::O200k, CJK_MERGES);
        assert!(
            tok.char_atom_count() > 0,
            "the CJK tokenizer must use the atom path ({} merges)",
            tok.merges().len()
        );
        let naive = NaiveBpe::new(tok.tokens(), tok.merges());
        (tok, naive)
    })
}

/// Merges of the CJK tokenizer: its 480 characters take ~500 (shared first bytes merge first),
/// the rest join characters, whole or in part.
const CJK_MERGES: usize = 1_500;

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let pattern_index = usize::from(mode & 7) % PATTERNS.len();
    if mode & 16 != 0 {
        let text = String::from_utf8_lossy(input.rest());
        let (tok, naive) = cjk_tokenizer();
        crate::invariants::check_encoding(tok, naive, &text);
    } else if mode & 8 == 0 {
        let text = String::from_utf8_lossy(input.rest());
        let (tok, naive) = &corpus_tokenizers()[pattern_index];
        crate::invariants::check_encoding(tok, naive, &text);
    } else {
        let num_merges = input.below(64) + 1;
        let training = input.string(255);
        let text = String::from_utf8_lossy(input.rest());
        let pattern = Pattern::parse(PATTERNS[pattern_index]).expect("listed pattern");
        let tok = train_tokenizer(&[training.as_str(), &text], pattern, num_merges);
        let naive = NaiveBpe::new(tok.tokens(), tok.merges());
        crate::invariants::check_encoding(&tok, &naive, &text);
    }
}
