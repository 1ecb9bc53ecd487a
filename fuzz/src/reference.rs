//! Plain reference versions of what the core does fast, written from DESIGN.md section 3 and
//! sharing no code with it: the fuzz targets compare the core against these.

use std::collections::{BTreeMap, HashMap, HashSet};

use bpe_fast::tokenizer::MAX_ID;
use bpe_fast::Pattern;

/// BPE encoding as specified: start from single bytes, repeatedly apply the listed merge of lowest
/// rank among adjacent pairs (leftmost on ties) until none applies.
pub struct NaiveBpe {
    byte_ids: [u32; 256],
    /// (left, right) -> (rank, id of the merged token).
    ranks: HashMap<(u32, u32), (usize, u32)>,
}

impl NaiveBpe {
    /// `tokens` and `merges` must be valid (`vocab_error` returns None for them).
    pub fn new(tokens: &[(u32, Vec<u8>)], merges: &[(u32, u32)]) -> NaiveBpe {
        let mut byte_ids = [u32::MAX; 256];
        let bytes_of: HashMap<u32, &[u8]> =
            tokens.iter().map(|(id, b)| (*id, b.as_slice())).collect();
        let id_of: HashMap<&[u8], u32> = tokens.iter().map(|(id, b)| (b.as_slice(), *id)).collect();
        for (id, bytes) in tokens {
            if let [byte] = bytes.as_slice() {
                byte_ids[usize::from(*byte)] = *id;
            }
        }
        let mut ranks = HashMap::new();
        for (rank, &(left, right)) in merges.iter().enumerate() {
            let joined = [bytes_of[&left], bytes_of[&right]].concat();
            ranks
                .entry((left, right))
                .or_insert((rank, id_of[joined.as_slice()]));
        }
        NaiveBpe { byte_ids, ranks }
    }

    pub fn encode_chunk(&self, bytes: &[u8]) -> Vec<u32> {
        let mut parts: Vec<u32> = bytes
            .iter()
            .map(|&b| self.byte_ids[usize::from(b)])
            .collect();
        loop {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(at, pair)| self.ranks.get(&(pair[0], pair[1])).map(|r| (r.0, at)))
                .min();
            let Some((rank, at)) = best else {
                return parts;
            };
            let made = self.ranks[&(parts[at], parts[at + 1])].1;
            debug_assert_eq!(self.ranks[&(parts[at], parts[at + 1])].0, rank);
            parts.splice(at..at + 2, [made]);
        }
    }

    /// The chunks come from the core's own splitter (the reference checks BPE, not splitting);
    /// callers check separately that the chunks concatenate to the text.
    pub fn encode(&self, pattern: &Pattern, text: &str) -> Vec<u32> {
        let chunks = pattern.split(text).expect("split");
        chunks
            .iter()
            .flat_map(|chunk| self.encode_chunk(chunk.as_bytes()))
            .collect()
    }
}

/// Why `Tokenizer::new` must refuse these parts (None: it must accept them), from the rules of
/// DESIGN.md section 4 ("loading validates everything").
pub fn vocab_error(
    tokens: &[(u32, Vec<u8>)],
    merges: &[(u32, u32)],
    specials: &[(String, u32)],
) -> Option<String> {
    let mut bytes_of: HashMap<u32, &[u8]> = HashMap::new();
    let mut id_of: HashMap<&[u8], u32> = HashMap::new();
    for (id, bytes) in tokens {
        if *id > MAX_ID {
            return Some(format!("token id {id} above MAX_ID"));
        }
        if bytes.is_empty() {
            return Some(format!("token id {id} is empty"));
        }
        if bytes_of.insert(*id, bytes).is_some() {
            return Some(format!("token id {id} twice"));
        }
        if id_of.insert(bytes, *id).is_some() {
            return Some(format!("bytes of token id {id} twice"));
        }
    }
    for byte in 0..=255u8 {
        if !id_of.contains_key([byte].as_slice()) {
            return Some(format!("no token for byte {byte}"));
        }
    }
    let mut made_ids = HashSet::new();
    for (rank, (left, right)) in merges.iter().enumerate() {
        let (Some(l), Some(r)) = (bytes_of.get(left), bytes_of.get(right)) else {
            return Some(format!("merge {rank} names an unknown id"));
        };
        let Some(made) = id_of.get([*l, *r].concat().as_slice()) else {
            return Some(format!("merge {rank} makes no token"));
        };
        if !made_ids.insert(*made) {
            return Some(format!("merge {rank} makes a token made before"));
        }
    }
    for (id, bytes) in tokens {
        if bytes.len() > 1 && !made_ids.contains(id) {
            return Some(format!("token id {id} made by no merge"));
        }
    }
    let mut names = HashSet::new();
    let mut special_ids = HashSet::new();
    for (name, id) in specials {
        if name.is_empty() {
            return Some("empty special token".into());
        }
        if *id > MAX_ID {
            return Some(format!("special id {id} above MAX_ID"));
        }
        if !names.insert(name) {
            return Some(format!("special {name:?} twice"));
        }
        if bytes_of.contains_key(id) || !special_ids.insert(*id) {
            return Some(format!("special id {id} already used"));
        }
    }
    None
}

/// Training as specified: count adjacent pairs over all chunks (with multiplicity), merge the
/// candidate of highest count, ties to the smallest (left, right); stop at `num_merges` or when
/// no candidate reaches `min_frequency`.
pub fn naive_train(
    chunks: &BTreeMap<Vec<u8>, u64>,
    num_merges: usize,
    min_frequency: u64,
    max_token_length: Option<usize>,
) -> Vec<(u32, u32)> {
    let mut seqs: Vec<(Vec<u32>, u64)> = chunks
        .iter()
        .map(|(bytes, n)| (bytes.iter().map(|&b| u32::from(b)).collect(), *n))
        .collect();
    let mut lengths: Vec<usize> = vec![1; 256];
    let mut merges = Vec::new();
    while merges.len() < num_merges {
        let mut counts: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for (seq, n) in &seqs {
            for pair in seq.windows(2) {
                *counts.entry((pair[0], pair[1])).or_default() += n;
            }
        }
        let fits = |&(l, r): &(u32, u32)| {
            max_token_length.is_none_or(|max| lengths[l as usize] + lengths[r as usize] <= max)
        };
        // Highest count first; among equal counts the smallest pair, which BTreeMap order
        // visits first and `>` keeps.
        let mut best: Option<((u32, u32), u64)> = None;
        for (pair, &count) in counts.iter().filter(|(pair, _)| fits(pair)) {
            if best.is_none_or(|(_, top)| count > top) {
                best = Some((*pair, count));
            }
        }
        let Some((pair, count)) = best else { break };
        if count < min_frequency.max(1) {
            break;
        }
        let made = 256 + merges.len() as u32;
        merges.push(pair);
        lengths.push(lengths[pair.0 as usize] + lengths[pair.1 as usize]);
        for (seq, _) in &mut seqs {
            let mut merged = Vec::with_capacity(seq.len());
            let mut at = 0;
            while at < seq.len() {
                if at + 1 < seq.len() && (seq[at], seq[at + 1]) == pair {
                    merged.push(made);
                    at += 2;
                } else {
                    merged.push(seq[at]);
                    at += 1;
                }
            }
            *seq = merged;
        }
    }
    merges
}

/// The tokens of a trained vocab: bytes 0-255 as ids 0-255, then merge k as id 256 + k.
pub fn tokens_of_merges(merges: &[(u32, u32)]) -> Vec<(u32, Vec<u8>)> {
    let mut tokens: Vec<(u32, Vec<u8>)> = (0..=255u8).map(|b| (u32::from(b), vec![b])).collect();
    for (k, &(left, right)) in merges.iter().enumerate() {
        let joined = [
            tokens[left as usize].1.as_slice(),
            tokens[right as usize].1.as_slice(),
        ]
        .concat();
        tokens.push((256 + k as u32, joined));
    }
    tokens
}
