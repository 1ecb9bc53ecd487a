//! A per-thread cache of the BPE of short pieces (2..=16 bytes) that are not whole tokens.
//!
//! Whole tokens are answered by `TokenTable`; what is left of short chunks, and the pieces long
//! chunks are cut into (`Merger::split_points`), repeats a lot even in text never seen before:
//! Chinese under GPT-2's vocabulary cuts into a few thousand distinct characters and pairs. Keys are
//! the bytes packed into integers, as in `TokenTable`; each slot holds its ids inline, so a hit is one
//! probe and one small copy. The table is emptied when it is three quarters full (the working set
//! of frequent pieces refills it at once) rather than evicting entry by entry.
//!
//! Rejected: `FxHashMap<[u64; 4], (u32, u32)>` with the ids in a side vector (the chunk cache this
//! sits in front of): hashing four words and a second memory access per hit, for keys that are
//! mostly one word.

use crate::word_table::{word_at, LONG_KEY_MAX, SHORT_KEY_MAX};

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// Ids stored inline per short (<= 8 bytes) and long (9..=16 bytes) entry; pieces whose BPE has
/// more ids are not cached (they are rare: a piece that is not a token is mostly 2-3 tokens).
const SHORT_IDS: usize = 5;
const LONG_IDS: usize = 3;
/// Slots per table: 2^14 x 32 bytes = 512 KiB each.
const SLOTS: usize = 1 << 14;
const FULL: usize = SLOTS * 3 / 4;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct ShortEntry {
    key: u64,
    /// 0 marks an empty slot.
    len: u16,
    count: u16,
    ids: [u32; SHORT_IDS],
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct LongEntry {
    low: u64,
    high: u64,
    len: u16,
    count: u16,
    ids: [u32; LONG_IDS],
}

pub struct PieceCache {
    /// The `identity` of the tokenizer whose encodings this holds.
    pub owner: Option<u64>,
    short: Box<[ShortEntry]>,
    short_used: usize,
    long: Box<[LongEntry]>,
    long_used: usize,
}

impl Default for PieceCache {
    fn default() -> Self {
        PieceCache {
            owner: None,
            short: vec![ShortEntry::default(); SLOTS].into_boxed_slice(),
            short_used: 0,
            long: vec![LongEntry::default(); SLOTS].into_boxed_slice(),
            long_used: 0,
        }
    }
}

#[inline(always)]
fn short_slot(key: u64, len: usize) -> usize {
    (key.wrapping_add(len as u64).wrapping_mul(MIX) >> (64 - SLOTS.trailing_zeros())) as usize
}

#[inline(always)]
fn long_slot(low: u64, high: u64, len: usize) -> usize {
    let folded = low ^ high.rotate_left(29) ^ (len as u64) << 56;
    (folded.wrapping_mul(MIX) >> (64 - SLOTS.trailing_zeros())) as usize
}

impl PieceCache {
    /// Empties the cache and gives it to the tokenizer `owner`.
    pub fn reset(&mut self, owner: u64) {
        if self.short_used > 0 {
            self.short.fill(ShortEntry::default());
            self.short_used = 0;
        }
        if self.long_used > 0 {
            self.long.fill(LongEntry::default());
            self.long_used = 0;
        }
        self.owner = Some(owner);
    }

    /// Appends the cached ids of `text[start..start + len]` (2 <= len <= 16) to `out`; false
    /// (and `out` untouched) when the piece is not cached.
    #[inline(always)]
    pub fn get(&self, text: &[u8], start: usize, len: usize, out: &mut Vec<u32>) -> bool {
        if len <= SHORT_KEY_MAX {
            let key = word_at(text, start, len);
            let mut at = short_slot(key, len);
            loop {
                let entry = &self.short[at];
                if entry.key == key && usize::from(entry.len) == len {
                    out.extend_from_slice(&entry.ids[..usize::from(entry.count)]);
                    return true;
                }
                if entry.len == 0 {
                    return false;
                }
                at = (at + 1) & (SLOTS - 1);
            }
        }
        let (low, high) = (word_at(text, start, 8), word_at(text, start + 8, len - 8));
        let mut at = long_slot(low, high, len);
        loop {
            let entry = &self.long[at];
            if entry.low == low && entry.high == high && usize::from(entry.len) == len {
                out.extend_from_slice(&entry.ids[..usize::from(entry.count)]);
                return true;
            }
            if entry.len == 0 {
                return false;
            }
            at = (at + 1) & (SLOTS - 1);
        }
    }

    /// Remembers that `text[start..start + len]` (2 <= len <= 16, not cached yet) encodes to `ids`.
    #[inline]
    pub fn insert(&mut self, text: &[u8], start: usize, len: usize, ids: &[u32]) {
        debug_assert!((2..=LONG_KEY_MAX).contains(&len));
        if len <= SHORT_KEY_MAX {
            if ids.len() > SHORT_IDS {
                return;
            }
            if self.short_used >= FULL {
                self.short.fill(ShortEntry::default());
                self.short_used = 0;
            }
            let key = word_at(text, start, len);
            let mut at = short_slot(key, len);
            while self.short[at].len != 0 {
                at = (at + 1) & (SLOTS - 1);
            }
            let entry = &mut self.short[at];
            entry.key = key;
            entry.len = len as u16;
            entry.count = ids.len() as u16;
            entry.ids[..ids.len()].copy_from_slice(ids);
            self.short_used += 1;
        } else {
            if ids.len() > LONG_IDS {
                return;
            }
            if self.long_used >= FULL {
                self.long.fill(LongEntry::default());
                self.long_used = 0;
            }
            let (low, high) = (word_at(text, start, 8), word_at(text, start + 8, len - 8));
            let mut at = long_slot(low, high, len);
            while self.long[at].len != 0 {
                at = (at + 1) & (SLOTS - 1);
            }
            let entry = &mut self.long[at];
            entry.low = low;
            entry.high = high;
            entry.len = len as u16;
            entry.count = ids.len() as u16;
            entry.ids[..ids.len()].copy_from_slice(ids);
            self.long_used += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// After any sequence of inserts (past the point where the tables empty themselves), every
        /// hit returns exactly what was inserted for those bytes, and nothing else is a hit.
        #[test]
        fn hits_return_what_was_inserted(
            pieces in prop::collection::vec(
                (prop::collection::vec(prop::sample::select(vec![0u8, 7, 97, 200]), 2..=16),
                 prop::collection::vec(any::<u32>(), 1..=6)),
                0..300),
            rounds in 1usize..4,
        ) {
            let mut cache = PieceCache::default();
            cache.reset(1);
            let mut model: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
            for _ in 0..rounds {
                for (bytes, ids) in &pieces {
                    let mut got = vec![99];
                    if cache.get(bytes, 0, bytes.len(), &mut got) {
                        prop_assert_eq!(&got[1..], model[bytes].as_slice());
                    } else {
                        prop_assert_eq!(&got, &vec![99]);
                        cache.insert(bytes, 0, bytes.len(), ids);
                        model.insert(bytes.clone(), ids.clone());
                    }
                }
            }
        }
    }

    #[test]
    fn emptying_when_full_keeps_it_correct() {
        let mut cache = PieceCache::default();
        cache.reset(7);
        for i in 0..(SLOTS as u32 * 2) {
            let bytes = i.to_le_bytes();
            let mut out = Vec::new();
            if !cache.get(&bytes, 0, 4, &mut out) {
                cache.insert(&bytes, 0, 4, &[i, i + 1]);
            }
            assert!(cache.get(&bytes, 0, 4, &mut out));
            assert_eq!(out, [i, i + 1]);
        }
        assert!(cache.short_used <= FULL);
    }
}
