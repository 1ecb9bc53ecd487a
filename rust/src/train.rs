//! The merge loop: exactly the naive algorithm of DESIGN.md section 3, made fast.
//!
//! All distinct chunks live in one arena of symbols linked as per-chunk doubly linked lists and
//! weighted by the chunk's count. Pair counts are updated incrementally around each merge; an
//! occurrence index (pair -> left positions, possibly stale) says where a pair may occur, and a
//! lazy max-heap (stale entries are re-checked against the live count) picks the best pair.
//! Each merge costs time proportional to the occurrences it touches, so one multi-megabyte chunk
//! trains in O(n log n) rather than in one full pass per merge.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Upper bound on merges (vocab size minus 256 minus special tokens).
    pub num_merges: usize,
    /// A pair is a candidate only with count >= this (0 behaves like 1).
    pub min_frequency: u64,
    /// Bytes of a merged token at most this.
    pub max_token_length: Option<usize>,
}

/// Marks "no neighbour" in the links and "merged away" in the symbols.
const NONE: u32 = u32::MAX;
/// How often (in merges) the progress hook is called.
pub const PROGRESS_EVERY: usize = 256;

type PairKey = u64;

fn key(left: u32, right: u32) -> PairKey {
    (u64::from(left) << 32) | u64::from(right)
}

fn unkey(pair: PairKey) -> (u32, u32) {
    ((pair >> 32) as u32, pair as u32)
}

struct Arena {
    symbol: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    /// Index into `weight` of the chunk each position belongs to.
    chunk: Vec<u32>,
    weight: Vec<u64>,
}

impl Arena {
    fn build<'a>(chunks: impl IntoIterator<Item = (&'a [u8], u64)>) -> Result<Arena> {
        let mut arena = Arena {
            symbol: Vec::new(),
            prev: Vec::new(),
            next: Vec::new(),
            chunk: Vec::new(),
            weight: Vec::new(),
        };
        for (bytes, count) in chunks {
            // Single bytes and unused chunks hold no pair: leaving them out changes no count.
            if bytes.len() < 2 || count == 0 {
                continue;
            }
            let start = arena.symbol.len();
            if start + bytes.len() >= NONE as usize || arena.weight.len() >= NONE as usize {
                return Err(Error::InvalidArgument(
                    "distinct chunks exceed 4 GiB; train on less data or use a splitting pattern"
                        .into(),
                ));
            }
            let chunk_index = arena.weight.len() as u32;
            arena.weight.push(count);
            for (i, &b) in bytes.iter().enumerate() {
                let pos = (start + i) as u32;
                arena.symbol.push(u32::from(b));
                arena.prev.push(if i == 0 { NONE } else { pos - 1 });
                arena
                    .next
                    .push(if i + 1 == bytes.len() { NONE } else { pos + 1 });
                arena.chunk.push(chunk_index);
            }
        }
        Ok(arena)
    }
}

/// Pair counts plus the positions where each pair may occur and a heap of (count, pair) entries.
/// Both live in one slot per pair, found through one hash lookup.
struct PairStats {
    slot_of: FxHashMap<PairKey, u32>,
    slots: Vec<PairSlot>,
    heap: BinaryHeap<(u64, Reverse<PairKey>)>,
}

#[derive(Default)]
struct PairSlot {
    count: u64,
    places: Vec<u32>,
}

impl PairStats {
    fn slot(&mut self, pair: PairKey) -> &mut PairSlot {
        let next = self.slots.len() as u32;
        let index = *self.slot_of.entry(pair).or_insert(next);
        if index == next {
            self.slots.push(PairSlot::default());
        }
        &mut self.slots[index as usize]
    }

    fn add(&mut self, pair: PairKey, weight: u64, place: u32) {
        let slot = self.slot(pair);
        slot.count += weight;
        slot.places.push(place);
    }

    fn remove(&mut self, pair: PairKey, weight: u64) {
        if let Some(&index) = self.slot_of.get(&pair) {
            let count = &mut self.slots[index as usize].count;
            // Counts are exact, so this never goes below zero; saturate rather than trust that.
            *count = count.saturating_sub(weight);
        }
    }

    fn live(&self, pair: PairKey) -> u64 {
        self.slot_of
            .get(&pair)
            .map_or(0, |&index| self.slots[index as usize].count)
    }

    /// Takes the merged pair's places out and zeroes its count (every occurrence gets replaced).
    fn take(&mut self, pair: PairKey) -> Vec<u32> {
        match self.slot_of.get(&pair) {
            Some(&index) => {
                let slot = &mut self.slots[index as usize];
                slot.count = 0;
                std::mem::take(&mut slot.places)
            }
            None => Vec::new(),
        }
    }
}

/// Runs the merge loop over weighted chunks and returns merges in rank order (merge k makes
/// id 256 + k). `progress(merges_done)` is called every `PROGRESS_EVERY` merges and at the end;
/// an error from it stops training and is returned.
pub fn train_merges<'a>(
    chunks: impl IntoIterator<Item = (&'a [u8], u64)>,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<(u32, u32)>> {
    let mut arena = Arena::build(chunks)?;
    let min_frequency = options.min_frequency.max(1);
    let max_len = options.max_token_length.unwrap_or(usize::MAX);
    let mut token_len: Vec<usize> = vec![1; 256];
    let fits = |token_len: &[usize], pair: PairKey| {
        let (l, r) = unkey(pair);
        token_len[l as usize] + token_len[r as usize] <= max_len
    };

    let mut stats = PairStats {
        slot_of: FxHashMap::default(),
        slots: Vec::new(),
        heap: BinaryHeap::new(),
    };
    for pos in 0..arena.symbol.len() {
        let next = arena.next[pos];
        if next != NONE {
            let weight = arena.weight[arena.chunk[pos] as usize];
            stats.add(
                key(arena.symbol[pos], arena.symbol[next as usize]),
                weight,
                pos as u32,
            );
        }
    }
    let mut initial: Vec<(u64, Reverse<PairKey>)> = stats
        .slot_of
        .iter()
        .filter(|(&pair, _)| fits(&token_len, pair))
        .map(|(&pair, &index)| (stats.slots[index as usize].count, Reverse(pair)))
        .collect();
    initial.sort_unstable();
    stats.heap = BinaryHeap::from(initial);

    let mut merges: Vec<(u32, u32)> = Vec::new();
    let mut touched: Vec<PairKey> = Vec::new();
    while merges.len() < options.num_merges {
        let Some((count, Reverse(pair))) = stats.heap.pop() else {
            break;
        };
        let live = stats.live(pair);
        if live != count {
            // Stale entry: the pair's count changed since it was pushed.
            if live > 0 {
                stats.heap.push((live, Reverse(pair)));
            }
            continue;
        }
        if count < min_frequency {
            break;
        }
        let (left, right) = unkey(pair);
        let new_id = u32::try_from(256 + merges.len())
            .map_err(|_| Error::InvalidArgument("too many merges for u32 ids".into()))?;
        merges.push((left, right));
        token_len.push(token_len[left as usize] + token_len[right as usize]);

        let mut places = stats.take(pair);
        // Arena order is chunk order then position order, so sorting gives the left-to-right
        // scan of every chunk that the naive algorithm does. Lists are often sorted already.
        if !places.is_sorted() {
            places.sort_unstable();
            places.dedup();
        }
        touched.clear();
        for &pos in &places {
            let p = pos as usize;
            if arena.symbol[p] != left {
                continue;
            }
            let q = arena.next[p];
            if q == NONE || arena.symbol[q as usize] != right {
                continue;
            }
            let weight = arena.weight[arena.chunk[p] as usize];
            let before = arena.prev[p];
            if before != NONE {
                let before_symbol = arena.symbol[before as usize];
                stats.remove(key(before_symbol, left), weight);
                let created = key(before_symbol, new_id);
                stats.add(created, weight, before);
                touched.push(created);
            }
            let after = arena.next[q as usize];
            if after != NONE {
                let after_symbol = arena.symbol[after as usize];
                stats.remove(key(right, after_symbol), weight);
                let created = key(new_id, after_symbol);
                stats.add(created, weight, pos);
                touched.push(created);
                arena.prev[after as usize] = pos;
            }
            arena.symbol[p] = new_id;
            arena.next[p] = after;
            arena.symbol[q as usize] = NONE;
        }
        touched.sort_unstable();
        touched.dedup();
        for &created in &touched {
            let live = stats.live(created);
            if live > 0 && fits(&token_len, created) {
                stats.heap.push((live, Reverse(created)));
            }
        }
        if merges.len() % PROGRESS_EVERY == 0 {
            progress(merges.len())?;
        }
    }
    progress(merges.len())?;
    Ok(merges)
}

#[cfg(test)]
pub(crate) mod naive {
    //! The algorithm of DESIGN.md section 3 written as plainly as possible: the reference that
    //! the fast trainer must match merge for merge.

    pub fn train(
        chunks: &[(Vec<u8>, u64)],
        num_merges: usize,
        min_frequency: u64,
        max_len: Option<usize>,
    ) -> Vec<(u32, u32)> {
        let mut seqs: Vec<(Vec<u32>, u64)> = chunks
            .iter()
            .map(|(b, n)| (b.iter().map(|&x| u32::from(x)).collect(), *n))
            .collect();
        let mut lengths: Vec<usize> = vec![1; 256];
        let mut merges = Vec::new();
        while merges.len() < num_merges {
            let mut counts: std::collections::BTreeMap<(u32, u32), u64> = Default::default();
            for (seq, n) in &seqs {
                for w in seq.windows(2) {
                    *counts.entry((w[0], w[1])).or_insert(0) += n;
                }
            }
            let mut best: Option<((u32, u32), u64)> = None;
            for (&pair, &count) in &counts {
                let fits = max_len
                    .is_none_or(|m| lengths[pair.0 as usize] + lengths[pair.1 as usize] <= m);
                // BTreeMap iterates pairs in increasing order, so strict > keeps the smallest on ties.
                if fits && count > 0 && best.is_none_or(|(_, c)| count > c) {
                    best = Some((pair, count));
                }
            }
            let Some((pair, count)) = best else { break };
            if count < min_frequency.max(1) {
                break;
            }
            let new_id = 256 + merges.len() as u32;
            merges.push(pair);
            lengths.push(lengths[pair.0 as usize] + lengths[pair.1 as usize]);
            for (seq, _) in &mut seqs {
                let mut out = Vec::with_capacity(seq.len());
                let mut i = 0;
                while i < seq.len() {
                    if i + 1 < seq.len() && (seq[i], seq[i + 1]) == pair {
                        out.push(new_id);
                        i += 2;
                    } else {
                        out.push(seq[i]);
                        i += 1;
                    }
                }
                *seq = out;
            }
        }
        merges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fast(
        chunks: &[(Vec<u8>, u64)],
        n: usize,
        min_f: u64,
        max_len: Option<usize>,
    ) -> Vec<(u32, u32)> {
        let options = TrainOptions {
            num_merges: n,
            min_frequency: min_f,
            max_token_length: max_len,
        };
        train_merges(
            chunks.iter().map(|(b, c)| (b.as_slice(), *c)),
            &options,
            &mut |_| Ok(()),
        )
        .unwrap()
    }

    #[test]
    fn overlapping_runs_count_twice_and_merge_left_to_right() {
        let chunks = vec![(b"aaa".to_vec(), 1), (b"aaaa".to_vec(), 1)];
        assert_eq!(
            fast(&chunks, 10, 1, None),
            naive::train(&chunks, 10, 1, None)
        );
        // (a,a) occurs 2 + 3 times; after it "Xa" and "XX".
        assert_eq!(fast(&chunks, 10, 1, None)[0], (97, 97));
    }

    #[test]
    fn ties_go_to_the_smallest_pair_and_min_frequency_stops() {
        let chunks = vec![
            (b"ba".to_vec(), 2),
            (b"ab".to_vec(), 2),
            (b"cd".to_vec(), 1),
        ];
        assert_eq!(
            fast(&chunks, 10, 1, None),
            vec![(97, 98), (98, 97), (99, 100)]
        );
        assert_eq!(fast(&chunks, 10, 2, None), vec![(97, 98), (98, 97)]);
    }

    #[test]
    fn progress_error_stops_training() {
        let chunks: Vec<(Vec<u8>, u64)> = vec![(b"abcdefgh".repeat(100), 1)];
        let options = TrainOptions {
            num_merges: 1000,
            min_frequency: 1,
            max_token_length: None,
        };
        let result = train_merges(
            chunks.iter().map(|(b, c)| (b.as_slice(), *c)),
            &options,
            &mut |_| Err(Error::Interrupted),
        );
        assert!(matches!(result, Err(Error::Interrupted)));
    }

    fn corpus() -> impl Strategy<Value = Vec<(Vec<u8>, u64)>> {
        let byte = prop::sample::select(vec![b'a', b'b', b'c', b' ', 0xE4, 0xB8]);
        let word = prop_oneof![
            prop::collection::vec(byte, 1..12),
            // long runs of one byte: the overlapping-pair cases
            (prop::sample::select(vec![b'a', b' ']), 2usize..60).prop_map(|(b, n)| vec![b; n]),
        ];
        prop::collection::vec((word, 1u64..5), 1..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn matches_the_naive_trainer(
            chunks in corpus(),
            n in 1usize..40,
            min_f in 0u64..4,
            max_len in prop::option::of(2usize..6),
        ) {
            prop_assert_eq!(fast(&chunks, n, min_f, max_len), naive::train(&chunks, n, min_f, max_len));
        }
    }
}
