//! Recovering the merges of a vocab given without them (the course report's bare {id: hex} map,
//! tiktoken rank files): DESIGN.md section 4.

use crate::encode::Merger;
use crate::error::{Error, Result};
use crate::tokenizer::hex;

/// Tokens in id order; each longer than one byte is BPE-encoded with the merges recovered so far,
/// and the two parts that remain are its merge. Anything but two parts is an error naming it.
pub fn recover_merges(tokens: &[(u32, Vec<u8>)]) -> Result<Vec<(u32, u32)>> {
    let mut byte_ids = [u32::MAX; 256];
    for (id, bytes) in tokens {
        if let [b] = bytes.as_slice() {
            if byte_ids[*b as usize] != u32::MAX {
                return Err(Error::invalid_data(
                    format!("byte {b:02x} has two tokens"),
                    format!("token id {id}"),
                ));
            }
            byte_ids[*b as usize] = *id;
        }
    }
    if let Some(missing) = byte_ids.iter().position(|&id| id == u32::MAX) {
        return Err(Error::invalid_data(
            "no token for this single byte",
            format!("byte {missing:02x}"),
        ));
    }
    let mut longer: Vec<&(u32, Vec<u8>)> = tokens.iter().filter(|(_, b)| b.len() > 1).collect();
    longer.sort_by_key(|(id, _)| *id);
    let mut merger = Merger::new(byte_ids);
    let mut merges = Vec::with_capacity(longer.len());
    let mut parts = Vec::new();
    for (id, bytes) in longer {
        parts.clear();
        merger.encode(bytes, &mut parts);
        let where_ = || format!("token id {id} ({})", hex(bytes));
        let [left, right] = parts[..] else {
            return Err(Error::invalid_data(
                format!(
                    "BPE with the merges before it leaves {} parts, not 2",
                    parts.len()
                ),
                where_(),
            ));
        };
        if !merger.push(left, right, *id) {
            return Err(Error::invalid_data(
                "its merge duplicates an earlier one",
                where_(),
            ));
        }
        merges.push((left, right));
    }
    Ok(merges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{train_merges, TrainOptions};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        #[test]
        fn recovers_trained_merges(
            words in prop::collection::vec(("[abc ]{1,30}", 1u64..4), 1..10),
            n in 1usize..50,
        ) {
            let options = TrainOptions { num_merges: n, min_frequency: 1, max_token_length: None, num_threads: 1 };
            let merges = train_merges(words.iter().map(|(w, c)| (w.as_bytes(), *c)), &options, &mut |_| Ok(())).unwrap();
            let mut tokens: Vec<(u32, Vec<u8>)> = (0..=255u8).map(|b| (u32::from(b), vec![b])).collect();
            for (k, &(l, r)) in merges.iter().enumerate() {
                let joined = [tokens[l as usize].1.clone(), tokens[r as usize].1.clone()].concat();
                tokens.push((256 + k as u32, joined));
            }
            prop_assert_eq!(recover_merges(&tokens).unwrap(), merges);
        }
    }

    #[test]
    fn three_parts_is_an_error_naming_the_token() {
        let mut tokens: Vec<(u32, Vec<u8>)> =
            (0..=255u8).map(|b| (u32::from(b), vec![b])).collect();
        tokens.push((256, b"abc".to_vec()));
        let message = recover_merges(&tokens).unwrap_err().to_string();
        assert!(
            message.contains("token id 256") && message.contains("3 parts"),
            "{message}"
        );
    }
}
