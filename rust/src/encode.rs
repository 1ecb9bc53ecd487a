//! BPE on one chunk: start from single bytes, repeatedly apply the listed merge with the lowest
//! rank among adjacent pairs (leftmost on ties) until none applies.
//!
//! Short chunks use a plain array scan; long ones a linked list plus a min-heap of (rank,
//! position) with stale entries skipped, so a megabyte-long chunk encodes in O(n log n).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// At or below this many bytes the quadratic scan beats the heap's bookkeeping.
const SHORT_CHUNK: usize = 64;
const NO_RANK: u32 = u32::MAX;
const NONE: usize = usize::MAX;

fn key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// The merge table: pair -> (rank, id it makes), plus the ids of the 256 single bytes.
#[derive(Clone, Debug)]
pub struct Merger {
    ranks: FxHashMap<u64, (u32, u32)>,
    byte_ids: [u32; 256],
}

impl Merger {
    pub fn new(byte_ids: [u32; 256]) -> Self {
        Merger {
            ranks: FxHashMap::default(),
            byte_ids,
        }
    }

    /// Adds the next merge (its rank is the number of merges before it). Returns false, adding
    /// nothing, when the pair is already listed.
    pub fn push(&mut self, left: u32, right: u32, made: u32) -> bool {
        let rank = self.ranks.len() as u32;
        match self.ranks.entry(key(left, right)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((rank, made));
                true
            }
        }
    }

    pub fn byte_id(&self, byte: u8) -> u32 {
        self.byte_ids[byte as usize]
    }

    fn rank(&self, left: u32, right: u32) -> u32 {
        self.ranks
            .get(&key(left, right))
            .map_or(NO_RANK, |&(rank, _)| rank)
    }

    fn made(&self, left: u32, right: u32) -> u32 {
        // Only called for a pair whose rank was just found, so the entry exists.
        self.ranks
            .get(&key(left, right))
            .map_or(NO_RANK, |&(_, made)| made)
    }

    /// Appends the BPE encoding of `bytes` to `out`.
    pub fn encode(&self, bytes: &[u8], out: &mut Vec<u32>) {
        if bytes.len() <= SHORT_CHUNK {
            self.encode_short(bytes, out)
        } else {
            self.encode_long(bytes, out)
        }
    }

    /// (rank, made) of a pair, or (NO_RANK, _) when it is not a merge: one hash lookup where
    /// `rank` followed by `made` would take two.
    fn rank_made(&self, left: u32, right: u32) -> (u32, u32) {
        self.ranks
            .get(&key(left, right))
            .copied()
            .unwrap_or((NO_RANK, NO_RANK))
    }

    fn encode_short(&self, bytes: &[u8], out: &mut Vec<u32>) {
        // Fixed-size stack arrays: short chunks are the common case and must not allocate.
        let n = bytes.len().min(SHORT_CHUNK);
        let mut parts = [0u32; SHORT_CHUNK];
        for (part, &b) in parts.iter_mut().zip(&bytes[..n]) {
            *part = self.byte_id(b);
        }
        if n < 2 {
            out.extend_from_slice(&parts[..n]);
            return;
        }
        // pair_rank[i] is the rank of (parts[i], parts[i + 1]) and pair_made[i] the id it makes,
        // kept so that applying the merge needs no second lookup.
        let mut pair_rank = [NO_RANK; SHORT_CHUNK];
        let mut pair_made = [NO_RANK; SHORT_CHUNK];
        for i in 0..n - 1 {
            (pair_rank[i], pair_made[i]) = self.rank_made(parts[i], parts[i + 1]);
        }
        let mut len = n;
        while len > 1 {
            let mut best = NO_RANK;
            let mut at = 0;
            for (i, &rank) in pair_rank[..len - 1].iter().enumerate() {
                if rank < best {
                    best = rank;
                    at = i;
                }
            }
            if best == NO_RANK {
                break;
            }
            parts[at] = pair_made[at];
            parts.copy_within(at + 2..len, at + 1);
            pair_rank.copy_within(at + 1..len - 1, at);
            pair_made.copy_within(at + 1..len - 1, at);
            len -= 1;
            if at > 0 {
                (pair_rank[at - 1], pair_made[at - 1]) = self.rank_made(parts[at - 1], parts[at]);
            }
            if at + 1 < len {
                (pair_rank[at], pair_made[at]) = self.rank_made(parts[at], parts[at + 1]);
            }
        }
        out.extend_from_slice(&parts[..len]);
    }

    fn encode_long(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let n = bytes.len();
        let mut symbol: Vec<u32> = bytes.iter().map(|&b| self.byte_id(b)).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = BinaryHeap::new();
        for i in 0..n - 1 {
            let rank = self.rank(symbol[i], symbol[i + 1]);
            if rank != NO_RANK {
                heap.push(Reverse((rank, i)));
            }
        }
        while let Some(Reverse((rank, pos))) = heap.pop() {
            // An entry is stale when its left symbol was merged away or either symbol changed;
            // ranks identify pairs, so an unchanged rank means an unchanged pair.
            if !alive[pos] || next[pos] == NONE {
                continue;
            }
            let right = next[pos];
            if self.rank(symbol[pos], symbol[right]) != rank {
                continue;
            }
            symbol[pos] = self.made(symbol[pos], symbol[right]);
            alive[right] = false;
            let after = next[right];
            next[pos] = after;
            if after != NONE {
                prev[after] = pos;
                let r = self.rank(symbol[pos], symbol[after]);
                if r != NO_RANK {
                    heap.push(Reverse((r, pos)));
                }
            }
            let before = prev[pos];
            if before != NONE {
                let r = self.rank(symbol[before], symbol[pos]);
                if r != NO_RANK {
                    heap.push(Reverse((r, before)));
                }
            }
        }
        let mut pos = 0;
        while pos != NONE {
            out.push(symbol[pos]);
            pos = next[pos];
        }
    }
}

#[cfg(test)]
pub(crate) mod naive {
    //! Encoding exactly as specified, with no cleverness: the reference for the fast paths.
    use super::Merger;

    pub fn encode(merger: &Merger, bytes: &[u8]) -> Vec<u32> {
        let mut parts: Vec<u32> = bytes.iter().map(|&b| merger.byte_id(b)).collect();
        loop {
            let best = (0..parts.len().saturating_sub(1))
                .map(|i| (merger.rank(parts[i], parts[i + 1]), i))
                .filter(|&(rank, _)| rank != super::NO_RANK)
                .min();
            let Some((_, i)) = best else { return parts };
            let made = merger.made(parts[i], parts[i + 1]);
            parts.splice(i..i + 2, [made]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identity_bytes() -> [u32; 256] {
        std::array::from_fn(|i| i as u32)
    }

    /// A merge table from random pairs over a small alphabet, each making the next id.
    fn merger_from(pairs: &[(u8, u8)]) -> Merger {
        let mut merger = Merger::new(identity_bytes());
        let mut ids: Vec<u32> = vec![u32::from(b'a'), u32::from(b'b'), u32::from(b'c')];
        for &(l, r) in pairs {
            let left = ids[l as usize % ids.len()];
            let right = ids[r as usize % ids.len()];
            let made = 256 + merger.ranks.len() as u32;
            if merger.push(left, right, made) {
                ids.push(made);
            }
        }
        merger
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn fast_paths_equal_naive(
            pairs in prop::collection::vec((any::<u8>(), any::<u8>()), 0..30),
            text in prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 0..200),
        ) {
            let merger = merger_from(&pairs);
            let expected = naive::encode(&merger, &text);
            if text.len() <= SHORT_CHUNK {
                let mut short = Vec::new();
                merger.encode_short(&text, &mut short);
                prop_assert_eq!(&short, &expected);
            }
            let mut dispatched = Vec::new();
            merger.encode(&text, &mut dispatched);
            prop_assert_eq!(&dispatched, &expected);
            if text.len() >= 2 {
                let mut long = Vec::new();
                merger.encode_long(&text, &mut long);
                prop_assert_eq!(&long, &expected);
            }
        }
    }

    #[test]
    fn megabyte_run_encodes() {
        let mut merger = Merger::new(identity_bytes());
        merger.push(97, 97, 256);
        merger.push(256, 256, 257);
        let mut out = Vec::new();
        merger.encode(&vec![b'a'; 1 << 20], &mut out);
        assert_eq!(out, vec![257; 1 << 18]);
    }
}
