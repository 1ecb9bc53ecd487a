//! The trainer's pair index: for every pair of adjacent symbols, its live count and the arena
//! positions where it may occur (a superset: places go stale as merges rewrite them).
//!
//! What this replaced, and why: a `HashMap<pair, (count, list number)>` beside one `Vec` of
//! places per pair. On one long chunk of random text (the pathological training input) almost
//! every neighbour pair a merge creates is new, so each merged position cost a cache-missing
//! probe into a table of every pair ever seen, plus an allocation for the new pair's place list
//! and a miss on its header. Here:
//! - slots are 16 bytes in one open-addressed array (linear probing), so the address of a pair's
//!   slot is known before the probe and a batch of updates prefetches the slots it will need;
//! - a pair whose count falls to 0 is deleted (backward-shift deletion, no tombstones), and so is
//!   a merged pair: the table holds live pairs only, not every pair ever seen;
//! - places are appended to one shared buffer as blocks chained per pair (newest first), with no
//!   allocation per pair. The buffer only grows, yet stays linear in the arena: every place added
//!   after the initial count comes from a merged occurrence (at most two each, and each merge
//!   removes a position). Compacting it (copying the live chains out) was tried and dropped: on
//!   normal text it never paid for its pass, and on one long random word it cost a quarter of
//!   the training time; peak memory without it is below what the per-pair vectors took.

use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::memory_hints::{prefetch, with_huge_pages};

/// (left, right) as `left << 32 | right`.
pub(crate) type PairKey = u64;

/// Marks an empty slot: ids stay below u32::MAX, so (u32::MAX, u32::MAX) is never a pair.
const EMPTY: PairKey = u64::MAX;
/// Ends a chain of blocks.
const NO_BLOCK: u32 = u32::MAX;
/// A count stored as this is kept in `PairIndex::big_counts` (counts of 4 billion or more).
const BIG_COUNT: u32 = u32::MAX;
/// The table grows past this load (numerator over 8): linear probing stays short below it.
const MAX_LOAD_EIGHTHS: usize = 5;

#[derive(Clone, Copy)]
struct Slot {
    key: PairKey,
    count: u32,
    /// Newest block of this pair's places, or `NO_BLOCK`.
    head: u32,
}

const FREE: Slot = Slot {
    key: EMPTY,
    count: 0,
    head: NO_BLOCK,
};

fn free_slots(size: usize) -> Vec<Slot> {
    let mut slots = with_huge_pages(size);
    slots.resize(size, FREE);
    slots
}

/// `len` places of one pair at `places[start..]`, recorded after the block `prev`.
#[derive(Clone, Copy)]
struct Block {
    start: usize,
    len: u32,
    prev: u32,
}

pub(crate) struct PairIndex {
    slots: Vec<Slot>,
    /// 64 - log2(slots.len()): the home slot is the top bits of the multiplied key.
    shift: u32,
    len: usize,
    big_counts: FxHashMap<PairKey, u64>,
    places: Vec<u32>,
    blocks: Vec<Block>,
}

impl PairIndex {
    /// An index expected to hold about `pairs` live pairs at once (it grows past that).
    pub(crate) fn with_capacity(pairs: usize) -> PairIndex {
        let wanted = (pairs.max(16) * 8).div_ceil(MAX_LOAD_EIGHTHS);
        let size = wanted.next_power_of_two();
        PairIndex {
            slots: free_slots(size),
            shift: 64 - size.trailing_zeros(),
            len: 0,
            big_counts: FxHashMap::default(),
            places: Vec::new(),
            blocks: Vec::new(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Fibonacci hashing: the multiply spreads both halves of the key into the top bits.
    fn home(&self, key: PairKey) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn find(&self, key: PairKey) -> Option<usize> {
        let mut at = self.home(key);
        loop {
            let found = self.slots[at].key;
            if found == key {
                return Some(at);
            }
            if found == EMPTY {
                return None;
            }
            at = (at + 1) & self.mask();
        }
    }

    /// The slot of `key`, inserted with count 0 and no places if it is absent.
    fn find_or_insert(&mut self, key: PairKey) -> usize {
        if (self.len + 1) * 8 > self.slots.len() * MAX_LOAD_EIGHTHS {
            self.grow();
        }
        let mut at = self.home(key);
        loop {
            let found = self.slots[at].key;
            if found == key {
                return at;
            }
            if found == EMPTY {
                self.slots[at] = Slot { key, ..FREE };
                self.len += 1;
                return at;
            }
            at = (at + 1) & self.mask();
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, free_slots(size));
        self.shift -= 1;
        for slot in old.into_iter().filter(|slot| slot.key != EMPTY) {
            let mut at = self.home(slot.key);
            while self.slots[at].key != EMPTY {
                at = (at + 1) & self.mask();
            }
            self.slots[at] = slot;
        }
    }

    /// Empties slot `hole`, shifting later entries of its probe run back so that every lookup
    /// still finds its key before the first empty slot.
    fn delete_at(&mut self, mut hole: usize) {
        if self.slots[hole].count == BIG_COUNT {
            self.big_counts.remove(&self.slots[hole].key);
        }
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        loop {
            let key = self.slots[next].key;
            if key == EMPTY {
                break;
            }
            // The entry at `next` may fill the hole unless its home lies after the hole.
            let home = self.home(key);
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = FREE;
        self.len -= 1;
    }

    /// Starts loading the slot where a lookup of `key` begins.
    pub(crate) fn prefetch(&self, key: PairKey) {
        prefetch(self.slots.as_ptr().wrapping_add(self.home(key)));
    }

    fn count_at(&self, at: usize) -> u64 {
        let slot = &self.slots[at];
        if slot.count == BIG_COUNT {
            self.big_counts[&slot.key]
        } else {
            u64::from(slot.count)
        }
    }

    fn set_count_at(&mut self, at: usize, count: u64) {
        let key = self.slots[at].key;
        match u32::try_from(count)
            .ok()
            .filter(|&small| small != BIG_COUNT)
        {
            Some(small) => {
                if self.slots[at].count == BIG_COUNT {
                    self.big_counts.remove(&key);
                }
                self.slots[at].count = small;
            }
            None => {
                self.big_counts.insert(key, count);
                self.slots[at].count = BIG_COUNT;
            }
        }
    }

    /// The live count of `key` (0 when absent).
    pub(crate) fn count(&self, key: PairKey) -> u64 {
        self.find(key).map_or(0, |at| self.count_at(at))
    }

    /// Every live pair with its count, in no particular order.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (PairKey, u64)> + '_ {
        (0..self.slots.len())
            .filter(|&at| self.slots[at].key != EMPTY)
            .map(|at| (self.slots[at].key, self.count_at(at)))
    }

    /// Inserts `key`, which must be absent, with `count` (> 0) occurrences at the places recorded
    /// under `places` (from `push_places`).
    pub(crate) fn insert(&mut self, key: PairKey, count: u64, places: u32) {
        let at = self.find_or_insert(key);
        self.set_count_at(at, count);
        self.slots[at].head = places;
    }

    /// Subtracts `removed` occurrences of `key` (saturating; absent pairs are left absent).
    pub(crate) fn subtract(&mut self, key: PairKey, removed: u64) {
        if let Some(at) = self.find(key) {
            let count = self.count_at(at).saturating_sub(removed);
            if count == 0 {
                self.delete_at(at);
            } else {
                self.set_count_at(at, count);
            }
        }
    }

    /// Deletes `key` (it is being merged, so it never occurs again) and appends its places to
    /// `out` in the order they were recorded.
    pub(crate) fn take(&mut self, key: PairKey, out: &mut Vec<u32>) {
        if let Some(at) = self.find(key) {
            self.places_of(self.slots[at].head, out);
            self.delete_at(at);
        }
    }

    /// Appends the places recorded under `places` (from `push_places`) to `out`, in order.
    pub(crate) fn places_of(&self, places: u32, out: &mut Vec<u32>) {
        let block = |index: u32| self.blocks[index as usize];
        // Nearly every pair has one block (its places come from one merge); this runs once per
        // merge and per verified candidate, so skip collecting the chain for it.
        if places != NO_BLOCK && block(places).prev == NO_BLOCK {
            let Block { start, len, .. } = block(places);
            out.extend_from_slice(&self.places[start..start + len as usize]);
            return;
        }
        let mut chain = Vec::new();
        let mut block = places;
        while block != NO_BLOCK {
            chain.push(block);
            block = self.blocks[block as usize].prev;
        }
        for &block in chain.iter().rev() {
            let Block { start, len, .. } = self.blocks[block as usize];
            out.extend_from_slice(&self.places[start..start + len as usize]);
        }
    }

    /// Records `places`; the returned handle is what `insert` and `places_of` take.
    pub(crate) fn push_places(&mut self, places: &[u32]) -> Result<u32> {
        let mut head = NO_BLOCK;
        for run in places.chunks(u32::MAX as usize) {
            if self.blocks.len() >= NO_BLOCK as usize {
                return Err(Error::InvalidArgument(
                    "training needs over 4 billion place records; train on less data".into(),
                ));
            }
            self.blocks.push(Block {
                start: self.places.len(),
                len: run.len() as u32,
                prev: head,
            });
            self.places.extend_from_slice(run);
            head = (self.blocks.len() - 1) as u32;
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain map kept beside the index: every operation must agree with it, through growth,
    /// deletions that shift probe runs, and big counts (crossing u32 both ways).
    #[test]
    fn agrees_with_a_plain_map() {
        let mut index = PairIndex::with_capacity(4);
        let mut model: std::collections::HashMap<PairKey, (u64, Vec<u32>)> = Default::default();
        let mut state = 99u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let big = u64::from(u32::MAX);
        for step in 0..20_000u32 {
            // Few distinct keys, so the same ones are added, subtracted and taken many times.
            let key = ((next() % 6) << 32) | (next() % 40);
            match next() % 4 {
                0 | 1 => {
                    if model.contains_key(&key) {
                        continue;
                    }
                    let count = if next() % 50 == 0 {
                        big + next() % 3
                    } else {
                        1 + next() % 4
                    };
                    let places: Vec<u32> = (0..next() % 3).map(|i| step * 4 + i as u32).collect();
                    let handle = index.push_places(&places).unwrap();
                    index.insert(key, count, handle);
                    model.insert(key, (count, places));
                }
                2 => {
                    let removed = next() % 3;
                    index.subtract(key, removed);
                    if let Some(entry) = model.get_mut(&key) {
                        entry.0 = entry.0.saturating_sub(removed);
                        if entry.0 == 0 {
                            model.remove(&key);
                        }
                    }
                }
                _ => {
                    let mut out = vec![7];
                    index.take(key, &mut out);
                    let expected = model.remove(&key).map(|entry| entry.1).unwrap_or_default();
                    assert_eq!(out[1..], expected[..]);
                }
            }
            assert_eq!(index.count(key), model.get(&key).map_or(0, |entry| entry.0));
            assert_eq!(index.len(), model.len());
        }
        let mut listed: Vec<(PairKey, u64)> = index.pairs().collect();
        listed.sort();
        let mut expected: Vec<(PairKey, u64)> =
            model.iter().map(|(&key, entry)| (key, entry.0)).collect();
        expected.sort();
        assert_eq!(listed, expected);
        assert!(index.big_counts.len() <= index.len());
    }
}
