//! Exact lookup of short chunks by their bytes packed into one integer.
//!
//! Most chunks of running text are short (an English word with its leading space is 5-6 bytes on
//! average) and most are a whole token. A table keyed by the chunk's bytes packed little-endian into
//! a `u64` (chunks of up to 8 bytes) or a `u128` (up to 16), plus the length, answers "which token
//! is this chunk?" with one multiply, one load of a 16- or 32-byte slot, and one compare: no byte
//! loop, no pointer to follow, no `memcmp`. It is built once per tokenizer from the tokens whose
//! own bytes BPE-encode to themselves, so a first-seen word that is a token costs one probe.
//!
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

/// `len` low bytes of a little-endian word kept, the rest cleared (index: 0..=8).
const KEEP_LOW: [u64; 9] = [
    0,
    0xFF,
    0xFFFF,
    0xFF_FFFF,
    0xFFFF_FFFF,
    0xFF_FFFF_FFFF,
    0xFFFF_FFFF_FFFF,
    0xFF_FFFF_FFFF_FFFF,
    u64::MAX,
];

/// Up to 8 bytes of `text` from `start` as a little-endian word, zero above `len` bytes. One
/// unaligned load when 8 bytes are available there (the common case), else byte by byte.
#[inline(always)]
pub fn word_at(text: &[u8], start: usize, len: usize) -> u64 {
    debug_assert!(len <= 8 && start + len <= text.len());
    match text.get(start..start + 8) {
        Some(eight) => u64::from_le_bytes(eight.try_into().expect("8 bytes")) & KEEP_LOW[len],
        None => text[start..start + len]
            .iter()
            .rev()
            .fold(0, |word, &b| word << 8 | u64::from(b)),
    }
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct ShortSlot {
    key: u64,
    /// 0 marks an empty slot (no chunk is empty).
    len: u32,
    id: u32,
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct LongSlot {
    low: u64,
    high: u64,
    len: u32,
    id: u32,
}

/// Whole-token lookup for chunks of 2..=16 bytes; immutable once built (shared by all threads).
#[derive(Debug)]
pub struct WordTable {
    short: Box<[ShortSlot]>,
    short_shift: u32,
    long: Box<[LongSlot]>,
    long_shift: u32,
}

impl std::fmt::Debug for ShortSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShortSlot({:#x}, {}, {})", self.key, self.len, self.id)
    }
}

impl std::fmt::Debug for LongSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LongSlot({:#x}{:016x}, {}, {})",
            self.high, self.low, self.len, self.id
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

/// Table size for `entries`: a power of two at most half full (short probe chains), at least 16.
fn slots_for(entries: usize) -> (usize, u32) {
    let size = (entries * 2).next_power_of_two().max(16);
    (size, 64 - size.trailing_zeros())
}

impl WordTable {
    /// A table of the given (bytes, id) entries; entries outside 2..=16 bytes are ignored.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a [u8], u32)>) -> WordTable {
        let (short_entries, long_entries): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .filter(|(bytes, _)| (2..=LONG_KEY_MAX).contains(&bytes.len()))
            .partition(|(bytes, _)| bytes.len() <= SHORT_KEY_MAX);
        let (size, short_shift) = slots_for(short_entries.len());
        let mut short = vec![ShortSlot::default(); size].into_boxed_slice();
        for (bytes, id) in short_entries {
            let key = word_at(bytes, 0, bytes.len());
            let mut at = short_hash(key, bytes.len(), short_shift);
            while short[at].len != 0 {
                at = (at + 1) & (size - 1);
            }
            short[at] = ShortSlot {
                key,
                len: bytes.len() as u32,
                id,
            };
        }
        let (size, long_shift) = slots_for(long_entries.len());
        let mut long = vec![LongSlot::default(); size].into_boxed_slice();
        for (bytes, id) in long_entries {
            let (low, high) = (word_at(bytes, 0, 8), word_at(bytes, 8, bytes.len() - 8));
            let mut at = long_hash(low, high, bytes.len(), long_shift);
            while long[at].len != 0 {
                at = (at + 1) & (size - 1);
            }
            long[at] = LongSlot {
                low,
                high,
                len: bytes.len() as u32,
                id,
            };
        }
        WordTable {
            short,
            short_shift,
            long,
            long_shift,
        }
    }

    /// The token whose bytes are `text[start..start + len]` (2 <= len <= 8), if any.
    #[inline(always)]
    pub fn get_short(&self, text: &[u8], start: usize, len: usize) -> Option<u32> {
        let key = word_at(text, start, len);
        let mask = self.short.len() - 1;
        let mut at = short_hash(key, len, self.short_shift);
        loop {
            let slot = &self.short[at];
            if slot.key == key && slot.len == len as u32 {
                return Some(slot.id);
            }
            if slot.len == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// The token whose bytes are `text[start..start + len]` (8 < len <= 16), if any.
    #[inline(always)]
    pub fn get_long(&self, text: &[u8], start: usize, len: usize) -> Option<u32> {
        let low = word_at(text, start, 8);
        let high = word_at(text, start + 8, len - 8);
        let mask = self.long.len() - 1;
        let mut at = long_hash(low, high, len, self.long_shift);
        loop {
            let slot = &self.long[at];
            if slot.low == low && slot.high == high && slot.len == len as u32 {
                return Some(slot.id);
            }
            if slot.len == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// The token whose bytes are `text[start..start + len]`, for any `len` in 2..=16.
    #[inline(always)]
    pub fn get(&self, text: &[u8], start: usize, len: usize) -> Option<u32> {
        if len <= SHORT_KEY_MAX {
            self.get_short(text, start, len)
        } else {
            self.get_long(text, start, len)
        }
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
            let table = WordTable::new(map.iter().map(|(b, &id)| (b.as_slice(), id)));
            for bytes in map.keys() {
                prop_assert_eq!(table.get(bytes, 0, bytes.len()), map.get(bytes).copied());
            }
            for start in 0..text.len() {
                for len in 2..=LONG_KEY_MAX.min(text.len() - start) {
                    let want = map.get(&text[start..start + len]).copied();
                    prop_assert_eq!(table.get(&text, start, len), want);
                }
            }
        }
    }
}
