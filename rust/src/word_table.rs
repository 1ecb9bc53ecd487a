//! Exact lookup of tokens of 2..=16 bytes by their bytes packed into one integer.
//!
//! Most chunks of running text are short (an English word with its leading space is 5-6 bytes on
//! average) and most are a whole token. A table keyed by the bytes packed little-endian into a
//! `u64` (up to 8 bytes) or a `u128` (up to 16), plus the length, answers "which token is this?"
//! with one multiply, one load of a 16- or 32-byte slot, and one compare: no byte loop, no pointer
//! to follow, no `memcmp`. It holds every token of 2..=16 bytes with what encoding needs about it:
//! its id, whether its own bytes BPE-encode to it ("whole": a chunk equal to it is that token), and
//! the rank and split point of the merge that makes it. The last two answer BPE's pair question
//! by bytes: parts `a` and `b` next to each other merge exactly when the token spelled by their
//! bytes together is made by a merge whose left side is as long as `a` (token bytes are unique, so
//! equal lengths mean equal parts). One probe, instead of hashing an id pair into a hash map.
//!
//! Rejected (measured on the first unseen 1 MB of English after 1 MB of warm-up, GPT-2, table
//! lookups alone): a small second table of the tokens of the first 4096 merges probed first, to keep
//! the frequent ones in cache (3.2-3.7 -> 4.5-5.1 ms/MB: the extra probe costs more than it saves);
//! prefetching the slot of the chunk 8 ahead in the encode loop (5.1-5.7 -> 6.0-6.4 ms/MB whole
//! encode). Kept: tables at most ~2/3 full instead of 1/2 (3 MiB -> 1.5 MiB for GPT-2; lookups
//! 3.4 -> 2.2-2.6 ms/MB).
//! Rejected: the `FxHashMap<Vec<u8>, u32>` it replaces for these lengths (hashing the bytes in a
//! loop, then a pointer chase and a `memcmp` per probe: `memcmp` alone was 14% of a profile of
//! English encoding). Rejected: one table for all lengths keyed by `u128` (32-byte slots for every
//! entry: the 8-byte half, which takes most lookups, would need twice the cache).

/// Chunks of at most this many bytes are looked up with `u64` keys.
pub const SHORT_KEY_MAX: usize = 8;
/// Chunks of at most this many bytes (and more than `SHORT_KEY_MAX`) with `u128` keys.
pub const LONG_KEY_MAX: usize = 16;

/// Fibonacci hashing: the product's high bits are well mixed, and one multiply is all it costs.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// `len` low bytes of a little-endian word kept, the rest cleared (index: `len & 15`, so the
/// lookup needs no bounds check; lengths above 8 keep all 8 bytes).
const KEEP_LOW: [u64; 16] = [
    0,
    0xFF,
    0xFFFF,
    0xFF_FFFF,
    0xFFFF_FFFF,
    0xFF_FFFF_FFFF,
    0xFFFF_FFFF_FFFF,
    0xFF_FFFF_FFFF_FFFF,
    u64::MAX,
    u64::MAX,
    u64::MAX,
    u64::MAX,
    u64::MAX,
    u64::MAX,
    u64::MAX,
    u64::MAX,
];

/// Up to 8 bytes of `text` from `start` as a little-endian word, zero above `len` bytes. One
/// unaligned load when 8 bytes are available there (the common case), else byte by byte.
#[inline(always)]
pub fn word_at(text: &[u8], start: usize, len: usize) -> u64 {
    debug_assert!(len <= 8 && start + len <= text.len());
    match text.get(start..start + 8) {
        Some(eight) => u64::from_le_bytes(eight.try_into().expect("8 bytes")) & KEEP_LOW[len & 15],
        None => text[start..start + len]
            .iter()
            .rev()
            .fold(0, |word, &b| word << 8 | u64::from(b)),
    }
}

/// What the table knows of a token, packed into a `u64` (0 = empty slot): bits 0-25 its id,
/// 26-51 the rank of the merge that makes it (`NO_MERGE`: none), 52-56 the length of that merge's
/// left side, 57 "whole", 58-62 its length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenInfo(u64);

/// Rank field of a token made by no merge.
const NO_MERGE: u64 = (1 << 26) - 1;

impl TokenInfo {
    /// `rank`: of the merge that makes the token, with `split` the length of its left side; None
    /// when no merge makes it. Ids and ranks must be below 2^26 - 1 (the tokenizer's MAX_ID).
    pub fn new(id: u32, len: usize, whole: bool, merge: Option<(u32, usize)>) -> TokenInfo {
        debug_assert!((2..=LONG_KEY_MAX).contains(&len) && u64::from(id) < NO_MERGE);
        let (rank, split) = merge.map_or((NO_MERGE, 0), |(r, s)| (u64::from(r), s as u64));
        debug_assert!(rank <= NO_MERGE && split < 32);
        TokenInfo(
            u64::from(id) | rank << 26 | split << 52 | u64::from(whole) << 57 | (len as u64) << 58,
        )
    }

    #[inline(always)]
    pub fn id(self) -> u32 {
        (self.0 & ((1 << 26) - 1)) as u32
    }

    #[inline(always)]
    pub fn byte_len(self) -> usize {
        (self.0 >> 58) as usize
    }

    #[inline(always)]
    pub fn is_whole(self) -> bool {
        self.0 >> 57 & 1 == 1
    }

    /// The rank of the merge that makes the token (u32::MAX when none does).
    #[inline(always)]
    pub fn rank(self) -> u32 {
        match self.0 >> 26 & NO_MERGE {
            NO_MERGE => u32::MAX,
            rank => rank as u32,
        }
    }

    /// (rank, id) when the token is made by a merge whose left side is `split` bytes long.
    #[inline(always)]
    pub fn merge_with_split(self, split: usize) -> Option<(u32, u32)> {
        let rank = self.0 >> 26 & NO_MERGE;
        let its_split = (self.0 >> 52 & 31) as usize;
        (rank != NO_MERGE && its_split == split).then(|| (rank as u32, self.id()))
    }
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct ShortSlot {
    key: u64,
    info: u64,
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct LongSlot {
    low: u64,
    high: u64,
    info: u64,
}

/// Every token of 2..=16 bytes, by its bytes; immutable once built (shared by all threads).
pub struct TokenTable {
    short: Box<[ShortSlot]>,
    short_shift: u32,
    long: Box<[LongSlot]>,
    long_shift: u32,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenTable({} + {} slots)",
            self.short.len(),
            self.long.len()
        )
    }
}

#[inline(always)]
fn short_hash(key: u64, len: usize, shift: u32) -> usize {
    (key.wrapping_add(len as u64).wrapping_mul(MIX) >> shift) as usize
}

#[inline(always)]
fn long_hash(low: u64, high: u64, len: usize, shift: u32) -> usize {
    let folded = low ^ high.rotate_left(29) ^ (len as u64) << 56;
    (folded.wrapping_mul(MIX) >> shift) as usize
}

/// Table size for `entries`: the smallest power of two at most ~2/3 full (short probe chains, and
/// half the cache footprint of a half-full table: lookups of text never seen before are bound by
/// cache misses on this table), at least 16.
fn slots_for(entries: usize) -> (usize, u32) {
    let size = (entries * 3 / 2 + 1).next_power_of_two().max(16);
    (size, 64 - size.trailing_zeros())
}

/// Linear probing for (key, len) in `slots` (a power of two long, `shift` = 64 - log2 of it).
#[inline(always)]
fn probe(slots: &[ShortSlot], shift: u32, key: u64, len: usize) -> Option<TokenInfo> {
    let mask = slots.len() - 1;
    let mut at = short_hash(key, len, shift);
    loop {
        debug_assert!(at < slots.len());
        // SAFETY: the hash is shifted down to log2(len) bits and probing wraps with `mask`, so
        // `at` is always below the table's (power-of-two) length.
        let slot = unsafe { *slots.get_unchecked(at) };
        if slot.key == key && TokenInfo(slot.info).byte_len() == len {
            return Some(TokenInfo(slot.info));
        }
        if slot.info == 0 {
            return None;
        }
        at = (at + 1) & mask;
    }
}

impl TokenTable {
    /// A table of the given (bytes, info) entries; entries outside 2..=16 bytes are ignored, and
    /// of two entries with the same bytes the first is kept.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a [u8], TokenInfo)>) -> TokenTable {
        let (short_entries, long_entries): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .filter(|(bytes, _)| (2..=LONG_KEY_MAX).contains(&bytes.len()))
            .partition(|(bytes, _)| bytes.len() <= SHORT_KEY_MAX);
        let (size, short_shift) = slots_for(short_entries.len());
        let mut short = vec![ShortSlot::default(); size].into_boxed_slice();
        for (bytes, info) in short_entries {
            let key = word_at(bytes, 0, bytes.len());
            let mut at = short_hash(key, bytes.len(), short_shift);
            while short[at].info != 0 {
                if short[at].key == key && TokenInfo(short[at].info).byte_len() == bytes.len() {
                    break;
                }
                at = (at + 1) & (size - 1);
            }
            if short[at].info == 0 {
                short[at] = ShortSlot { key, info: info.0 };
            }
        }
        let (size, long_shift) = slots_for(long_entries.len());
        let mut long = vec![LongSlot::default(); size].into_boxed_slice();
        for (bytes, info) in long_entries {
            let (low, high) = (word_at(bytes, 0, 8), word_at(bytes, 8, bytes.len() - 8));
            let mut at = long_hash(low, high, bytes.len(), long_shift);
            while long[at].info != 0 {
                let slot = long[at];
                if slot.low == low
                    && slot.high == high
                    && TokenInfo(slot.info).byte_len() == bytes.len()
                {
                    break;
                }
                at = (at + 1) & (size - 1);
            }
            if long[at].info == 0 {
                long[at] = LongSlot {
                    low,
                    high,
                    info: info.0,
                };
            }
        }
        TokenTable {
            short,
            short_shift,
            long,
            long_shift,
        }
    }

    /// The token spelled by `text[start..start + len]` (2 <= len <= 8), if any.
    #[inline(always)]
    pub fn get_short(&self, text: &[u8], start: usize, len: usize) -> Option<TokenInfo> {
        let key = word_at(text, start, len);
        probe(&self.short, self.short_shift, key, len)
    }

    /// The token spelled by `text[start..start + len]` (8 < len <= 16), if any.
    #[inline(always)]
    pub fn get_long(&self, text: &[u8], start: usize, len: usize) -> Option<TokenInfo> {
        let low = word_at(text, start, 8);
        let high = word_at(text, start + 8, len - 8);
        let mask = self.long.len() - 1;
        let mut at = long_hash(low, high, len, self.long_shift);
        loop {
            debug_assert!(at < self.long.len());
            // SAFETY: as in `get_short`.
            let slot = unsafe { *self.long.get_unchecked(at) };
            if slot.low == low && slot.high == high && TokenInfo(slot.info).byte_len() == len {
                return Some(TokenInfo(slot.info));
            }
            if slot.info == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// The token spelled by `text[start..start + len]`, for any `len` in 2..=16.
    #[inline(always)]
    pub fn get(&self, text: &[u8], start: usize, len: usize) -> Option<TokenInfo> {
        if len <= SHORT_KEY_MAX {
            self.get_short(text, start, len)
        } else {
            self.get_long(text, start, len)
        }
    }

    /// The whole token that `text[start..start + len]` (2..=16 bytes) encodes to, if it is one.
    #[inline(always)]
    pub fn whole(&self, text: &[u8], start: usize, len: usize) -> Option<u32> {
        self.get(text, start, len)
            .and_then(|info| info.is_whole().then(|| info.id()))
    }

    /// BPE's pair question by bytes: the (rank, id) of the merge of the part `text[start..split]`
    /// with the part `text[split..end]` (`end - start` in 2..=16), None when they do not merge.
    #[inline(always)]
    pub fn pair(&self, text: &[u8], start: usize, split: usize, end: usize) -> Option<(u32, u32)> {
        self.get(text, start, end - start)?
            .merge_with_split(split - start)
    }

    /// Bytes of memory the slots take.
    pub fn memory(&self) -> usize {
        std::mem::size_of_val(&*self.short) + std::mem::size_of_val(&*self.long)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn words_are_the_zero_padded_bytes_wherever_they_sit() {
        let text: Vec<u8> = (1..=40u8).map(|b| b.wrapping_mul(71)).collect();
        for start in 0..text.len() {
            for len in 0..=8.min(text.len() - start) {
                let mut padded = [0u8; 8];
                padded[..len].copy_from_slice(&text[start..start + len]);
                assert_eq!(word_at(&text, start, len), u64::from_le_bytes(padded));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Lookups equal a HashMap's, for present and absent keys, at every offset in a text
        /// (including the end, where the word is not loaded in one piece), with NUL bytes so that
        /// keys that differ only by trailing zeros must be told apart by their lengths.
        #[test]
        fn lookups_equal_a_hash_map(
            entries in prop::collection::vec(prop::collection::vec(prop::sample::select(vec![0u8, 1, 97, 98, 255]), 2..=16), 0..200),
            text in prop::collection::vec(prop::sample::select(vec![0u8, 1, 97, 98, 255]), 0..64),
        ) {
            let mut map: HashMap<Vec<u8>, u32> = HashMap::new();
            for (i, bytes) in entries.iter().enumerate() {
                map.entry(bytes.clone()).or_insert(i as u32);
            }
            let info = |bytes: &[u8], id: u32| {
                TokenInfo::new(id, bytes.len(), id % 2 == 0, (id % 3 != 0).then(|| (id * 7, 1 + id as usize % (bytes.len() - 1))))
            };
            let table = TokenTable::new(map.iter().map(|(b, &id)| (b.as_slice(), info(b, id))));
            for (bytes, &id) in &map {
                let found = table.get(bytes, 0, bytes.len());
                prop_assert_eq!(found, Some(info(bytes, id)));
                let found = found.unwrap();
                prop_assert_eq!((found.id(), found.byte_len(), found.is_whole()), (id, bytes.len(), id % 2 == 0));
                for split in 1..bytes.len() {
                    let want = (id % 3 != 0 && split == 1 + id as usize % (bytes.len() - 1)).then(|| (id * 7, id));
                    prop_assert_eq!(table.pair(bytes, 0, split, bytes.len()), want);
                }
            }
            for start in 0..text.len() {
                for len in 2..=LONG_KEY_MAX.min(text.len() - start) {
                    let want = map.get(&text[start..start + len]).map(|&id| info(&text[start..start + len], id));
                    prop_assert_eq!(table.get(&text, start, len), want);
                }
            }
        }
    }
}
