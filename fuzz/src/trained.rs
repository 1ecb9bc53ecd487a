//! Building small trained tokenizers the way `bpe_fast.train` does: count chunks, train merges,
//! tokens 0-255 then 256 + k, special tokens after them.

use bpe_fast::{train_merges, ChunkCounter, Pattern, Tokenizer, TrainOptions};

use crate::reference::tokens_of_merges;

/// Special tokens of the trained tokenizers: one overlapping another, so leftmost-longest
/// matching matters.
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<s>", "<s>x"];

/// A little of everything the splitters and the merge table care about: words, contractions,
/// digits, punctuation runs, whitespace runs and newlines, CJK, combining marks, emoji, and
/// long runs of one letter (tokens made of tokens of the same byte).
pub const CORPUS: &str = "The quick brown fox jumps over the lazy dog. It's 2024; we'll see.\n\
    the cat sat on the mat, the dog ate the hat!!! ...   spaces   and\ttabs\r\n\
    fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); } // code\n\
    滚滚长江东逝水，浪花淘尽英雄。是非成败转头空。三国演义 三国\n\
    naïve café résumé Ωμέγα привет мир e\u{301} 👍🏽 🇫🇷 ١٢٣\n\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab abababababababab\n\
    DON'T SHOUT, don't whisper: I'M here, you're there, they've gone, she'd know.\n";

/// Trains `num_merges` merges on `texts` (each one document) and builds the tokenizer with
/// `SPECIALS` (fewer merges when the texts run out of pairs).
pub fn train_tokenizer(texts: &[&str], pattern: Pattern, num_merges: usize) -> Tokenizer {
    let mut counter = ChunkCounter::new(pattern.clone(), 1);
    counter.add_texts(texts).expect("count chunks");
    let options = TrainOptions {
        num_merges,
        min_frequency: 1,
        max_token_length: None,
        num_threads: 1,
    };
    let counts = counter.counts().iter().map(|(b, n)| (b.as_slice(), *n));
    let merges = train_merges(counts, &options, &mut |_| Ok(())).expect("train");
    let tokens = tokens_of_merges(&merges);
    let first_special = tokens.len() as u32;
    let specials = SPECIALS
        .iter()
        .enumerate()
        .map(|(k, name)| (name.to_string(), first_special + k as u32))
        .collect();
    Tokenizer::new(tokens, merges, specials, pattern).expect("a trained vocab loads")
}

/// Distinct CJK characters in `cjk_corpus`: more than `MIN_THREE_BYTE_ATOMS` (300), so that a
/// tokenizer trained on it encodes CJK from whole characters (rust/src/char_atoms.rs).
const CJK_CHARACTERS: u32 = 480;

/// Chinese-like text over `CJK_CHARACTERS` ideographs from U+4E00: each alone on a line six times
/// (so that training makes a token of every one), then clauses of them in a fixed shuffled order
/// with fullwidth commas, full stops and newlines, twice (tokens across character boundaries,
/// whole or in part: the head and tail tokens the atoms' rules are for).
pub fn cjk_corpus() -> String {
    let ideograph = |at: u32| char::from_u32(0x4E00 + at).expect("a CJK ideograph");
    let mut text = String::new();
    for _ in 0..6 {
        for at in 0..CJK_CHARACTERS {
            text.push(ideograph(at));
            text.push('\n');
        }
    }
    let mut state: u32 = 12_345;
    for round in 0..2 {
        for k in 0..CJK_CHARACTERS {
            // k * 167 permutes 0..480 (167 is prime to 480); each round starts elsewhere. A
            // linear congruential generator places the punctuation.
            text.push(ideograph((k * 167 + round * 89) % CJK_CHARACTERS));
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            match (state >> 16) % 9 {
                0 => text.push('，'),
                1 => text.push_str("。\n"),
                _ => {}
            }
        }
    }
    text
}
