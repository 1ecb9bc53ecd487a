//! What every encoding must satisfy, checked by several targets: ids below the vocab size, an
//! exact round trip, agreement with the naive BPE, and the same result from every entry point.

use bpe_fast::Tokenizer;

use crate::reference::NaiveBpe;

/// Panics (a fuzzer crash) when any encoding of `text` by `tok` breaks an invariant.
pub fn check_encoding(tok: &Tokenizer, naive: &NaiveBpe, text: &str) {
    let chunks = tok.pattern().split(text).expect("split");
    assert_eq!(
        chunks.concat(),
        text,
        "the chunks do not concatenate to the text"
    );
    assert!(chunks.iter().all(|c| !c.is_empty()), "an empty chunk");

    let ids = tok.encode_ordinary(text).expect("encode_ordinary");
    assert_eq!(
        ids,
        naive.encode(tok.pattern(), text),
        "encode_ordinary differs from naive BPE"
    );
    check_decodes_to(tok, &ids, text.as_bytes());

    // The same text again: now the per-thread chunk cache answers.
    assert_eq!(
        tok.encode_ordinary(text).expect("encode_ordinary"),
        ids,
        "cached encode differs"
    );
    assert_eq!(
        tok.encode(text, None).expect("encode"),
        ids,
        "encode(None) differs"
    );

    let names: Vec<String> = tok
        .specials()
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    let matcher = tok.special_matcher(&names).expect("special_matcher");
    let with_specials = tok
        .encode(text, matcher.as_deref())
        .expect("encode with specials");
    check_decodes_to(tok, &with_specials, text.as_bytes());

    let batch = tok
        .encode_batch(&[text, "", text], None, 2)
        .expect("encode_batch");
    assert_eq!(
        batch,
        [ids.clone(), vec![], ids.clone()],
        "encode_batch differs"
    );
    let (flat, ends) = tok
        .encode_batch_flat(&[text, text], None, 1, None)
        .expect("encode_batch_flat");
    assert_eq!(
        flat,
        [ids.as_slice(), ids.as_slice()].concat(),
        "encode_batch_flat differs"
    );
    assert_eq!(ends, [ids.len() as u64, 2 * ids.len() as u64]);
}

/// `ids` are all known, below the vocab size, and every decoder gives exactly `expected`.
pub fn check_decodes_to(tok: &Tokenizer, ids: &[u32], expected: &[u8]) {
    for &id in ids {
        assert!(
            (id as usize) < tok.vocab_size(),
            "id {id} >= vocab size {}",
            tok.vocab_size()
        );
    }
    let decoded = tok
        .decode_bytes(ids.iter().map(|&id| u64::from(id)))
        .expect("decode_bytes");
    assert_eq!(
        decoded, expected,
        "decode_bytes does not give the text back"
    );
    let len = tok.decoded_len(ids).expect("decoded_len");
    assert_eq!(len, expected.len(), "decoded_len");
    let mut out = vec![0xA5; len];
    tok.decode_into(ids, &mut out).expect("decode_into");
    assert_eq!(out, expected, "decode_into does not give the text back");
}
