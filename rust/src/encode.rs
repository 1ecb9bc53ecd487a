//! BPE on one chunk: start from single bytes, repeatedly apply the listed merge with the lowest
//! rank among adjacent pairs (leftmost on ties) until none applies.
//!
//! A chunk is first cut between bytes that no merge can join (`Merger::split_points`); then
//! short pieces use a plain array scan, long ones a linked list of parts plus a priority queue
//! of (rank, position) with stale entries skipped: a bucket queue over ranks (O(1) per entry)
//! when the vocabulary's ranks are monotone, as any vocabulary trained by BPE's are, else a
//! min-heap (O(n log n)).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::memory_hints::prefetch;

/// At or below this many bytes the quadratic scan beats the heap's bookkeeping.
pub(crate) const SHORT_CHUNK: usize = 64;
/// Chunks shorter than this are not looked at for split points (see `split_points`): BPE on a
/// few bytes costs about what finding the points would.
const SPLIT_FROM: usize = 8;
const NO_RANK: u32 = u32::MAX;
const NONE: usize = usize::MAX;
/// "No position" in the u32 links of the long-chunk path.
const NIL: u32 = u32::MAX;

/// The merge tables' key of the id pair (left, right).
pub(crate) fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// The merge table: pair -> (rank, id it makes), plus the ids of the 256 single bytes.
#[derive(Clone, Debug)]
pub struct Merger {
    ranks: FxHashMap<u64, (u32, u32)>,
    byte_ids: [u32; 256],
    /// (rank, made) of every pair of single bytes, indexed by `first << 8 | second`: a chunk's
    /// initial pairs (most of the lookups on short chunks) cost one load each, from a table
    /// whose used rows stay in cache, instead of a hash probe. 512 KiB per vocabulary.
    byte_pairs: Box<[(u32, u32)]>,
    /// The bytes whose single-byte token each id is (normally one).
    bytes_of_id: FxHashMap<u32, Vec<u8>>,
    /// Every id used as the left or right side of a merge pushed so far.
    operands: FxHashSet<u32>,
    /// First and last byte of what each id stands for: the byte ids, and every id made so far
    /// from operands that have them.
    edges: FxHashMap<u32, (u8, u8)>,
    /// Bit `a << 8 | b` set: some merge joins a token ending in byte a to one starting with b.
    /// Where it is clear, no token can ever span the boundary between those two bytes.
    junctions: Box<[u64]>,
    /// False once some id stands for bytes with different first or last bytes (an id shared by
    /// two bytes, or made by two merges from different bytes): `edges` no longer says which
    /// junctions a merge can close, and chunks are not split.
    edges_exact: bool,
    /// True while no merge makes an id that an earlier (or the same) merge uses. Then the pairs a
    /// merge of rank r creates (each contains the id it made) all have ranks > r: the lowest rank
    /// present in a chunk never decreases while it is encoded, which `encode_buckets` relies on.
    /// Vocabularies trained by BPE have this; a hand-made or reordered merge list may not.
    monotone: bool,
}

impl Merger {
    pub fn new(byte_ids: [u32; 256]) -> Self {
        let mut bytes_of_id: FxHashMap<u32, Vec<u8>> = FxHashMap::default();
        let mut edges: FxHashMap<u32, (u8, u8)> = FxHashMap::default();
        let mut edges_exact = true;
        for (byte, &id) in byte_ids.iter().enumerate() {
            bytes_of_id.entry(id).or_default().push(byte as u8);
            let byte = byte as u8;
            edges_exact &= *edges.entry(id).or_insert((byte, byte)) == (byte, byte);
        }
        Merger {
            ranks: FxHashMap::default(),
            byte_ids,
            byte_pairs: vec![(NO_RANK, NO_RANK); 1 << 16].into_boxed_slice(),
            bytes_of_id,
            edges,
            junctions: vec![0; (1 << 16) / 64].into_boxed_slice(),
            edges_exact,
            operands: FxHashSet::default(),
            monotone: true,
        }
    }

    /// Adds the next merge (its rank is the number of merges before it). Returns false, adding
    /// nothing, when the pair is already listed.
    pub fn push(&mut self, left: u32, right: u32, made: u32) -> bool {
        let rank = self.ranks.len() as u32;
        match self.ranks.entry(pair_key(left, right)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((rank, made));
                if let (Some(firsts), Some(seconds)) =
                    (self.bytes_of_id.get(&left), self.bytes_of_id.get(&right))
                {
                    for &a in firsts {
                        for &b in seconds {
                            self.byte_pairs[usize::from(a) << 8 | usize::from(b)] = (rank, made);
                        }
                    }
                }
                // An operand without edges is neither a byte nor made so far; in a monotone list
                // no later merge makes it either, so this merge never applies.
                if let (Some(&(first, join_left)), Some(&(join_right, last))) =
                    (self.edges.get(&left), self.edges.get(&right))
                {
                    let bit = usize::from(join_left) << 8 | usize::from(join_right);
                    self.junctions[bit / 64] |= 1 << (bit % 64);
                    self.edges_exact &=
                        *self.edges.entry(made).or_insert((first, last)) == (first, last);
                }
                self.operands.insert(left);
                self.operands.insert(right);
                if self.operands.contains(&made) {
                    self.monotone = false;
                }
                true
            }
        }
    }

    pub fn byte_id(&self, byte: u8) -> u32 {
        self.byte_ids[byte as usize]
    }

    /// Whether the long-chunk path may use the bucket queue (see the `monotone` field).
    pub fn is_monotone(&self) -> bool {
        self.monotone
    }

    #[cfg(test)]
    fn rank(&self, left: u32, right: u32) -> u32 {
        self.ranks
            .get(&pair_key(left, right))
            .map_or(NO_RANK, |&(rank, _)| rank)
    }

    #[cfg(test)]
    fn made(&self, left: u32, right: u32) -> u32 {
        // Only called for a pair whose rank was just found, so the entry exists.
        self.ranks
            .get(&pair_key(left, right))
            .map_or(NO_RANK, |&(_, made)| made)
    }

    /// Appends the BPE encoding of `bytes` to `out`.
    pub fn encode(&self, bytes: &[u8], out: &mut Vec<u32>) {
        if bytes.len() < SPLIT_FROM {
            self.encode_short(bytes, out)
        } else {
            self.encode_split(bytes, out)
        }
    }

    /// (rank, made) of a pair, or (NO_RANK, _) when it is not a merge: one hash lookup where
    /// `rank` followed by `made` would take two.
    pub(crate) fn rank_made(&self, left: u32, right: u32) -> (u32, u32) {
        self.ranks
            .get(&pair_key(left, right))
            .copied()
            .unwrap_or((NO_RANK, NO_RANK))
    }

    /// (rank, made) of the pair of single-byte tokens of `first` and `second`.
    #[inline]
    pub(crate) fn byte_pair(&self, first: u8, second: u8) -> (u32, u32) {
        self.byte_pairs[usize::from(first) << 8 | usize::from(second)]
    }

    /// Short chunks: repeated scans for the lowest rank over fixed-size stack arrays (short
    /// chunks are the common case and must not allocate). A merged-away part stays in place
    /// with NO_RANK, and `next`/`prev` link the live ones.
    /// Rejected: removing the merged-away part by shifting the arrays down (three `memmove`
    /// calls per merge, ~10% of a profile of Chinese text, whose chunks are a few characters).
    fn encode_short(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let n = bytes.len().min(SHORT_CHUNK);
        if n < 2 {
            out.extend(bytes[..n].iter().map(|&b| self.byte_id(b)));
            return;
        }
        if n == 2 {
            // The commonest piece after splitting (Chinese text cuts mostly into characters and
            // pairs of bytes): one table load, without setting up the arrays below.
            match self.byte_pair(bytes[0], bytes[1]) {
                (NO_RANK, _) => out.extend([self.byte_id(bytes[0]), self.byte_id(bytes[1])]),
                (_, made) => out.push(made),
            }
            return;
        }
        let mut parts = ShortParts::new(n);
        for (sym, &byte) in parts.sym.iter_mut().zip(&bytes[..n]) {
            *sym = self.byte_id(byte);
        }
        for i in 0..n - 1 {
            (parts.rank[i], parts.made[i]) = self.byte_pair(bytes[i], bytes[i + 1]);
        }
        self.merge_short(&mut parts, n, out, |left, right| {
            self.rank_made(left, right)
        });
    }

    /// BPE that starts from the symbols `ids` (at most `SHORT_CHUNK` of them) instead of single
    /// bytes: for chunks whose multibyte characters are already whole tokens (`CharAtoms`).
    /// `rank_made` answers the pair question: `Merger::rank_made` or a table in front of it.
    pub(crate) fn encode_ids(
        &self,
        ids: &[u32],
        out: &mut Vec<u32>,
        rank_made: impl Fn(u32, u32) -> (u32, u32),
    ) {
        let n = ids.len();
        debug_assert!(n <= SHORT_CHUNK);
        match n {
            0 => {}
            1 => out.push(ids[0]),
            2 => match rank_made(ids[0], ids[1]) {
                (NO_RANK, _) => out.extend_from_slice(ids),
                (_, made) => out.push(made),
            },
            _ => {
                let mut parts = ShortParts::new(n);
                parts.sym[..n].copy_from_slice(ids);
                for i in 0..n - 1 {
                    (parts.rank[i], parts.made[i]) = rank_made(ids[i], ids[i + 1]);
                }
                self.merge_short(&mut parts, n, out, rank_made);
            }
        }
    }

    /// The merge loop of the short paths: apply the lowest-ranked pair until none is left, then
    /// append the live parts.
    #[inline(always)]
    fn merge_short(
        &self,
        parts: &mut ShortParts,
        n: usize,
        out: &mut Vec<u32>,
        rank_made: impl Fn(u32, u32) -> (u32, u32),
    ) {
        let ShortParts {
            sym,
            rank,
            made,
            next,
            prev,
        } = parts;
        loop {
            let (best, at) = lowest_rank(rank, n);
            if best == NO_RANK {
                break;
            }
            let right = usize::from(next[at]);
            let after = usize::from(next[right]);
            sym[at] = made[at];
            rank[right] = NO_RANK;
            next[at] = after as u8;
            if after < n {
                prev[after] = at as u8;
                (rank[at], made[at]) = rank_made(sym[at], sym[after]);
            } else {
                rank[at] = NO_RANK;
            }
            if at > 0 {
                let before = usize::from(prev[at]);
                (rank[before], made[before]) = rank_made(sym[before], sym[at]);
            }
        }
        let mut i = 0;
        while i < n {
            out.push(sym[i]);
            i = usize::from(next[i]);
        }
    }

    /// Cuts where no token can span (`split_points`), then BPE on each piece alone.
    fn encode_split(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let mut start = 0;
        for end in self.split_points(bytes) {
            self.encode_unsplit(&bytes[start..end], out);
            start = end;
        }
        self.encode_unsplit(&bytes[start..], out)
    }

    /// Whether a token may span the boundary between bytes `a` and `b` (see `junctions`).
    #[inline]
    fn may_join(&self, a: u8, b: u8) -> bool {
        let bit = usize::from(a) << 8 | usize::from(b);
        self.junctions[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The positions inside `bytes` that no merge can ever join across, ascending.
    ///
    /// Every token a merge makes is its left operand's bytes followed by its right operand's, so
    /// a token spanning the boundary between bytes a and b comes from a merge whose left side
    /// ends in a and whose right side starts with b. Where no merge has that junction, no pair
    /// straddling the boundary ever has a rank, and BPE of the whole is BPE of each side: the
    /// lowest-ranked pair overall is always the lowest of one side, so each side sees exactly
    /// the merges it would see alone, in the same order. Chunks are cut there, and the pieces
    /// (mostly short) take the fast paths with a working set that stays in cache. With GPT-2's
    /// merges a random 1 MB word of lowercase letters splits every ~7 bytes (98 of the 676
    /// letter pairs occur in no token; 2.1x faster), and Chinese text at 59% of its byte
    /// boundaries (the quadratic scans' work fell to an eighth; 15-25% faster overall).
    /// Only for monotone lists with exact `edges` (all vocabularies this crate builds): there
    /// every operand's edges are final when a merge using it is pushed.
    /// Not covered: a long chunk all of whose adjacent bytes some token joins (a run of one
    /// byte, or `benches/unsplittable_word.py`) still takes the one-chunk path whole.
    /// Rejected: cutting at fixed windows and repairing the boundaries. A window's encoding can
    /// depend on bytes far outside it (the parity of a run decides how "aaaa..." pairs up), so
    /// that needs a proof that a boundary is final, which only this byte-pair test gives cheaply.
    pub(crate) fn split_points<'a>(&'a self, bytes: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        let splittable = self.monotone && self.edges_exact;
        let pairs = if splittable { bytes.len() } else { 0 };
        (1..pairs).filter(move |&i| !self.may_join(bytes[i - 1], bytes[i]))
    }

    /// BPE of one piece as a whole: short pieces by scanning, long ones with a linked list of
    /// parts plus a priority queue of (rank, position) entries.
    ///
    /// An entry is checked when popped rather than removed when it goes stale: the pair at a
    /// position only ever grows (its left part or its right neighbour absorbs more bytes), so it
    /// never returns to an earlier state, and `parts[pos].rank == rank` says exactly whether the
    /// entry still describes the pair there (ranks identify pairs; a dead part has NO_RANK).
    /// Keeping each pair's rank and product beside it means a merge costs two hash lookups (the
    /// two new pairs) and nothing else.
    pub(crate) fn encode_unsplit(&self, bytes: &[u8], out: &mut Vec<u32>) {
        if bytes.len() <= SHORT_CHUNK {
            return self.encode_short(bytes, out);
        }
        if !self.monotone || bytes.len() >= NIL as usize {
            return self.encode_heap(bytes, out);
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.encode_buckets(bytes, out, &mut scratch),
            // Only reachable by re-entrance, which encoding never does; stay correct anyway.
            Err(_) => self.encode_buckets(bytes, out, &mut Scratch::default()),
        })
    }

    /// The bucket-queue path, for vocabularies whose ranks are monotone (see `Merger::monotone`).
    ///
    /// Merging a pair of rank r only creates pairs of rank > r, so the lowest rank present never
    /// decreases and all pairs of rank r are known when r is reached: process ranks in increasing
    /// order, and within one rank the positions left to right (sorted once), skipping stale
    /// entries. A push is O(1) (appended to its rank's bucket, a bit set); finding the next
    /// non-empty rank scans a two-level bitmap forward from the current one.
    ///
    /// Rejected alternatives:
    /// - a binary heap of (rank, position): O(log n) per push and pop with cache misses all over
    ///   a multi-megabyte heap; it was ~500 ns per byte on `"a" * 250_000` (the stale entries
    ///   checked with two hash lookups each made it worse). Kept only as the exact fallback for
    ///   non-monotone vocabularies (`encode_heap`).
    /// - a radix heap keyed by (rank << 32 | position), also valid since keys only grow: no
    ///   per-vocabulary storage, but (by estimate, not built) on a run of one byte every entry
    ///   would be redistributed about log2(n) times, where the bucket queue sorts each rank's
    ///   positions once.
    /// - a custom open-addressing pair table (inline 16-byte slots, at most half full, one cache
    ///   line per probe instead of hashbrown's control bytes plus slot): ~30% slower on 250 KB
    ///   of random letters with GPT-2's vocabulary (its 2 MiB against hashbrown's ~1 MiB).
    /// - touching (loading) the part a few bucket entries ahead to overlap its cache miss with
    ///   the current merge: ~15% slower on the same input. A prefetch instruction instead (it
    ///   does not wait for the line) made 1 MB of random letters 1.7x faster (0.12 -> 0.07 s);
    ///   32 entries ahead did no better than 16.
    /// - not sorting within a rank: order only matters where pairs of one rank overlap, i.e. in
    ///   runs of one token ("aaa"), and when each id is made by one merge the buckets already come
    ///   out ascending. The sort stays as a guard that does not rely on that argument: on input
    ///   that is already sorted it is one linear pass.
    fn encode_buckets(&self, bytes: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        const BUCKET_PREFETCH_AHEAD: usize = 16;
        let n = bytes.len();
        scratch.prepare(self.ranks.len());
        let Scratch {
            parts,
            queue,
            batch,
            ..
        } = scratch;
        parts.clear();
        parts.extend(bytes.iter().enumerate().map(|(i, &b)| Part {
            sym: self.byte_id(b),
            prev: if i == 0 { NIL } else { i as u32 - 1 },
            next: if i + 1 == n { NIL } else { i as u32 + 1 },
            rank: NO_RANK,
            made: NO_RANK,
        }));
        for i in 0..n - 1 {
            let (rank, made) = self.byte_pair(bytes[i], bytes[i + 1]);
            parts[i].rank = rank;
            parts[i].made = made;
            if rank != NO_RANK {
                queue.push(rank, i as u32);
            }
        }
        let mut from = 0;
        while let Some(rank) = queue.next_rank(from) {
            queue.take(rank, batch);
            batch.sort_unstable();
            for (i, &pos) in batch.iter().enumerate() {
                // One long chunk spreads a rank's positions over megabytes of parts: start
                // loading the parts (and the neighbours a merge reads) a few positions ahead.
                if let Some(&ahead) = batch.get(i + BUCKET_PREFETCH_AHEAD) {
                    let base = parts.as_ptr();
                    prefetch(base.wrapping_add(ahead as usize).wrapping_sub(1));
                    prefetch(base.wrapping_add(ahead as usize + 2));
                }
                if parts[pos as usize].rank != rank {
                    continue;
                }
                self.merge_at(parts, pos, |r, p| {
                    debug_assert!(r > rank, "monotone ranks: {r} after {rank}");
                    queue.push(r, p)
                });
            }
            from = rank + 1;
        }
        queue.done();
        let mut pos = 0;
        while pos != NIL {
            out.push(parts[pos as usize].sym);
            pos = parts[pos as usize].next;
        }
        scratch.release_if_huge();
    }

    /// Merges the pair at `pos` (whose rank and product are in `parts[pos]`), updates the list
    /// and the two pairs around it, and reports each new pair that is a merge as (rank, position).
    #[inline]
    fn merge_at(&self, parts: &mut [Part], pos: u32, mut push: impl FnMut(u32, u32)) {
        let p = pos as usize;
        let right = parts[p].next as usize;
        let made = parts[p].made;
        let after = parts[right].next;
        // The right part is dead: no entry can match NO_RANK.
        parts[right].rank = NO_RANK;
        parts[p].sym = made;
        parts[p].next = after;
        if after == NIL {
            parts[p].rank = NO_RANK;
        } else {
            parts[after as usize].prev = pos;
            let (rank, m) = self.rank_made(made, parts[after as usize].sym);
            parts[p].rank = rank;
            parts[p].made = m;
            if rank != NO_RANK {
                push(rank, pos);
            }
        }
        let before = parts[p].prev;
        if before != NIL {
            let (rank, m) = self.rank_made(parts[before as usize].sym, made);
            parts[before as usize].rank = rank;
            parts[before as usize].made = m;
            if rank != NO_RANK {
                push(rank, before);
            }
        }
    }

    /// The exact fallback: a min-heap of (rank, position), for vocabularies whose ranks are not
    /// monotone and for chunks of 4 GiB or more. O(n log n).
    fn encode_heap(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let n = bytes.len();
        // usize links here: this path must also take chunks beyond u32 positions.
        let mut sym: Vec<u32> = bytes.iter().map(|&b| self.byte_id(b)).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        // The rank and product of the pair starting at each position (NO_RANK: none, or dead).
        let mut pair: Vec<(u32, u32)> = vec![(NO_RANK, NO_RANK); n];
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = BinaryHeap::new();
        for i in 0..n - 1 {
            pair[i] = self.byte_pair(bytes[i], bytes[i + 1]);
            if pair[i].0 != NO_RANK {
                heap.push(Reverse((pair[i].0, i)));
            }
        }
        while let Some(Reverse((rank, pos))) = heap.pop() {
            // Stale when the pair at pos changed since (see encode_unsplit) or pos died.
            if pair[pos].0 != rank {
                continue;
            }
            let right = next[pos];
            sym[pos] = pair[pos].1;
            pair[right] = (NO_RANK, NO_RANK);
            let after = next[right];
            next[pos] = after;
            pair[pos] = (NO_RANK, NO_RANK);
            if after != NONE {
                prev[after] = pos;
                pair[pos] = self.rank_made(sym[pos], sym[after]);
                if pair[pos].0 != NO_RANK {
                    heap.push(Reverse((pair[pos].0, pos)));
                }
            }
            let before = prev[pos];
            if before != NONE {
                pair[before] = self.rank_made(sym[before], sym[pos]);
                if pair[before].0 != NO_RANK {
                    heap.push(Reverse((pair[before].0, before)));
                }
            }
        }
        let mut pos = 0;
        while pos != NONE {
            out.push(sym[pos]);
            pos = next[pos];
        }
    }
}

/// The fixed-size stack arrays of the short paths (short chunks are the common case and must not
/// allocate). A merged-away part stays in place with NO_RANK, and `next`/`prev` link the live ones.
struct ShortParts {
    sym: [u32; SHORT_CHUNK],
    /// rank[i]: rank of the pair (part i, next live part), NO_RANK when that is no merge, part i
    /// is the last or was merged away.
    rank: [u32; SHORT_CHUNK],
    /// made[i]: the id that pair makes, kept so that applying the merge needs no second lookup.
    made: [u32; SHORT_CHUNK],
    /// Live neighbours; n means "none" to the right (no part needs "none" to the left: the first
    /// part is never merged away).
    next: [u8; SHORT_CHUNK],
    prev: [u8; SHORT_CHUNK],
}

impl ShortParts {
    #[inline(always)]
    fn new(n: usize) -> ShortParts {
        let mut parts = ShortParts {
            sym: [0; SHORT_CHUNK],
            rank: [NO_RANK; SHORT_CHUNK],
            made: [NO_RANK; SHORT_CHUNK],
            next: [0; SHORT_CHUNK],
            prev: [0; SHORT_CHUNK],
        };
        for i in 0..n {
            parts.next[i] = i as u8 + 1;
            parts.prev[i] = i.saturating_sub(1) as u8;
        }
        parts
    }
}

/// The lowest rank among `rank[..n - 1]` and its position, the leftmost of equal ranks (entries
/// from `n - 1` on are NO_RANK). Long pieces (Chinese under o200k cuts into pieces of up to the
/// 64-byte limit, and a piece of n bytes needs up to n scans) take 8-lane vector minimums over the
/// whole array: ~40 instructions instead of ~4 per entry.
#[inline(always)]
fn lowest_rank(rank: &[u32; SHORT_CHUNK], n: usize) -> (u32, usize) {
    #[cfg(target_arch = "x86_64")]
    if n > 24 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        return unsafe { lowest_rank_avx2(rank) };
    }
    let mut best = NO_RANK;
    let mut at = 0;
    // Strict `<`: the leftmost of equal ranks wins.
    for (i, &r) in rank[..n - 1].iter().enumerate() {
        if r < best {
            best = r;
            at = i;
        }
    }
    (best, at)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lowest_rank_avx2(rank: &[u32; SHORT_CHUNK]) -> (u32, usize) {
    use std::arch::x86_64::*;
    const LANES: usize = 8;
    let base = rank.as_ptr() as *const __m256i;
    let load = |k: usize| _mm256_loadu_si256(base.add(k));
    let mut lowest = load(0);
    for k in 1..SHORT_CHUNK / LANES {
        lowest = _mm256_min_epu32(lowest, load(k));
    }
    // The minimum of the 8 lanes, in every lane.
    lowest = _mm256_min_epu32(lowest, _mm256_permute2x128_si256(lowest, lowest, 1));
    lowest = _mm256_min_epu32(lowest, _mm256_shuffle_epi32(lowest, 0b01_00_11_10));
    lowest = _mm256_min_epu32(lowest, _mm256_shuffle_epi32(lowest, 0b10_11_00_01));
    let best = _mm256_cvtsi256_si32(lowest) as u32;
    if best == NO_RANK {
        return (NO_RANK, 0);
    }
    for k in 0..SHORT_CHUNK / LANES {
        let equal = _mm256_cmpeq_epi32(load(k), lowest);
        let lanes = _mm256_movemask_ps(_mm256_castsi256_ps(equal));
        if lanes != 0 {
            return (best, k * LANES + lanes.trailing_zeros() as usize);
        }
    }
    unreachable!("the minimum is one of the lanes")
}

/// One part of a chunk being encoded, with the pair it starts (itself and its right neighbour).
/// One 20-byte record per position, so a merge touches few cache lines.
#[derive(Clone, Copy, Debug)]
struct Part {
    sym: u32,
    prev: u32,
    next: u32,
    /// Rank of (sym, next's sym), NO_RANK when that is no merge, there is no next, or this part
    /// was merged away.
    rank: u32,
    /// The id that pair makes.
    made: u32,
}

/// Per-thread storage reused across chunks, so a long chunk allocates nothing once warm.
#[derive(Default)]
struct Scratch {
    parts: Vec<Part>,
    queue: BucketQueue,
    batch: Vec<u32>,
}

/// After a chunk of more than this many bytes, the parts and the batch are freed rather than
/// kept for the thread's next chunk: without it, encoding one 50 MB run of a byte left 1.1 GB
/// of parts in the thread for its lifetime.
const KEEP_PARTS: usize = 1 << 21;

impl Scratch {
    fn prepare(&mut self, num_ranks: usize) {
        self.queue.prepare(num_ranks);
    }

    fn release_if_huge(&mut self) {
        if self.parts.capacity() > KEEP_PARTS {
            self.parts = Vec::new();
        }
        if self.batch.capacity() > KEEP_PARTS {
            self.batch = Vec::new();
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Positions grouped by rank: one vector per rank and a two-level bitmap of the non-empty
/// ranks. Every bucket is emptied by the end of an encoding, so nothing needs clearing between
/// chunks (`dirty` catches an exit by unwinding).
/// Rejected: one singly linked list per rank with all nodes in one vector (no per-rank
/// allocations), because following a list is a chain of dependent cache misses: on 250 KB of
/// random letters that chase alone was a sixth of the time.
#[derive(Default)]
struct BucketQueue {
    buckets: Vec<Vec<u32>>,
    /// Bit r set: rank r's bucket is non-empty.
    words: Vec<u64>,
    /// Bit w set: words[w] is non-zero.
    summary: Vec<u64>,
    /// Positions pushed into the buckets since `prepare`, to drop storage after a huge chunk.
    pushed: usize,
    dirty: bool,
}

/// After a chunk that pushed more than this many entries, the buckets' storage is freed rather
/// than kept for the thread's next chunk.
const KEEP_PUSHED: usize = 1 << 20;

impl BucketQueue {
    fn prepare(&mut self, num_ranks: usize) {
        if self.dirty || self.buckets.len() < num_ranks {
            let len = num_ranks.max(self.buckets.len());
            self.buckets.iter_mut().for_each(Vec::clear);
            self.buckets.resize_with(len, Vec::new);
            let words = len.div_ceil(64);
            self.words.clear();
            self.words.resize(words, 0);
            self.summary.clear();
            self.summary.resize(words.div_ceil(64), 0);
        }
        self.pushed = 0;
        self.dirty = true;
    }

    /// Called once `next_rank` returned None (every bucket is empty again).
    fn done(&mut self) {
        if self.pushed > KEEP_PUSHED {
            *self = BucketQueue::default();
        }
        self.dirty = false;
    }

    #[inline]
    fn push(&mut self, rank: u32, pos: u32) {
        let r = rank as usize;
        let bucket = &mut self.buckets[r];
        if bucket.is_empty() {
            let w = r / 64;
            if self.words[w] == 0 {
                self.summary[w / 64] |= 1 << (w % 64);
            }
            self.words[w] |= 1 << (r % 64);
        }
        bucket.push(pos);
        self.pushed += 1;
    }

    /// The lowest non-empty rank at or above `from`.
    fn next_rank(&self, from: u32) -> Option<u32> {
        let from = from as usize;
        let mut w = from / 64;
        if w >= self.words.len() {
            return None;
        }
        let here = self.words[w] & (u64::MAX << (from % 64));
        if here != 0 {
            return Some((w * 64 + here.trailing_zeros() as usize) as u32);
        }
        // Words after w: find the next non-zero one through the summary.
        w += 1;
        let mut s = w / 64;
        if s >= self.summary.len() {
            return None;
        }
        let mut bits = if w % 64 == 0 {
            self.summary[s]
        } else {
            self.summary[s] & (u64::MAX << (w % 64))
        };
        loop {
            if bits != 0 {
                let w = s * 64 + bits.trailing_zeros() as usize;
                return Some((w * 64 + self.words[w].trailing_zeros() as usize) as u32);
            }
            s += 1;
            if s >= self.summary.len() {
                return None;
            }
            bits = self.summary[s];
        }
    }

    /// Moves rank's bucket into `batch` (in push order), leaving the bucket empty. The two
    /// vectors are swapped, so the bucket keeps the batch's old storage for later pushes.
    fn take(&mut self, rank: u32, batch: &mut Vec<u32>) {
        let r = rank as usize;
        batch.clear();
        std::mem::swap(&mut self.buckets[r], batch);
        let w = r / 64;
        self.words[w] &= !(1 << (r % 64));
        if self.words[w] == 0 {
            self.summary[w / 64] &= !(1 << (w % 64));
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

    /// Byte b has id 255 - b: the byte-pair table must map through the byte ids.
    fn reversed_bytes() -> [u32; 256] {
        std::array::from_fn(|i| 255 - i as u32)
    }

    /// A merge table from random pairs over a small alphabet, each making the next id.
    fn merger_from(pairs: &[(u8, u8)]) -> Merger {
        let bytes = reversed_bytes();
        let mut merger = Merger::new(bytes);
        let mut ids: Vec<u32> = vec![bytes[97], bytes[98], bytes[99]];
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

    /// Checks every path that may take `text` against the naive encoder.
    fn check_all_paths(merger: &Merger, text: &[u8]) -> Result<(), TestCaseError> {
        let expected = naive::encode(merger, text);
        if text.len() <= SHORT_CHUNK {
            let mut short = Vec::new();
            merger.encode_short(text, &mut short);
            prop_assert_eq!(&short, &expected);
        }
        let mut dispatched = Vec::new();
        merger.encode(text, &mut dispatched);
        prop_assert_eq!(&dispatched, &expected);
        if text.len() >= 2 {
            let mut split = Vec::new();
            merger.encode_split(text, &mut split);
            prop_assert_eq!(&split, &expected);
            let mut unsplit = Vec::new();
            merger.encode_unsplit(text, &mut unsplit);
            prop_assert_eq!(&unsplit, &expected);
            let mut heap = Vec::new();
            merger.encode_heap(text, &mut heap);
            prop_assert_eq!(&heap, &expected);
            if merger.is_monotone() {
                let mut buckets = Vec::new();
                merger.encode_buckets(text, &mut buckets, &mut Scratch::default());
                prop_assert_eq!(&buckets, &expected);
            }
        }
        Ok(())
    }

    /// Text made of runs of one byte (where pairs of one rank overlap and ties decide).
    fn runs() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            (prop::sample::select(vec![b'a', b'b', b'c']), 1..90usize),
            0..6,
        )
        .prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(b, k)| std::iter::repeat_n(b, k))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn fast_paths_equal_naive(
            pairs in prop::collection::vec((any::<u8>(), any::<u8>()), 0..30),
            text in prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 0..200),
        ) {
            let merger = merger_from(&pairs);
            prop_assert!(merger.is_monotone());
            check_all_paths(&merger, &text)?;
        }

        #[test]
        fn runs_of_one_byte_equal_naive(
            pairs in prop::collection::vec((any::<u8>(), any::<u8>()), 0..30),
            text in runs(),
        ) {
            check_all_paths(&merger_from(&pairs), &text)?;
        }

        /// Lengths around the short/long threshold, where the dispatch changes path.
        #[test]
        fn threshold_lengths_equal_naive(
            pairs in prop::collection::vec((any::<u8>(), any::<u8>()), 0..30),
            text in prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), SHORT_CHUNK - 2..SHORT_CHUNK + 3),
        ) {
            check_all_paths(&merger_from(&pairs), &text)?;
        }

        /// Text over more bytes than the merges use, so that long chunks have split points
        /// next to bytes no merge touches, and between pairs that no merge joins.
        #[test]
        fn split_chunks_equal_naive(
            pairs in prop::collection::vec((any::<u8>(), any::<u8>()), 0..30),
            text in prop::collection::vec(prop::sample::select(b"aabbccd".to_vec()), 0..400),
        ) {
            check_all_paths(&merger_from(&pairs), &text)?;
        }

        /// The same merges listed in a shuffled order: a merge may now use an id that only a
        /// later merge makes, so ranks are not monotone and the long path must stay exact.
        #[test]
        fn shuffled_merges_equal_naive(
            pairs in prop::collection::vec((any::<u8>(), any::<u8>()), 1..30),
            order in prop::collection::vec(any::<u32>(), 30),
            text in prop_oneof![
                prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 0..200),
                runs(),
            ],
        ) {
            let sorted = merger_from(&pairs);
            let mut listed: Vec<(u64, (u32, u32))> =
                sorted.ranks.iter().map(|(&k, &v)| (k, v)).collect();
            listed.sort_by_key(|&(_, (rank, _))| rank);
            let mut keyed: Vec<(u32, u64, u32)> = listed
                .iter()
                .enumerate()
                .map(|(i, &(k, (_, made)))| (order[i % order.len()], k, made))
                .collect();
            keyed.sort();
            let mut merger = Merger::new(identity_bytes());
            for (_, k, made) in keyed {
                merger.push((k >> 32) as u32, k as u32, made);
            }
            check_all_paths(&merger, &text)?;
        }
    }

    proptest! {
        #[test]
        fn vector_minimum_equals_the_scan(
            ranks in prop::collection::vec(prop::sample::select(vec![0u32, 1, 7, 7, 100, u32::MAX - 1, NO_RANK]), 2..=SHORT_CHUNK),
        ) {
            let n = ranks.len();
            let mut rank = [NO_RANK; SHORT_CHUNK];
            rank[..n - 1].copy_from_slice(&ranks[..n - 1]);
            let mut want = (NO_RANK, 0);
            for (i, &r) in rank[..n - 1].iter().enumerate() {
                if r < want.0 {
                    want = (r, i);
                }
            }
            let got = lowest_rank(&rank, n);
            prop_assert_eq!(got.0, want.0);
            if want.0 != NO_RANK {
                prop_assert_eq!(got.1, want.1);
            }
        }
    }

    #[test]
    fn monotone_is_detected() {
        let mut merger = Merger::new(identity_bytes());
        assert!(merger.push(97, 97, 256));
        assert!(merger.push(256, 97, 257));
        assert!(merger.is_monotone());
        // Uses 259 before the merge making it.
        assert!(merger.push(259, 97, 258));
        assert!(merger.is_monotone());
        assert!(merger.push(98, 98, 259));
        assert!(!merger.is_monotone());
        let mut text = Vec::new();
        for _ in 0..40 {
            text.extend_from_slice(b"aabbbba");
        }
        check_all_paths(&merger, &text).unwrap();
    }

    #[test]
    fn id_made_by_two_merges_keeps_leftmost() {
        // X = 256 is made by (a, a) and again by (b, b) (the Tokenizer refuses this; the Merger
        // alone allows it). In "bbbbaa" the bucket of (X, X) receives position 2 before 0, and
        // only the sort makes the leftmost pair of the run X X X merge first.
        let mut merger = Merger::new(identity_bytes());
        assert!(merger.push(97, 97, 256));
        assert!(merger.push(98, 98, 256));
        assert!(merger.push(256, 256, 257));
        assert!(merger.is_monotone());
        for text in [&b"bbbbaa"[..], b"bbbbaabbbbbbaaaa", &b"bbbbaa".repeat(20)] {
            check_all_paths(&merger, text).unwrap();
        }
        let mut out = Vec::new();
        merger.encode_buckets(b"bbbbaa", &mut out, &mut Scratch::default());
        assert_eq!(out, [257, 256]);
    }

    #[test]
    fn long_chunks_split_where_no_merge_joins() {
        let mut merger = Merger::new(identity_bytes());
        // Merges (a, b), (ab, c), (c, c).
        assert!(merger.push(97, 98, 256));
        assert!(merger.push(256, 99, 257));
        assert!(merger.push(99, 99, 258));
        // Joinable: a|b, b|c (ab c), c|c. Every other boundary is a split point.
        let text = b"abcabccab".repeat(10);
        let points: Vec<usize> = merger.split_points(&text).collect();
        let expected: Vec<usize> = (1..text.len())
            .filter(|&i| !matches!(&text[i - 1..=i], b"ab" | b"bc" | b"cc"))
            .collect();
        assert_eq!(points, expected);
        assert!(!points.is_empty());
        check_all_paths(&merger, &text).unwrap();

        // Two bytes sharing one id: edges are ambiguous, so nothing is split.
        let mut shared = identity_bytes();
        shared[100] = 97;
        let merger = Merger::new(shared);
        assert_eq!(merger.split_points(&text).count(), 0);
        // Non-monotone lists are not split either.
        let mut merger = Merger::new(identity_bytes());
        assert!(merger.push(259, 97, 258));
        assert!(merger.push(98, 98, 259));
        assert!(!merger.is_monotone());
        assert_eq!(merger.split_points(&text).count(), 0);
    }

    #[test]
    fn scratch_is_reused_across_vocabulary_sizes() {
        // A thread's scratch sized for a small vocabulary must grow for a larger one, and the
        // reverse must not index past the smaller one's ranks.
        let small = merger_from(&[(0, 0), (3, 3)]);
        let big = merger_from(&(0..40).map(|i| (i, i + 1)).collect::<Vec<_>>());
        let text: Vec<u8> = b"abcabcaaaabbbcc".repeat(20);
        for merger in [&small, &big, &small] {
            let mut out = Vec::new();
            merger.encode(&text, &mut out);
            assert_eq!(out, naive::encode(merger, &text));
        }
    }

    #[test]
    fn scratch_of_a_huge_chunk_is_freed() {
        let mut merger = Merger::new(identity_bytes());
        merger.push(97, 97, 256);
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        merger.encode_buckets(&vec![b'a'; KEEP_PARTS + 2], &mut out, &mut scratch);
        assert_eq!(out, vec![256; KEEP_PARTS / 2 + 1]);
        assert_eq!(scratch.parts.capacity(), 0);
        assert_eq!(scratch.batch.capacity(), 0);
        // A smaller chunk's storage stays for the next one.
        merger.encode_buckets(&[b'a'; 1000], &mut out, &mut scratch);
        assert!(scratch.parts.capacity() >= 1000);
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
