//! The fuzz targets' checks (fuzz/src/, compiled here by path so no fuzzing tool is needed)
//! replayed on every saved input: fuzz/regressions/<target>/ holds inputs that once broke an
//! invariant (each named after the bug), fuzz/seeds/<target>/ the small starting corpus.
//! A new crash input found by scripts/fuzz.sh is copied into fuzz/regressions/<target>/.
#![allow(dead_code)]

#[path = "../../fuzz/src/decode_ids.rs"]
mod decode_ids;
#[path = "../../fuzz/src/encode_roundtrip.rs"]
mod encode_roundtrip;
#[path = "../../fuzz/src/input.rs"]
mod input;
#[path = "../../fuzz/src/invariants.rs"]
mod invariants;
#[path = "../../fuzz/src/reference.rs"]
mod reference;
#[path = "../../fuzz/src/train.rs"]
mod train;
#[path = "../../fuzz/src/trained.rs"]
mod trained;
#[path = "../../fuzz/src/vocab_load.rs"]
mod vocab_load;

use std::path::PathBuf;

/// Every file of fuzz/regressions/<target>/ and fuzz/seeds/<target>/, through `check`; the
/// failure names the file that broke.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for folder in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("dir entry").path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("read saved input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{} breaks the {target} check",
                path.display()
            );
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn vocab_load_saved_inputs() {
    assert!(
        replay("vocab_load", vocab_load::check) > 0,
        "no saved input"
    );
}

#[test]
fn encode_roundtrip_saved_inputs() {
    assert!(
        replay("encode_roundtrip", encode_roundtrip::check) > 0,
        "no saved input"
    );
}

#[test]
fn decode_ids_saved_inputs() {
    assert!(
        replay("decode_ids", decode_ids::check) > 0,
        "no saved input"
    );
}

#[test]
fn train_saved_inputs() {
    assert!(replay("train", train::check) > 0, "no saved input");
}

/// The checks are able to fail: a vocab the rules refuse must not slip through as accepted, and
/// a wrong naive reference would be caught (guards against a check that passes everything).
#[test]
fn the_references_can_disagree() {
    let merges = vec![(97, 98)];
    let tokens = reference::tokens_of_merges(&merges);
    assert!(reference::vocab_error(&tokens, &merges, &[]).is_none());
    assert!(
        reference::vocab_error(&tokens, &[], &[]).is_some(),
        "token 256 made by no merge"
    );
    let naive = reference::NaiveBpe::new(&tokens, &merges);
    assert_eq!(naive.encode_chunk(b"abab"), [256, 256]);
    let chunks = [(b"abab".to_vec(), 1u64)].into_iter().collect();
    assert_eq!(
        reference::naive_train(&chunks, 2, 1, None),
        [(97, 98), (256, 256)]
    );
}
