//! The merge loop: exactly the naive algorithm of DESIGN.md section 3, made fast.
//!
//! All distinct chunks live in one arena of symbols linked as per-chunk doubly linked lists and
//! weighted by the chunk's count. Pair counts are updated incrementally around each merge; an
//! occurrence index (pair -> left positions, possibly stale) says where a pair may occur, and a
//! lazy max-queue (stale entries are re-checked against the live count) picks the best pair.
//! Each merge costs time proportional to the occurrences it touches, so one multi-megabyte chunk
//! trains in O(n log n) rather than in one full pass per merge.
//!
//! Where the time goes, and what was tried (12 MB of mixed text and 1 MB of one random-letter
//! word, the pathological input, vocab 8192):
//! - Visiting the occurrences is memory-bound (they are scattered over tens of MB): nodes are
//!   one 16-byte struct each, and the lines of the next places and their neighbours are
//!   prefetched. The node array is asked for huge pages (`memory_hints`).
//! - The neighbour-pair updates go to a small per-merge table first (`MergeDelta`), then one
//!   probe per distinct pair into the pair index (`pair_index`), prefetched ahead.
//! - New pairs with small counts are queued unverified, outside the index (`train_merges`):
//!   on one random word most never get picked, and their inserts were a third of the updates.
//! - Merges with many occurrences are cut into ranges merged by several threads, each into its
//!   own `MergeDelta`; the results are combined in position order, so the output never depends
//!   on the thread count. Cuts fall at chunk starts or, inside one long chunk, after a node that
//!   the merge cannot touch (`Arena::cut_before`). The loop runs on a pool thread so that these
//!   hand-offs stay cheap.
//! - Rare pairs wait in per-count buckets (`PairQueue`); one binary heap of every pair ever seen
//!   made each pop walk ~20 cache-missing levels.
//! - Not chosen: per-word symbol vectors re-scanned per merge (what most trainers do) touch whole
//!   words for one occurrence. Measured and dropped: each pair's place list inside the hash
//!   entry (one miss less per update, a bigger table; no gain on one long chunk, 250 KB of
//!   random letters, in A/B runs); compacting the place buffer (`pair_index`). Not tried: a pair
//!   id kept in every node (would save the hash probe of a removal, but grows nodes to 20
//!   bytes: more misses on the hot path).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::memory_hints::{prefetch, with_huge_pages};
use crate::pair_index::{PairIndex, PairKey};
use crate::threads::{in_place_scope, with_threads};

#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Upper bound on merges (vocab size minus 256 minus special tokens).
    pub num_merges: usize,
    /// A pair is a candidate only with count >= this (0 behaves like 1).
    pub min_frequency: u64,
    /// Bytes of a merged token at most this.
    pub max_token_length: Option<usize>,
    /// Threads for the large merges (0 = rayon's global pool). Results do not depend on it.
    pub num_threads: usize,
}

/// Marks "no neighbour" in the links and "merged away" in the symbols.
const NONE: u32 = u32::MAX;
/// How often (in merges) the progress hook is called.
pub const PROGRESS_EVERY: usize = 256;

fn key(left: u32, right: u32) -> PairKey {
    (u64::from(left) << 32) | u64::from(right)
}

fn unkey(pair: PairKey) -> (u32, u32) {
    ((pair >> 32) as u32, pair as u32)
}

/// One symbol of a chunk, with its links and its chunk's weight. Kept together (16 bytes)
/// because the merge loop visits positions scattered over the whole arena and reads every field
/// of each: one cache miss per position instead of one per field (separate arrays for symbol,
/// links and a chunk index into a weight table made those loads the top cost).
#[derive(Clone, Copy)]
struct Node {
    symbol: u32,
    prev: u32,
    next: u32,
    /// The chunk's count, or `HUGE_WEIGHT` when it does not fit: then `Arena::huge` has it.
    weight: u32,
}

/// Marks a count of u32::MAX or more (a chunk seen over 4 billion times); such positions are few.
const HUGE_WEIGHT: u32 = u32::MAX;

struct Arena {
    nodes: Vec<Node>,
    /// First position of every chunk, increasing: where the arena may be cut between threads.
    chunk_starts: Vec<u32>,
    /// Position -> count for the positions of chunks whose count does not fit in u32.
    huge: FxHashMap<u32, u64>,
}

impl Arena {
    /// Lays the chunks out one after another; `parts` threads fill disjoint ranges of chunks.
    fn build<'a>(
        chunks: impl IntoIterator<Item = (&'a [u8], u64)>,
        parts: usize,
        num_threads: usize,
    ) -> Result<Arena> {
        // Single bytes and unused chunks hold no pair: leaving them out changes no count.
        let chunks: Vec<(&[u8], u64)> = chunks
            .into_iter()
            .filter(|(bytes, count)| bytes.len() >= 2 && *count > 0)
            .collect();
        let mut chunk_starts = Vec::with_capacity(chunks.len());
        let mut huge = FxHashMap::default();
        let mut total = 0usize;
        for (bytes, count) in &chunks {
            if total + bytes.len() >= NONE as usize {
                return Err(Error::InvalidArgument(
                    "distinct chunks exceed 4 GiB; train on less data or use a splitting pattern"
                        .into(),
                ));
            }
            let start = total as u32;
            chunk_starts.push(start);
            if small_weight(*count).is_none() {
                huge.extend((0..bytes.len() as u32).map(|i| (start + i, *count)));
            }
            total += bytes.len();
        }
        // Filled in place, part by part: a blank fill first would write every node twice.
        let mut nodes: Vec<Node> = with_huge_pages(total);
        let parts = parts.clamp(1, chunks.len().max(1));
        let mut jobs = Vec::with_capacity(parts);
        let mut rest = &mut nodes.spare_capacity_mut()[..total];
        for part in 0..parts {
            let (first, end) = (
                part * chunks.len() / parts,
                (part + 1) * chunks.len() / parts,
            );
            let limit = chunk_starts.get(end).map_or(total, |&start| start as usize);
            let base = chunk_starts
                .get(first)
                .map_or(total, |&start| start as usize);
            let (mine, others) = std::mem::take(&mut rest).split_at_mut(limit - base);
            rest = others;
            jobs.push((mine, base as u32, &chunks[first..end]));
        }
        with_threads(num_threads, || {
            jobs.into_par_iter().for_each(|(nodes, base, chunks)| {
                let mut pos = base;
                let mut out = nodes.iter_mut();
                for (bytes, count) in chunks {
                    let weight = small_weight(*count).unwrap_or(HUGE_WEIGHT);
                    let last = bytes.len() - 1;
                    for (i, (&b, node)) in bytes.iter().zip(out.by_ref()).enumerate() {
                        node.write(Node {
                            symbol: u32::from(b),
                            prev: if i == 0 { NONE } else { pos - 1 },
                            next: if i == last { NONE } else { pos + 1 },
                            weight,
                        });
                        pos += 1;
                    }
                }
            })
        })?;
        // SAFETY: the parts cover positions 0..total exactly (consecutive chunk ranges, each
        // chunk's bytes.len() nodes), and every node of every part was written above.
        unsafe { nodes.set_len(total) };
        Ok(Arena {
            nodes,
            chunk_starts,
            huge,
        })
    }

    /// The start of the chunk holding position `pos`.
    fn chunk_start(&self, pos: u32) -> u32 {
        let after = self.chunk_starts.partition_point(|&start| start <= pos);
        self.chunk_starts[after - 1]
    }
}

/// A count as stored in a node, or None when it needs the side table.
fn small_weight(count: u64) -> Option<u32> {
    u32::try_from(count)
        .ok()
        .filter(|&small| small != HUGE_WEIGHT)
}

/// The count of the chunk that position `pos` (holding `node`) belongs to.
fn weight_of(huge: &FxHashMap<u32, u64>, pos: u32, node: &Node) -> u64 {
    if node.weight == HUGE_WEIGHT {
        huge[&pos]
    } else {
        u64::from(node.weight)
    }
}

/// Merges every live occurrence of (`left`, `right`) listed in `places` into `new_id` and records
/// the neighbour pairs' changes in `delta`. `places` is sorted and lies in `nodes`, the arena
/// from position `base` on up to a cut (see `Arena::cut_before`): every node a merge here reads or
/// writes is inside `nodes`, except the live node just before `base` when the range starts inside
/// a chunk, whose symbol is `boundary` (read only: no merge changes it).
#[allow(clippy::too_many_arguments)]
fn merge_places(
    nodes: &mut [Node],
    base: u32,
    boundary: u32,
    huge: &FxHashMap<u32, u64>,
    places: &[u32],
    (left, right): (u32, u32),
    new_id: u32,
    delta: &mut MergeDelta,
) {
    let at = |pos: u32| (pos - base) as usize;
    for (i, &pos) in places.iter().enumerate() {
        if let Some(&ahead) = places.get(i + PREFETCH_AHEAD) {
            // The node, and the lines of its usual neighbours (prev, next and the one after
            // next are read too, and sit a position or two away until merges thin the chunk).
            let ahead = at(ahead);
            let nodes_ptr = nodes.as_ptr();
            prefetch(nodes_ptr.wrapping_add(ahead.wrapping_sub(1)));
            prefetch(nodes_ptr.wrapping_add(ahead));
            prefetch(nodes_ptr.wrapping_add(ahead + 2));
        }
        let node = nodes[at(pos)];
        if node.symbol != left || node.next == NONE {
            continue;
        }
        let right_node = nodes[at(node.next)];
        if right_node.symbol != right {
            continue;
        }
        let weight = weight_of(huge, pos, &node);
        if node.prev != NONE {
            let before_symbol = if node.prev >= base {
                nodes[at(node.prev)].symbol
            } else {
                boundary
            };
            delta.remove(key(before_symbol, left), weight);
            delta.add(key(before_symbol, new_id), weight, node.prev);
        }
        let after = right_node.next;
        if after != NONE {
            let after_node = &mut nodes[at(after)];
            delta.remove(key(right, after_node.symbol), weight);
            delta.add(key(new_id, after_node.symbol), weight, pos);
            after_node.prev = pos;
        }
        let merged = &mut nodes[at(pos)];
        merged.symbol = new_id;
        merged.next = after;
        nodes[at(node.next)].symbol = NONE;
    }
}

/// Merges with at least this many places are split between threads; below it the hand-off
/// costs more than it saves.
const PARALLEL_MIN_PLACES: usize = 512;
/// How far back from a desired cut `Arena::cut_before` looks for a node to cut after.
const CUT_SEARCH: u32 = 64;

impl Arena {
    /// Where to cut the arena, at or before position `target`, so that merging (`left`, `right`)
    /// on either side never touches the other: returns the first position of the right-hand side
    /// and the symbol of the live node just before it (`NONE` at a chunk start).
    ///
    /// A cut right after a live node x whose symbol is neither `left` nor `right` is safe inside a
    /// chunk: x is never merged, so its symbol (all the right side reads of it) stays put; the
    /// left side's merges end at or before x (x is live, so links from the left stop at it); the
    /// right side's reach back no further than x. Any chunk start is a safe cut too. One long
    /// chunk (a pathological input) could not be split at all before in-chunk cuts.
    fn cut_before(&self, target: u32, (left, right): (u32, u32)) -> (u32, u32) {
        let chunk = self.chunk_start(target);
        let lowest = target.saturating_sub(CUT_SEARCH).max(chunk);
        for x in (lowest..target).rev() {
            let symbol = self.nodes[x as usize].symbol;
            if symbol != NONE && symbol != left && symbol != right {
                return (x + 1, symbol);
            }
        }
        (chunk, NONE)
    }

    /// The weighted number of live occurrences of (`left`, `right`) at `places` (left positions,
    /// increasing; others are skipped).
    fn count_live(&self, places: &[u32], (left, right): (u32, u32)) -> u64 {
        let mut count = 0;
        for (i, &pos) in places.iter().enumerate() {
            if let Some(&ahead) = places.get(i + PREFETCH_AHEAD) {
                prefetch(&self.nodes[ahead as usize]);
            }
            let node = &self.nodes[pos as usize];
            if node.symbol == left
                && node.next != NONE
                && self.nodes[node.next as usize].symbol == right
            {
                count += weight_of(&self.huge, pos, node);
            }
        }
        count
    }

    /// `merge_places` over all of `places`, cut into up to `deltas.len()` ranges that threads
    /// merge at once; afterwards `deltas[0]` holds all the changes, with each pair's places still
    /// in increasing order.
    fn merge_all(
        &mut self,
        places: &[u32],
        pair: (u32, u32),
        new_id: u32,
        deltas: &mut [MergeDelta],
        num_threads: usize,
    ) -> Result<()> {
        let parts = if places.len() >= PARALLEL_MIN_PLACES {
            deltas.len()
        } else {
            1
        };
        if parts <= 1 {
            merge_places(
                &mut self.nodes,
                0,
                NONE,
                &self.huge,
                places,
                pair,
                new_id,
                &mut deltas[0],
            );
            return Ok(());
        }
        // Cuts: (index into places, first arena position, symbol before it).
        let mut cuts: Vec<(usize, u32, u32)> = vec![(0, 0, NONE)];
        for part in 1..parts {
            let (start, boundary) = self.cut_before(places[part * places.len() / parts], pair);
            if start > cuts[cuts.len() - 1].1 {
                cuts.push((places.partition_point(|&p| p < start), start, boundary));
            }
        }
        let total = self.nodes.len() as u32;
        let mut jobs = Vec::with_capacity(cuts.len());
        let mut rest_nodes: &mut [Node] = &mut self.nodes;
        let mut rest_deltas: &mut [MergeDelta] = deltas;
        for (i, &(first, base, boundary)) in cuts.iter().enumerate() {
            let (end, limit) = cuts
                .get(i + 1)
                .map_or((places.len(), total), |&(end, limit, _)| (end, limit));
            let (nodes, others) =
                std::mem::take(&mut rest_nodes).split_at_mut((limit - base) as usize);
            rest_nodes = others;
            let (delta, others) = std::mem::take(&mut rest_deltas)
                .split_first_mut()
                .expect("one delta per part");
            rest_deltas = others;
            jobs.push((nodes, base, boundary, &places[first..end], delta));
        }
        let huge = &self.huge;
        with_threads(num_threads, || {
            jobs.into_par_iter()
                .for_each(|(nodes, base, boundary, places, delta)| {
                    merge_places(nodes, base, boundary, huge, places, pair, new_id, delta)
                })
        })?;
        let (first, others) = deltas.split_first_mut().expect("at least one delta");
        for other in &mut others[..cuts.len() - 1] {
            first.absorb(other);
        }
        Ok(())
    }
}

/// How many places ahead of the one being merged are prefetched.
const PREFETCH_AHEAD: usize = 16;

/// The pair index and the queue of (count, pair) entries that picks each merge.
struct PairStats {
    index: PairIndex,
    queue: PairQueue,
}

impl PairStats {
    /// Counts every adjacent pair of the freshly built arena. Before any merge all symbols are
    /// bytes, so a 64K-entry table indexed by the two bytes replaces hashing 2 per position.
    /// `parts` threads count disjoint position ranges; their lists are joined in range order, so
    /// every place list is sorted.
    fn initial(arena: &Arena, parts: usize, num_threads: usize) -> Result<PairStats> {
        const BYTE_PAIRS: usize = 1 << 16;
        let nodes = &arena.nodes;
        let parts = parts.max(1);
        let byte_pair =
            |node: &Node| ((node.symbol as usize) << 8) | nodes[node.next as usize].symbol as usize;
        // Per part: the weighted count of each byte pair, and its places grouped by byte pair
        // (a counting sort: one pass counts, one pass writes each place where it belongs).
        // Growing 64K vectors instead cost reallocations and two more copies of every place.
        let partials: Vec<(Vec<u64>, Vec<usize>, Vec<u32>)> = with_threads(num_threads, || {
            (0..parts)
                .into_par_iter()
                .map(|part| {
                    let range = part * nodes.len() / parts..(part + 1) * nodes.len() / parts;
                    let mut counts = vec![0u64; BYTE_PAIRS];
                    let mut starts = vec![0usize; BYTE_PAIRS + 1];
                    for pos in range.clone() {
                        let node = &nodes[pos];
                        if node.next != NONE {
                            let index = byte_pair(node);
                            counts[index] += weight_of(&arena.huge, pos as u32, node);
                            starts[index + 1] += 1;
                        }
                    }
                    for index in 0..BYTE_PAIRS {
                        starts[index + 1] += starts[index];
                    }
                    let mut places = vec![0u32; starts[BYTE_PAIRS]];
                    let mut fill = starts.clone();
                    for pos in range {
                        let node = &nodes[pos];
                        if node.next != NONE {
                            let index = byte_pair(node);
                            places[fill[index]] = pos as u32;
                            fill[index] += 1;
                        }
                    }
                    (counts, starts, places)
                })
                .collect()
        })?;
        // Live pairs grow to a fraction of the positions; sizing for that up front saves most
        // rehashes.
        let mut index = PairIndex::with_capacity(nodes.len() / 32);
        let mut joined = Vec::new();
        for pair_bytes in 0..BYTE_PAIRS {
            let count: u64 = partials.iter().map(|(counts, ..)| counts[pair_bytes]).sum();
            if count == 0 {
                continue;
            }
            // Parts cover increasing position ranges, so joining them in order keeps it sorted.
            joined.clear();
            for (_, starts, places) in &partials {
                joined.extend_from_slice(&places[starts[pair_bytes]..starts[pair_bytes + 1]]);
            }
            let pair = key((pair_bytes >> 8) as u32, (pair_bytes & 0xFF) as u32);
            let places = index.push_places(&joined)?;
            index.insert(pair, count, places);
        }
        Ok(PairStats {
            index,
            queue: PairQueue::default(),
        })
    }
}

/// Counts from which a pair waits in the binary heap; below, in a bucket per count.
const LOW_COUNTS: usize = 1024;

/// A queued pair: `unverified` is `VERIFIED` for a pair in the pair index, or else the places
/// block of a new pair queued with its count at creation, not yet in the index (see
/// `train_merges`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Candidate {
    pair: PairKey,
    unverified: u32,
}

const VERIFIED: u32 = u32::MAX;

/// A max-queue of (count, candidate) entries, ties going to the smallest pair; entries may be
/// stale (the caller re-checks the live count and pushes again). Most pairs ever seen are rare,
/// and keeping them all in one binary heap made every pop walk ~20 cache-missing levels: rare
/// pairs go to per-count buckets instead (O(1) push), and a bucket becomes a small min-heap by
/// pair only when it is the highest one left. Order does not rely on counts only falling (they
/// do in BPE): a push above the bucket being drained sends that bucket back first.
#[derive(Default)]
struct PairQueue {
    heap: BinaryHeap<(u64, Reverse<Candidate>)>,
    low: Vec<Vec<Candidate>>,
    /// No bucket above this index holds anything.
    low_top: usize,
    /// The bucket being drained, as a min-heap by pair, and its count (0 = none).
    current: BinaryHeap<Reverse<Candidate>>,
    current_count: u64,
}

impl PairQueue {
    fn push(&mut self, count: u64, candidate: Candidate) {
        if count == 0 {
            return;
        }
        if count >= LOW_COUNTS as u64 {
            self.heap.push((count, Reverse(candidate)));
        } else if count == self.current_count {
            self.current.push(Reverse(candidate));
        } else {
            let count = count as usize;
            if self.low.is_empty() {
                self.low.resize_with(LOW_COUNTS, Vec::new);
            }
            self.low[count].push(candidate);
            self.low_top = self.low_top.max(count);
        }
    }

    fn pop(&mut self) -> Option<(u64, Candidate)> {
        if let Some((count, Reverse(candidate))) = self.heap.pop() {
            return Some((count, candidate));
        }
        loop {
            if self.low_top as u64 > self.current_count && !self.current.is_empty() {
                // Something was pushed above the bucket being drained: put the bucket back.
                let count = self.current_count as usize;
                self.low[count].extend(self.current.drain().map(|Reverse(entry)| entry));
                self.current_count = 0;
            }
            if let Some(Reverse(candidate)) = self.current.pop() {
                return Some((self.current_count, candidate));
            }
            while self.low_top > 0 && self.low[self.low_top].is_empty() {
                self.low_top -= 1;
            }
            if self.low_top == 0 {
                self.current_count = 0;
                return None;
            }
            let bucket = std::mem::take(&mut self.low[self.low_top]);
            self.current = bucket.into_iter().map(Reverse).collect();
            self.current_count = self.low_top as u64;
            self.low_top -= 1;
        }
    }
}

/// The count changes and new places of the pairs around one merge, gathered in a small table
/// first and then applied with one lookup per distinct pair in the big one. A frequent merge
/// touches the same few neighbour pairs thousands of times; one big-table lookup per occurrence
/// (a cache miss each, the table holds every pair ever seen) cost more than the merge itself.
#[derive(Default)]
struct MergeDelta {
    index_of: FxHashMap<PairKey, u32>,
    pairs: Vec<PairKey>,
    added: Vec<u64>,
    removed: Vec<u64>,
    /// Place lists of the pairs in `pairs`; inner vectors keep their capacity between merges.
    places: Vec<Vec<u32>>,
}

impl MergeDelta {
    fn entry(&mut self, pair: PairKey) -> usize {
        let next = self.pairs.len() as u32;
        let index = *self.index_of.entry(pair).or_insert(next) as usize;
        if index == self.pairs.len() {
            self.pairs.push(pair);
            self.added.push(0);
            self.removed.push(0);
            if self.places.len() <= index {
                self.places.push(Vec::new());
            }
        }
        index
    }

    fn add(&mut self, pair: PairKey, weight: u64, place: u32) {
        let index = self.entry(pair);
        self.added[index] += weight;
        self.places[index].push(place);
    }

    fn remove(&mut self, pair: PairKey, weight: u64) {
        let index = self.entry(pair);
        self.removed[index] += weight;
    }

    /// Moves `other`'s changes into this one; `other`'s places come after ours.
    fn absorb(&mut self, other: &mut MergeDelta) {
        for (index, &pair) in other.pairs.iter().enumerate() {
            let mine = self.entry(pair);
            self.added[mine] += other.added[index];
            self.removed[mine] += other.removed[index];
            self.places[mine].extend_from_slice(&other.places[index]);
            other.places[index].clear();
        }
        other.index_of.clear();
        other.pairs.clear();
        other.added.clear();
        other.removed.clear();
    }

    /// Applies the changes. Pairs that only lost occurrences are updated in `index`. The pairs
    /// this merge created all hold its new token, so none is in the index yet; each one that
    /// `wanted` accepts gets its places recorded and goes to `created` with its count: in the
    /// index when that count is high, else as an unverified candidate (see `train_merges`).
    fn apply(
        &mut self,
        index: &mut PairIndex,
        wanted: impl Fn(PairKey, u64) -> bool,
        created: &mut Vec<(u64, Candidate)>,
    ) -> Result<()> {
        let new_count = |at: usize| self.added[at].saturating_sub(self.removed[at]);
        for (at, &pair) in self.pairs.iter().enumerate() {
            // The index is far bigger than the caches and the pairs it will be asked about are
            // known in advance: start loading their slots a few pairs ahead so the misses overlap.
            let ahead = at + APPLY_PREFETCH_AHEAD;
            if ahead < self.pairs.len()
                && (self.added[ahead] == 0 || new_count(ahead) >= VERIFY_FROM)
            {
                index.prefetch(self.pairs[ahead]);
            }
            let places = &self.places[at];
            if self.added[at] > 0 {
                let count = new_count(at);
                if count > 0 && wanted(pair, count) {
                    let handle = index.push_places(places)?;
                    let unverified = if count >= VERIFY_FROM {
                        index.insert(pair, count, handle);
                        VERIFIED
                    } else {
                        handle
                    };
                    created.push((count, Candidate { pair, unverified }));
                }
            } else {
                index.subtract(pair, self.removed[at]);
            }
        }
        for places in &mut self.places[..self.pairs.len()] {
            places.clear();
        }
        self.index_of.clear();
        self.pairs.clear();
        self.added.clear();
        self.removed.clear();
        Ok(())
    }
}

/// How many pairs ahead `MergeDelta::apply` prefetches index slots.
const APPLY_PREFETCH_AHEAD: usize = 8;
/// New pairs with at least this count go into the index at once; rarer ones are queued
/// unverified. Counting a candidate again costs a visit per place, an index insert one miss: on
/// one long random word most new pairs have a count of 1 to 3 and are never picked (skipping
/// their inserts took a third off the index updates), while those that reach the top of the
/// queue with a count in the tens cost more to count again than to insert (measured 8 to 32).
const VERIFY_FROM: u64 = 16;

/// Runs the merge loop over weighted chunks and returns merges in rank order (merge k makes
/// id 256 + k). `progress(merges_done)` is called every `PROGRESS_EVERY` merges and at the end;
/// an error from it stops training (at the next call, at most `PROGRESS_EVERY` merges later) and
/// is returned.
///
/// Which pair to merge: a queue of (count, pair) candidates, where a count may be stale (higher
/// than the live one: counts only fall) and the pop is checked against the live count; a stale
/// pop is pushed back with its live count. A pair's count only falls after the merge that creates
/// it (later merges make other tokens, so nothing adds to it), so a new pair can wait in the
/// queue with its count at creation as an upper bound, outside the pair index, and be counted
/// again (from its places) only if it reaches the top; most rare pairs never do.
pub fn train_merges<'a>(
    chunks: impl IntoIterator<Item = (&'a [u8], u64)>,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<(u32, u32)>> {
    enum Message {
        Progress(usize),
        Done(Result<Vec<(u32, u32)>>),
    }
    let chunks: Vec<(&[u8], u64)> = chunks.into_iter().collect();
    let (to_caller, from_loop) = std::sync::mpsc::channel();
    let stop = AtomicBool::new(false);
    // The loop runs on a thread of the training pool, so a split merge hands work to the other
    // threads from inside the pool; handed from outside, each split cost a thread wake-up, more
    // than a merge of a thousand places. The calling thread runs the progress hook meanwhile:
    // it may be a Python callback that must see Ctrl-C, which only the main thread receives.
    in_place_scope(options.num_threads, |scope, _| {
        let (stop, options) = (&stop, options);
        scope.spawn(move |_| {
            let mut report = |done: usize| {
                // A closed channel means the caller is gone; there is no one left to report to.
                let _ = to_caller.send(Message::Progress(done));
                if stop.load(Ordering::Relaxed) {
                    Err(Error::Interrupted)
                } else {
                    Ok(())
                }
            };
            let outcome = merge_loop(chunks, options, &mut report);
            let _ = to_caller.send(Message::Done(outcome));
        });
        let mut hook_error = None;
        let mut outcome = None;
        for message in from_loop {
            match message {
                Message::Progress(done) if hook_error.is_none() => {
                    if let Err(error) = progress(done) {
                        hook_error = Some(error);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Message::Progress(_) => {}
                Message::Done(result) => outcome = Some(result),
            }
        }
        match (hook_error, outcome) {
            (Some(error), _) => Err(error),
            (None, Some(result)) => result,
            (None, None) => Err(Error::InvalidArgument(
                "the training thread ended without a result".into(),
            )),
        }
    })?
}

fn merge_loop(
    chunks: Vec<(&[u8], u64)>,
    options: &TrainOptions,
    progress: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<(u32, u32)>> {
    let parts = match options.num_threads {
        0 => crate::threads::default_threads(),
        n => n,
    }
    .max(1);
    let mut arena = Arena::build(chunks, parts, options.num_threads)?;
    let min_frequency = options.min_frequency.max(1);
    let max_len = options.max_token_length.unwrap_or(usize::MAX);
    let mut token_len: Vec<usize> = vec![1; 256];
    let fits = |token_len: &[usize], pair: PairKey| {
        let (l, r) = unkey(pair);
        token_len[l as usize] + token_len[r as usize] <= max_len
    };

    let mut stats = PairStats::initial(&arena, parts, options.num_threads)?;
    for (pair, count) in stats.index.pairs() {
        if fits(&token_len, pair) {
            let verified = Candidate {
                pair,
                unverified: VERIFIED,
            };
            stats.queue.push(count, verified);
        }
    }

    let mut merges: Vec<(u32, u32)> = Vec::new();
    let mut created: Vec<(u64, Candidate)> = Vec::new();
    let mut places: Vec<u32> = Vec::new();
    let mut deltas: Vec<MergeDelta> = (0..parts).map(|_| MergeDelta::default()).collect();
    while merges.len() < options.num_merges {
        let Some((count, candidate)) = stats.queue.pop() else {
            break;
        };
        let pair = candidate.pair;
        places.clear();
        let live = if candidate.unverified == VERIFIED {
            stats.index.count(pair)
        } else {
            // A pair created by an earlier merge, queued with its count then and kept out of the
            // index (see `MergeDelta::apply`): count what is left of it now.
            stats.index.places_of(candidate.unverified, &mut places);
            let live = arena.count_live(&places, unkey(pair));
            if live > 0 && live != count {
                stats.index.insert(pair, live, candidate.unverified);
            }
            live
        };
        if live != count {
            // Stale entry: the pair's count fell since it was pushed.
            if live > 0 {
                let verified = Candidate {
                    pair,
                    unverified: VERIFIED,
                };
                stats.queue.push(live, verified);
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

        if candidate.unverified == VERIFIED {
            stats.index.take(pair, &mut places);
        }
        // Arena order is chunk order then position order, so sorting gives the left-to-right
        // scan of every chunk that the naive algorithm does. A list is a few sorted runs (the
        // initial count, then the merges that made its left or right token), which the stable
        // sort merges in about linear time where an unstable sort starts over.
        if !places.is_sorted() {
            places.sort();
            places.dedup();
        }
        arena.merge_all(
            &places,
            (left, right),
            new_id,
            &mut deltas,
            options.num_threads,
        )?;
        // A pair's count only falls after the merge that creates it (later merges make other
        // tokens), so one below min_frequency never becomes a candidate.
        let wanted = |pair, count| count >= min_frequency && fits(&token_len, pair);
        deltas[0].apply(&mut stats.index, wanted, &mut created)?;
        for (count, candidate) in created.drain(..) {
            stats.queue.push(count, candidate);
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
        fast_with_threads(chunks, n, min_f, max_len, 1)
    }

    fn fast_with_threads(
        chunks: &[(Vec<u8>, u64)],
        n: usize,
        min_f: u64,
        max_len: Option<usize>,
        threads: usize,
    ) -> Vec<(u32, u32)> {
        let options = TrainOptions {
            num_merges: n,
            min_frequency: min_f,
            max_token_length: max_len,
            num_threads: threads,
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
            num_threads: 1,
        };
        let result = train_merges(
            chunks.iter().map(|(b, c)| (b.as_slice(), *c)),
            &options,
            &mut |_| Err(Error::Interrupted),
        );
        assert!(matches!(result, Err(Error::Interrupted)));
    }

    /// A small deterministic generator (an LCG) for test corpora.
    fn numbers(seed: u64) -> impl FnMut() -> usize {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        }
    }

    /// `n` merges of `chunks` on 1 to 4 threads, each equal to the naive trainer's.
    fn assert_thread_counts_agree(chunks: &[(Vec<u8>, u64)], n: usize) {
        let expected = naive::train(chunks, n, 1, None);
        for threads in [1, 2, 3, 4] {
            assert_eq!(
                fast_with_threads(chunks, n, 1, None, threads),
                expected,
                "{threads} threads"
            );
        }
    }

    /// Enough chunks that the first merges have more than PARALLEL_MIN_PLACES places and are
    /// split between threads; the cuts must not change a single merge.
    #[test]
    fn threads_split_large_merges_without_changing_them() {
        let mut next = numbers(12345);
        let chunks: Vec<(Vec<u8>, u64)> = (0..30_000)
            .map(|_| {
                let len = 2 + next() % 7;
                let word = (0..len).map(|_| b"aab c"[next() % 5]).collect();
                (word, 1 + (next() % 3) as u64)
            })
            .collect();
        assert_thread_counts_agree(&chunks, 60);
    }

    /// One long chunk (the pathological case): large merges are cut inside it, after a node the
    /// merge cannot touch. Runs of one letter make overlapping pairs meet the cuts.
    #[test]
    fn threads_split_merges_inside_one_long_chunk_without_changing_them() {
        let mut next = numbers(777);
        let word: Vec<u8> = (0..40_000).map(|_| b"aaabbc"[next() % 6]).collect();
        assert_thread_counts_agree(&[(word, 3)], 40);
    }

    /// Highest count first, then the smallest pair, across the heap and the buckets, including a
    /// push above the bucket being drained (which BPE itself never does).
    #[test]
    fn pair_queue_orders_by_count_then_pair() {
        let mut queue = PairQueue::default();
        let big = LOW_COUNTS as u64;
        // The payload rides along untouched; here it is the pair plus 100.
        let entry = |pair: PairKey| Candidate {
            pair,
            unverified: pair as u32 + 100,
        };
        for (count, pair) in [(5, 9), (big + 1, 4), (5, 2), (big + 1, 3), (1, 1), (big, 8)] {
            queue.push(count, entry(pair));
        }
        queue.push(0, entry(77));
        let mut popped: Vec<(u64, Candidate)> = (0..4).map(|_| queue.pop().unwrap()).collect();
        // Draining bucket 5 now; these arrive above it, beside it and below it.
        queue.push(7, entry(6));
        queue.push(5, entry(1));
        queue.push(2, entry(5));
        while let Some(popped_entry) = queue.pop() {
            popped.push(popped_entry);
        }
        let expected: Vec<(u64, Candidate)> = [
            (big + 1, 3),
            (big + 1, 4),
            (big, 8),
            (5, 2),
            (7, 6),
            (5, 1),
            (5, 9),
            (2, 5),
            (1, 1),
        ]
        .into_iter()
        .map(|(count, pair)| (count, entry(pair)))
        .collect();
        assert_eq!(popped, expected);
    }

    /// Counts that do not fit in u32 take the side table; the arithmetic stays exact.
    #[test]
    fn counts_beyond_u32_stay_exact() {
        let big = u64::from(u32::MAX) + 7;
        let chunks = vec![
            (b"abab".to_vec(), big),
            (b"bcbc".to_vec(), u64::from(u32::MAX)),
            (b"cab".to_vec(), 3 * big),
        ];
        assert_eq!(fast(&chunks, 8, 1, None), naive::train(&chunks, 8, 1, None));
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
