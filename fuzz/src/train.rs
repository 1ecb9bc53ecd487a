//! Target `train`: up to 16 documents of up to 256 bytes, a vocab of 256-300, any pattern
//! (raw included), and the other training options.
//!
//! Invariants: chunk counting agrees with splitting each document; `train_merges` gives exactly
//! the merges of the naive trainer of DESIGN.md section 3 (highest count, ties to the smallest
//! pair), whatever the thread count; the progress hook sees the final count and an error from it
//! is returned; the result builds a tokenizer that loads, whose merges `recover_merges` finds
//! again from the tokens alone, and that round-trips every document (agreeing with naive BPE).

use std::collections::BTreeMap;

use bpe_fast::{
    recover_merges, train_merges, ChunkCounter, Error, Pattern, Tokenizer, TrainOptions,
};

use crate::input::Input;
use crate::invariants::check_encoding;
use crate::reference::{naive_train, tokens_of_merges, NaiveBpe};
use crate::trained::SPECIALS;
use crate::vocab_load::PATTERNS;

const MAX_DOCS: usize = 16;
const MAX_DOC_BYTES: usize = 256;

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn train(
    counts: &BTreeMap<Vec<u8>, u64>,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize) -> bpe_fast::Result<()>,
) -> bpe_fast::Result<Vec<(u32, u32)>> {
    train_merges(
        counts.iter().map(|(b, n)| (b.as_slice(), *n)),
        options,
        progress,
    )
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let pattern = Pattern::parse(PATTERNS[input.below(PATTERNS.len())]).expect("listed pattern");
    let vocab_size = 256 + input.below(45);
    // vocab_size counts the special tokens, so it must leave room for them (bpe_fast.train
    // refuses a smaller one).
    let room = SPECIALS.len().min(vocab_size - 256);
    let specials: Vec<&str> = SPECIALS[..input.below(room + 1)].to_vec();
    let options = TrainOptions {
        num_merges: vocab_size - 256 - specials.len(),
        min_frequency: input.below(4) as u64,
        max_token_length: (input.below(4) == 0).then(|| 1 + input.below(8)),
        num_threads: 1 + input.below(2),
    };
    // Each extra training run costs as much as the first (~10 ms, mostly fixed set-up), so the
    // input picks which of them to do.
    let extra_runs = input.byte();
    let docs: Vec<String> = (0..input.below(MAX_DOCS + 1))
        .map(|_| truncated(input.string(MAX_DOC_BYTES), MAX_DOC_BYTES))
        .collect();

    let mut chunks: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for doc in &docs {
        for chunk in pattern.split(doc).expect("split") {
            *chunks.entry(chunk.into_bytes()).or_default() += 1;
        }
    }
    let mut counter = ChunkCounter::new(pattern.clone(), options.num_threads);
    counter.add_texts(&docs).expect("add_texts");
    let counted: BTreeMap<Vec<u8>, u64> = counter
        .counts()
        .iter()
        .map(|(b, n)| (b.clone(), *n))
        .collect();
    assert_eq!(
        counted, chunks,
        "ChunkCounter differs from splitting each document"
    );
    assert_eq!(
        counter.total_bytes(),
        docs.iter().map(|d| d.len() as u64).sum::<u64>()
    );

    let mut last_progress = None;
    let merges = train(&chunks, &options, &mut |done| {
        last_progress = Some(done);
        Ok(())
    })
    .expect("train_merges");
    let expected = naive_train(
        &chunks,
        options.num_merges,
        options.min_frequency,
        options.max_token_length,
    );
    assert_eq!(
        merges, expected,
        "train_merges differs from the naive trainer"
    );
    assert_eq!(
        last_progress,
        Some(merges.len()),
        "the progress hook missed the final count"
    );

    if extra_runs & 1 == 1 {
        let other_threads = TrainOptions {
            num_threads: 3 - options.num_threads,
            ..options.clone()
        };
        assert_eq!(
            train(&chunks, &other_threads, &mut |_| Ok(())).expect("train_merges"),
            merges,
            "the merges depend on the thread count"
        );
    }
    if extra_runs & 2 == 2 {
        match train(&chunks, &options, &mut |_| Err(Error::Interrupted)) {
            Err(Error::Interrupted) => {}
            other => panic!("a failing progress hook gave {other:?}"),
        }
    }

    let tokens = tokens_of_merges(&merges);
    assert_eq!(
        recover_merges(&tokens).expect("recover_merges"),
        merges,
        "recover_merges"
    );
    let first_special = tokens.len() as u32;
    let special_ids: Vec<(String, u32)> = specials
        .iter()
        .enumerate()
        .map(|(k, name)| (name.to_string(), first_special + k as u32))
        .collect();
    let tok = Tokenizer::new(tokens, merges.clone(), special_ids, pattern.clone())
        .expect("a trained vocab loads");
    assert!(
        tok.vocab_size() <= vocab_size,
        "vocab {} > asked {vocab_size}",
        tok.vocab_size()
    );
    assert_eq!(tok.merges(), merges.as_slice());
    let naive = NaiveBpe::new(tok.tokens(), tok.merges());
    for doc in &docs {
        check_encoding(&tok, &naive, doc);
    }
    check_encoding(&tok, &naive, &docs.concat());
}
