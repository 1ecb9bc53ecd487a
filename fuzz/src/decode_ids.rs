//! Target `decode_ids`: arbitrary ids (u32 and u64) through every decoder.
//!
//! Invariants: an id that is no token and no special token gives `Error::UnknownId` naming the
//! first such id and its position, whichever decoder is used; otherwise the result is the
//! concatenation of the ids' bytes (a special token's bytes are its text); a `decode_into`
//! buffer of the wrong size is an error, never a panic.

use std::collections::HashMap;
use std::sync::OnceLock;

use bpe_fast::{Error, Pattern, Tokenizer};

use crate::input::Input;
use crate::trained::{train_tokenizer, CORPUS};

/// Byte b is id 3b + 7 (a permuted, gapped layout like GPT-2's), a few merges, and special
/// tokens far above the rest: most ids below the vocab size are unknown.
fn sparse_tokenizer() -> Tokenizer {
    let id_of_byte = |b: u8| 3 * u32::from(b) + 7;
    let mut tokens: Vec<(u32, Vec<u8>)> = (0..=255u8).map(|b| (id_of_byte(b), vec![b])).collect();
    let th = (900, b"th".to_vec());
    let the = (901, b"the".to_vec());
    let long = (903, vec![b'x'; 2]);
    let merges = vec![
        (id_of_byte(b't'), id_of_byte(b'h')),
        (900, id_of_byte(b'e')),
        (id_of_byte(b'x'), id_of_byte(b'x')),
    ];
    tokens.extend([th, the, long]);
    let specials = vec![
        ("<|endoftext|>".to_string(), 4000),
        (
            "a much longer special token than sixteen bytes".to_string(),
            4001,
        ),
        ("\u{0}".to_string(), 0),
    ];
    Tokenizer::new(tokens, merges, specials, Pattern::Gpt2).expect("sparse vocab loads")
}

/// Id -> the bytes it decodes to, for every token and special token.
type DecodeTable = HashMap<u64, Vec<u8>>;

fn tokenizers() -> &'static [(Tokenizer, DecodeTable)] {
    static BUILT: OnceLock<Vec<(Tokenizer, DecodeTable)>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let trained = train_tokenizer(&[CORPUS], Pattern::Gpt2, 300);
        [trained, sparse_tokenizer()]
            .into_iter()
            .map(|tok| {
                let table = tok
                    .tokens()
                    .iter()
                    .map(|(id, b)| (u64::from(*id), b.clone()))
                    .chain(
                        tok.specials()
                            .iter()
                            .map(|(name, id)| (u64::from(*id), name.as_bytes().to_vec())),
                    )
                    .collect();
                (tok, table)
            })
            .collect()
    })
}

/// The first unknown id and its position, or the decoded bytes.
fn expected(table: &DecodeTable, ids: &[u64]) -> Result<Vec<u8>, (u64, usize)> {
    let mut out = Vec::new();
    for (position, id) in ids.iter().enumerate() {
        out.extend_from_slice(table.get(id).ok_or((*id, position))?);
    }
    Ok(out)
}

fn assert_unknown(
    result: Result<impl std::fmt::Debug, Error>,
    id: u64,
    position: usize,
    what: &str,
) {
    match result {
        Err(Error::UnknownId {
            id: got,
            position: at,
        }) if (got, at) == (id, position) => {}
        other => {
            panic!("{what}: expected UnknownId {{ id: {id}, position: {position} }}, got {other:?}")
        }
    }
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let (tok, table) = &tokenizers()[input.below(2)];
    let vocab = tok.vocab_size() as u64;
    let style = input.byte();
    let mut ids: Vec<u64> = Vec::new();
    while !input.is_empty() && ids.len() < 4096 {
        let id = match style % 4 {
            // Mostly in range, some just past the end.
            0 | 1 => u64::from(input.u16()) % (vocab + 4),
            2 => u64::from(input.u32()),
            _ => u64::from(input.u32()) | u64::from(input.u32()) << 32,
        };
        ids.push(id);
    }
    let wanted = expected(table, &ids);

    match &wanted {
        Ok(bytes) => assert_eq!(
            &tok.decode_bytes(ids.iter().copied()).expect("decode_bytes"),
            bytes
        ),
        Err((id, position)) => assert_unknown(
            tok.decode_bytes(ids.iter().copied()),
            *id,
            *position,
            "decode_bytes",
        ),
    }
    for &id in &ids {
        if let Ok(id) = u32::try_from(id) {
            match table.get(&u64::from(id)) {
                Some(bytes) => {
                    assert_eq!(tok.token_bytes(id).expect("token_bytes"), bytes.as_slice())
                }
                None => assert_unknown(tok.token_bytes(id), u64::from(id), 0, "token_bytes"),
            }
        }
    }

    // The u32 decoders see ids that fit (the binding's path); the others were checked above.
    let Ok(narrow) = ids
        .iter()
        .map(|&id| u32::try_from(id))
        .collect::<Result<Vec<u32>, _>>()
    else {
        return;
    };
    match &wanted {
        Ok(bytes) => {
            assert_eq!(tok.decoded_len(&narrow).expect("decoded_len"), bytes.len());
            let mut out = vec![0x5A; bytes.len()];
            tok.decode_into(&narrow, &mut out).expect("decode_into");
            assert_eq!(&out, bytes, "decode_into");
            // Wrong sizes are refused.
            let shrink = 1 + input.below(17);
            if bytes.len() >= shrink {
                let mut short = vec![0; bytes.len() - shrink];
                assert!(
                    tok.decode_into(&narrow, &mut short).is_err(),
                    "decode_into accepted a short buffer"
                );
            }
            let mut long = vec![0; bytes.len() + shrink];
            assert!(
                tok.decode_into(&narrow, &mut long).is_err(),
                "decode_into accepted a long buffer"
            );
        }
        Err((id, position)) => {
            assert_unknown(tok.decoded_len(&narrow), *id, *position, "decoded_len");
            // Room for the ids before the unknown one, so that it is reached.
            let before = expected(table, &ids[..*position]).expect("known ids before it");
            let mut out = vec![0; before.len()];
            assert_unknown(
                tok.decode_into(&narrow, &mut out),
                *id,
                *position,
                "decode_into",
            );
        }
    }
}
