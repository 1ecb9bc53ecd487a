//! Target `vocab_load`: `Tokenizer::new` on tokens, merges, special tokens and a pattern made
//! from the input, valid or broken in many ways.
//!
//! Invariants: it never panics; it accepts exactly what the rules of DESIGN.md section 4 accept
//! (`reference::vocab_error`); an accepted tokenizer gives back the parts it was built from, and
//! rebuilding it from its own tokens()/merges()/specials()/pattern name (what saving and loading
//! the hex JSON does) gives an equal tokenizer: same parts and the same encodings, which also
//! agree with the naive BPE and round-trip.

use std::collections::HashSet;

use bpe_fast::tokenizer::MAX_ID;
use bpe_fast::{Pattern, Tokenizer};

use crate::input::Input;
use crate::invariants::check_encoding;
use crate::reference::{vocab_error, NaiveBpe};

/// Built-in patterns, raw, and custom regexes (one with zero-width matches, whose gaps become
/// chunks).
pub const PATTERNS: [&str; 8] = [
    "gpt2",
    "gpt4",
    "o200k",
    "raw",
    r"\w+|\W",
    r"\s+|\S+",
    r"(?=\p{L})",
    r"[ab]+|(?<=a)c",
];

/// Token bytes of a sample text are capped at this, to keep an execution around a millisecond.
const SAMPLE_MAX: usize = 2048;

struct Parts {
    tokens: Vec<(u32, Vec<u8>)>,
    merges: Vec<(u32, u32)>,
    specials: Vec<(String, u32)>,
    pattern: Pattern,
}

/// An id that is sometimes out of range or far beyond the others (a big decode table), mostly
/// small enough to collide with ids in use.
fn any_id(input: &mut Input) -> u32 {
    match input.below(16) {
        0 => MAX_ID + 1,
        1 => u32::MAX,
        2 => 1 << 20,
        _ => u32::from(input.u16()) % 1024,
    }
}

fn read_parts(input: &mut Input) -> Parts {
    // The 256 single bytes under one of several id layouts (GPT-2's are permuted).
    let offset = u32::from(input.u16()) % 512;
    let mut byte_ids: Vec<u32> = match input.below(4) {
        0 => (0..256).collect(),
        1 => (0..256).rev().collect(),
        2 => (offset..offset + 256).collect(),
        _ => {
            let mut ids: Vec<u32> = (0..256).collect();
            for at in (1..256).rev() {
                ids.swap(at, input.below(at + 1));
            }
            ids
        }
    };
    if input.below(8) == 0 {
        // A layout with a hole: ids are spread out.
        for id in &mut byte_ids {
            *id *= 3;
        }
    }
    let mut tokens: Vec<(u32, Vec<u8>)> = byte_ids
        .iter()
        .enumerate()
        .map(|(byte, &id)| (id, vec![byte as u8]))
        .collect();
    let mut next_id = byte_ids.iter().max().map_or(0, |&m| m + 1);
    let mut known: HashSet<Vec<u8>> = tokens.iter().map(|(_, b)| b.clone()).collect();

    let mut merges = Vec::new();
    for _ in 0..input.below(40) {
        let left = input.below(tokens.len());
        let right = input.below(tokens.len());
        let joined = [tokens[left].1.as_slice(), tokens[right].1.as_slice()].concat();
        if !known.insert(joined.clone()) {
            continue;
        }
        let id = if input.below(16) == 0 {
            any_id(input)
        } else {
            next_id
        };
        next_id = next_id.max(id.saturating_add(1));
        merges.push((tokens[left].0, tokens[right].0));
        tokens.push((id, joined));
    }

    // Breakage: each kind of mistake a vocab file can hold, and reorderings that stay valid.
    for _ in 0..input.below(4) {
        match input.below(10) {
            0 if tokens.len() > 1 => {
                let at = input.below(tokens.len());
                tokens.remove(at);
            }
            1 if !merges.is_empty() => {
                let at = input.below(merges.len());
                merges.remove(at);
            }
            2 if !merges.is_empty() => {
                let (a, b) = (input.below(merges.len()), input.below(merges.len()));
                merges.swap(a, b);
            }
            3 => {
                let at = input.below(tokens.len());
                tokens[at].0 = any_id(input);
            }
            4 => {
                let copy = tokens[input.below(tokens.len())].1.clone();
                tokens.push((any_id(input), copy));
            }
            5 => {
                let bytes = input.bytes(4).to_vec();
                tokens.push((any_id(input), bytes));
            }
            6 if !merges.is_empty() => {
                let at = input.below(merges.len());
                merges[at] = (any_id(input), any_id(input));
            }
            7 if !merges.is_empty() => {
                let copy = merges[input.below(merges.len())];
                merges.push(copy);
            }
            8 if !merges.is_empty() => {
                // A merge moved to the front: later ranks may now use it before it is made.
                let at = input.below(merges.len());
                let moved = merges.remove(at);
                merges.insert(0, moved);
            }
            _ => tokens.reverse(),
        }
    }

    let mut specials = Vec::new();
    for _ in 0..input.below(4) {
        let name = input.string(12);
        let id = if input.below(4) == 0 {
            any_id(input)
        } else {
            let id = next_id;
            next_id = next_id.saturating_add(1);
            id
        };
        specials.push((name, id));
    }
    let pattern = Pattern::parse(PATTERNS[input.below(PATTERNS.len())]).expect("listed pattern");
    Parts {
        tokens,
        merges,
        specials,
        pattern,
    }
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let parts = read_parts(&mut input);
    let expected = vocab_error(&parts.tokens, &parts.merges, &parts.specials);
    let built = Tokenizer::new(
        parts.tokens.clone(),
        parts.merges.clone(),
        parts.specials.clone(),
        parts.pattern.clone(),
    );
    let tok = match (built, expected) {
        (Err(_), Some(_)) => return,
        (Ok(_), Some(why)) => panic!("accepted an invalid vocab: {why}"),
        (Err(error), None) => panic!("refused a valid vocab: {error}"),
        (Ok(tok), None) => tok,
    };

    let mut sorted = parts.tokens.clone();
    sorted.sort_by_key(|(id, _)| *id);
    assert_eq!(
        tok.tokens(),
        sorted.as_slice(),
        "tokens() differ from the input"
    );
    assert_eq!(tok.merges(), parts.merges.as_slice(), "merges() differ");
    assert_eq!(
        tok.specials(),
        parts.specials.as_slice(),
        "specials() differ"
    );
    let max_id = sorted
        .iter()
        .map(|(id, _)| *id)
        .chain(parts.specials.iter().map(|(_, id)| *id))
        .max()
        .expect("256 tokens at least");
    assert_eq!(tok.vocab_size(), max_id as usize + 1, "vocab_size");
    for (id, bytes) in &sorted {
        assert_eq!(tok.token_bytes(*id).expect("token_bytes"), bytes.as_slice());
    }
    for (name, id) in &parts.specials {
        assert_eq!(
            tok.token_bytes(*id).expect("special token_bytes"),
            name.as_bytes()
        );
    }

    let reloaded = Tokenizer::new(
        tok.tokens().to_vec(),
        tok.merges().to_vec(),
        tok.specials().to_vec(),
        Pattern::parse(tok.pattern().name()).expect("own pattern name"),
    )
    .expect("a tokenizer rebuilt from its own parts");
    assert_eq!(reloaded.tokens(), tok.tokens());
    assert_eq!(reloaded.merges(), tok.merges());
    assert_eq!(reloaded.specials(), tok.specials());
    assert_eq!(reloaded.pattern().name(), tok.pattern().name());
    assert_eq!(reloaded.vocab_size(), tok.vocab_size());

    // Samples: every multi-byte token in rank order (so merges apply), the rest of the input,
    // and special-token text between ordinary text.
    let mut made: Vec<u8> = Vec::new();
    for (_, bytes) in sorted.iter().filter(|(_, b)| b.len() > 1) {
        if made.len() + bytes.len() > SAMPLE_MAX {
            break;
        }
        made.extend_from_slice(bytes);
    }
    let rest = String::from_utf8_lossy(input.rest()).into_owned();
    let with_specials: String = parts
        .specials
        .iter()
        .map(|(name, _)| format!("{name}{rest}"))
        .collect();
    let naive = NaiveBpe::new(tok.tokens(), tok.merges());
    for sample in [
        String::from_utf8_lossy(&made).into_owned(),
        rest,
        with_specials,
    ] {
        check_encoding(&tok, &naive, &sample);
        assert_eq!(
            reloaded.encode_ordinary(&sample).expect("encode"),
            tok.encode_ordinary(&sample).expect("encode"),
            "the rebuilt tokenizer encodes differently"
        );
    }
}
