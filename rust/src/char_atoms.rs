//! Multibyte characters that BPE provably forms whole before anything else touches their bytes
//! ("atoms"), so that BPE of a chunk may start from them as single symbols instead of from their
//! 2 or 3 bytes each (characters of the BMP; which chunks take this path: `CharAtoms::applies`).
//!
//! Why: under vocabularies with many multi-character CJK tokens (o200k, cl100k, one trained on
//! Chinese) a run of Chinese has no byte boundary that no merge can join, so the byte-level path
//! (`Merger::split_points`) cannot cut it and every character costs two or three merges (each a
//! scan and two pair lookups) before the merges that matter. Starting from atoms removes those,
//! and the run can be cut between two atoms that no token holds side by side.
//!
//! A character c (a token spelling exactly one character) is an atom when BPE of c's bytes alone
//! gives the token c (`whole`). Starting from c at one occurrence is exact when, in addition, no
//! token covers part of c together with bytes outside it at that occurrence: such a token either
//! ends in a proper prefix of c ("head", checked against the bytes before c) or starts with a
//! proper suffix of c ("tail", checked against the bytes after c). Then:
//! - no merge crosses c's boundaries before c is whole (its product would be such a token), so
//!   c's own merges commute with every other merge and happen exactly as BPE of c alone;
//! - a merge with c as an operand ranks after the merge that makes c (merge lists are checked
//!   to be in BPE order when a tokenizer is built), so none fires earlier than it would have.
//!
//! The sequence of the remaining merges, hence the result, is the same. Two adjacent atoms a, b
//! whose bytes side by side occur in no token can never be joined (the product of a merge across
//! them would hold all of a followed by all of b), so the chunk is cut there and each segment
//! encodes alone, exactly as in `Merger::split_points`.
//!
//! The proof is checked by tests against the byte-level encoder, the naive reference and
//! tiktoken, on vocabularies rich in such fragment tokens.

use rustc_hash::FxHashMap;

use crate::encode::{pair_key, Merger, SHORT_CHUNK};

/// No atom for this code point (in `CharAtoms::slot`).
const NOT_ATOM: u16 = 0;

/// Where an atom may not be pre-formed: the byte strings that, right before it, complete a head
/// token, and those that, right after it, complete a tail token. Most occurrences are cleared by
/// one bit test of the byte next to the character.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
struct Rule {
    /// Bit b set: some string of `before` ends with byte b.
    before_last: [u64; 4],
    /// Bit b set: some string of `after` starts with byte b.
    after_first: [u64; 4],
    before: Vec<Vec<u8>>,
    after: Vec<Vec<u8>>,
}

fn has_bit(set: &[u64; 4], byte: u8) -> bool {
    set[usize::from(byte >> 6)] >> (byte & 63) & 1 == 1
}

fn set_bit(set: &mut [u64; 4], byte: u8) {
    set[usize::from(byte >> 6)] |= 1 << (byte & 63);
}

impl Rule {
    fn new(mut before: Vec<Vec<u8>>, mut after: Vec<Vec<u8>>) -> Rule {
        before.sort();
        before.dedup();
        after.sort();
        after.dedup();
        let mut rule = Rule::default();
        for s in &before {
            set_bit(&mut rule.before_last, s[s.len() - 1]);
        }
        for s in &after {
            set_bit(&mut rule.after_first, s[0]);
        }
        rule.before = before;
        rule.after = after;
        rule
    }

    /// Whether a head or tail token may cover part of the character at `chunk[start..end]`.
    #[inline]
    fn blocks(&self, chunk: &[u8], start: usize, end: usize) -> bool {
        (start > 0
            && has_bit(&self.before_last, chunk[start - 1])
            && self.before.iter().any(|s| chunk[..start].ends_with(s)))
            || (end < chunk.len()
                && has_bit(&self.after_first, chunk[end])
                && self.after.iter().any(|s| chunk[end..].starts_with(s)))
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0xC0 == 0x80
}

/// Length of the UTF-8 sequence a byte leads (1 for ASCII, continuation and invalid bytes).
fn sequence_len(byte: u8) -> usize {
    match byte {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

/// The character of 2 or 3 bytes at `bytes[at..]`, as (code point, length), when it is complete
/// and well-formed (no overlong form, no surrogate). Atoms are kept for the BMP only.
#[inline(always)]
fn bmp_char_at(bytes: &[u8], at: usize) -> Option<(u32, usize)> {
    let lead = *bytes.get(at)?;
    let cont = |k: usize| {
        bytes
            .get(at + k)
            .copied()
            .filter(|&b| is_continuation(b))
            .map(|b| u32::from(b & 0x3F))
    };
    match lead {
        0xC2..=0xDF => Some(((u32::from(lead & 0x1F) << 6) | cont(1)?, 2)),
        0xE0..=0xEF => {
            let cp = (u32::from(lead & 0x0F) << 12) | (cont(1)? << 6) | cont(2)?;
            (cp >= 0x800 && !(0xD800..0xE000).contains(&cp)).then_some((cp, 3))
        }
        _ => None,
    }
}

/// Fewer three-byte atoms than this, and chunks keep the byte-level path. With few of them most
/// CJK characters stay as bytes, the chunk is not cut between them, and the byte-level path (cut
/// wherever no merge joins two bytes, short pieces cached) does better: GPT-2 (141 CJK characters
/// are tokens) encoded Chinese at 40 MB/s from atoms against 75 from bytes (one core, 300k-char
/// slices of songci.txt); cl100k (549) at ~40 against ~22, o200k (2515) at ~50 against ~18.
pub(crate) const MIN_THREE_BYTE_ATOMS: usize = 300;

/// Bits of the one-hash filter per pair of adjacent atoms it holds: false positives (a cut not
/// taken) stay under a few percent, and the filter of a 200k vocabulary stays in L2.
const FILTER_BITS_PER_PAIR: usize = 16;

pub(crate) struct CharAtoms {
    /// BMP code point -> index into `atoms` (NOT_ATOM: none). Empty when there are no atoms.
    slot: Box<[u16]>,
    /// (token id, index into `rules`; 0 = no rule, pre-formable anywhere). Entry 0 is unused.
    atoms: Vec<(u32, u32)>,
    rules: Vec<Rule>,
    /// Pairs of atoms that occur side by side in some token, as bits of a one-hash filter.
    pairs: Box<[u64]>,
    /// Bit `id` set: token `id` spells whole three-byte characters only (CJK, kana, Hangul...).
    three_byte: Box<[u64]>,
    /// (left, right) -> (rank, made) of the merges of two such tokens: all the merges a run of
    /// CJK atoms can take, in a table a small fraction of the whole merge table's size (~5k of
    /// o200k's 200k), so that their lookups stay in cache.
    three_byte_merges: FxHashMap<u64, (u32, u32)>,
}

impl CharAtoms {
    /// No atoms: every chunk keeps the byte-level path.
    pub(crate) fn none() -> CharAtoms {
        CharAtoms {
            slot: Box::new([]),
            atoms: Vec::new(),
            rules: Vec::new(),
            pairs: Box::new([0]),
            three_byte: Box::new([]),
            three_byte_merges: FxHashMap::default(),
        }
    }

    /// The atoms of a vocabulary: `tokens` with `whole[i]` saying whether BPE of the bytes of
    /// `tokens[i]` gives that token.
    /// `merges`: (left, right, made) of every merge, in rank order. With fewer than
    /// `min_three_byte_atoms` atoms of three bytes there are none (`MIN_THREE_BYTE_ATOMS`).
    pub(crate) fn new(
        tokens: &[(u32, Vec<u8>)],
        whole: &[bool],
        merges: impl IntoIterator<Item = (u32, u32, u32)>,
        min_three_byte_atoms: usize,
    ) -> CharAtoms {
        let mut atoms = vec![(u32::MAX, 0)];
        let mut atom_bytes: Vec<(u32, &[u8])> = Vec::new();
        for ((id, bytes), &is_whole) in tokens.iter().zip(whole) {
            if is_whole && (2..=3).contains(&bytes.len()) {
                if let Some((cp, len)) = bmp_char_at(bytes, 0) {
                    if len == bytes.len() && atoms.len() < usize::from(u16::MAX) {
                        atom_bytes.push((cp, bytes));
                        atoms.push((*id, 0));
                    }
                }
            }
        }
        let three_byte_atoms = atom_bytes.iter().filter(|(_, b)| b.len() == 3).count();
        if atom_bytes.is_empty() || three_byte_atoms < min_three_byte_atoms {
            return CharAtoms::none();
        }
        let (heads, tails) = partial_character_tokens(tokens);
        let mut slot = vec![NOT_ATOM; 1 << 16].into_boxed_slice();
        let mut rules = vec![Rule::default()];
        let mut rule_index: FxHashMap<Rule, u32> = FxHashMap::default();
        rule_index.insert(Rule::default(), 0);
        for (k, &(cp, bytes)) in atom_bytes.iter().enumerate() {
            let index = k + 1;
            slot[cp as usize] = index as u16;
            let mut before = Vec::new();
            let mut after = Vec::new();
            for cut in 1..bytes.len() {
                before.extend(heads.get(&bytes[..cut]).into_iter().flatten().cloned());
                after.extend(tails.get(&bytes[cut..]).into_iter().flatten().cloned());
            }
            if before.is_empty() && after.is_empty() {
                continue;
            }
            let rule = Rule::new(before, after);
            let next = rules.len() as u32;
            let at = *rule_index.entry(rule.clone()).or_insert(next);
            if at == next {
                rules.push(rule);
            }
            atoms[index].1 = at;
        }
        let pairs = adjacent_atom_filter(tokens, &slot);
        let three_byte = three_byte_ids(tokens);
        let mut atoms = CharAtoms {
            slot,
            atoms,
            rules,
            pairs,
            three_byte,
            three_byte_merges: FxHashMap::default(),
        };
        for (rank, (left, right, made)) in merges.into_iter().enumerate() {
            if atoms.is_three_byte(left) && atoms.is_three_byte(right) {
                atoms
                    .three_byte_merges
                    .insert(pair_key(left, right), (rank as u32, made));
            }
        }
        atoms
    }

    #[inline(always)]
    fn is_three_byte(&self, id: u32) -> bool {
        self.three_byte
            .get(id as usize / 64)
            .is_some_and(|word| word >> (id % 64) & 1 == 1)
    }

    /// (rank, made) of a pair, or (u32::MAX, _) when it is no merge: from the small table when
    /// both are three-byte tokens (then any merge of them is in it), else from the whole one.
    #[inline(always)]
    fn rank_made(&self, merger: &Merger, left: u32, right: u32) -> (u32, u32) {
        if self.is_three_byte(left) && self.is_three_byte(right) {
            self.three_byte_merges
                .get(&pair_key(left, right))
                .copied()
                .unwrap_or((u32::MAX, u32::MAX))
        } else {
            merger.rank_made(left, right)
        }
    }

    /// Whether `chunk` is worth encoding from atoms: it holds a CJK or Hangul character (lead
    /// bytes E3..ED) or a Cyrillic one (D0..D3). Continuation bytes are below all of them, so any
    /// such byte leads a character; a chunk often starts with a fullwidth comma (lead byte EF), so
    /// the first non-ASCII byte alone is not the test.
    /// Measured for other scripts (one core, unseen Debian handbook text, 4 alternated runs each,
    /// lowest-highest MB/s, bytes -> atoms): Russian o200k 34-45 -> 41-51, cl100k 40-49 -> 44-54;
    /// Arabic o200k 46-56 -> 44-61, cl100k 52-68 -> 40-64; in single runs Greek, German and
    /// Vietnamese (o200k) were slower from atoms. Only Cyrillic joined CJK.
    #[inline]
    pub(crate) fn applies(&self, chunk: &[u8]) -> bool {
        !self.slot.is_empty()
            && chunk
                .iter()
                .any(|&b| matches!(b, 0xD0..=0xD3 | 0xE3..=0xED))
    }

    /// The atom token for the character `cp` at `chunk[start..end]`, when pre-forming it there is
    /// exact (see the module docs).
    #[inline(always)]
    fn atom_at(&self, chunk: &[u8], start: usize, end: usize, cp: u32) -> Option<u32> {
        let index = self.slot.get(cp as usize).copied().unwrap_or(NOT_ATOM);
        if index == NOT_ATOM {
            return None;
        }
        let (id, rule) = self.atoms[usize::from(index)];
        if rule != 0 && self.rules[rule as usize].blocks(chunk, start, end) {
            return None;
        }
        Some(id)
    }

    /// Whether some token may hold atom `first` directly followed by atom `second` (never false
    /// when one does).
    #[inline(always)]
    fn may_join(&self, first: u32, second: u32) -> bool {
        let bit = filter_bit(char_pair_key(first, second), self.pairs.len() * 64);
        self.pairs[bit / 64] >> (bit % 64) & 1 == 1
    }

    /// Appends the BPE encoding of `chunk` to `out`, starting from its atoms and cutting between
    /// atoms that no token joins. Segments of more than `SHORT_CHUNK` symbols (a long run with no
    /// cut) are encoded from their bytes by `Merger::encode_unsplit`: a cut is final, so BPE of a
    /// segment's bytes alone equals its part of the whole.
    pub(crate) fn encode(&self, merger: &Merger, chunk: &[u8], out: &mut Vec<u32>) {
        let mut segment = [0u32; SHORT_CHUNK];
        let mut symbols = 0;
        let mut segment_start = 0;
        // The code point of the segment's last symbol when that is an atom.
        let mut last_atom: Option<u32> = None;
        let flush =
            |segment: &[u32; SHORT_CHUNK], symbols: usize, bytes: &[u8], out: &mut Vec<u32>| {
                if symbols <= SHORT_CHUNK {
                    merger.encode_ids(&segment[..symbols], out, |left, right| {
                        self.rank_made(merger, left, right)
                    });
                } else {
                    merger.encode_unsplit(bytes, out);
                }
            };
        let mut at = 0;
        while at < chunk.len() {
            let byte = chunk[at];
            if byte >= 0xC2 {
                if let Some((cp, len)) = bmp_char_at(chunk, at) {
                    if let Some(id) = self.atom_at(chunk, at, at + len, cp) {
                        if last_atom.is_some_and(|before| !self.may_join(before, cp)) {
                            flush(&segment, symbols, &chunk[segment_start..at], out);
                            segment_start = at;
                            symbols = 0;
                        }
                        if symbols < SHORT_CHUNK {
                            segment[symbols] = id;
                        }
                        symbols += 1;
                        last_atom = Some(cp);
                        at += len;
                        continue;
                    }
                }
            }
            if symbols < SHORT_CHUNK {
                segment[symbols] = merger.byte_id(byte);
            }
            symbols += 1;
            last_atom = None;
            at += 1;
        }
        flush(&segment, symbols, &chunk[segment_start..], out);
    }

    /// Number of atoms.
    pub(crate) fn len(&self) -> usize {
        self.atoms.len().saturating_sub(1)
    }

    /// Number of distinct rules, the empty one included.
    #[cfg(test)]
    pub(crate) fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

impl std::fmt::Debug for CharAtoms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CharAtoms")
            .field("atoms", &self.atoms.len().saturating_sub(1))
            .field("rules", &self.rules.len())
            .field("pair_filter_bits", &(self.pairs.len() * 64))
            .finish()
    }
}

/// The pair filter's key of two adjacent characters (code points fit in 21 bits).
fn char_pair_key(first: u32, second: u32) -> u64 {
    u64::from(first) << 21 | u64::from(second)
}

/// Tokens holding part of a character plus bytes outside it, by that part. Heads: outside bytes
/// followed by a proper prefix of a character (keyed by the prefix, valued by the outside bytes).
/// Tails: a proper suffix of a character followed by outside bytes (likewise).
type Fragments<'a> = FxHashMap<&'a [u8], Vec<Vec<u8>>>;

fn partial_character_tokens(tokens: &[(u32, Vec<u8>)]) -> (Fragments<'_>, Fragments<'_>) {
    let mut heads = Fragments::default();
    let mut tails = Fragments::default();
    for (_, bytes) in tokens {
        let leading = bytes.iter().take_while(|&&b| is_continuation(b)).count();
        if leading > 0 && leading < bytes.len() {
            tails
                .entry(&bytes[..leading])
                .or_default()
                .push(bytes[leading..].to_vec());
        }
        if let Some(last_lead) = bytes.iter().rposition(|&b| !is_continuation(b)) {
            if last_lead > 0 && sequence_len(bytes[last_lead]) > bytes.len() - last_lead {
                heads
                    .entry(&bytes[last_lead..])
                    .or_default()
                    .push(bytes[..last_lead].to_vec());
            }
        }
    }
    (heads, tails)
}

/// The one-hash filter of the pairs of atoms (`slot`) that occur side by side in some token.
fn adjacent_atom_filter(tokens: &[(u32, Vec<u8>)], slot: &[u16]) -> Box<[u64]> {
    let mut adjacent: Vec<u64> = Vec::new();
    for (_, bytes) in tokens {
        // Every byte offset, not just character starts: a token may begin mid-character.
        for at in 0..bytes.len() {
            let Some((first, len)) = bmp_char_at(bytes, at) else {
                continue;
            };
            if slot[first as usize] == NOT_ATOM {
                continue;
            }
            if let Some((second, _)) = bmp_char_at(bytes, at + len) {
                if slot[second as usize] != NOT_ATOM {
                    adjacent.push(char_pair_key(first, second));
                }
            }
        }
    }
    adjacent.sort_unstable();
    adjacent.dedup();
    let bits = (adjacent.len() * FILTER_BITS_PER_PAIR)
        .next_power_of_two()
        .max(1 << 12);
    let mut pairs = vec![0u64; bits / 64].into_boxed_slice();
    for key in adjacent {
        let bit = filter_bit(key, bits);
        pairs[bit / 64] |= 1 << (bit % 64);
    }
    pairs
}

/// Bit `id` set for every token that spells whole three-byte characters only.
fn three_byte_ids(tokens: &[(u32, Vec<u8>)]) -> Box<[u64]> {
    let id_bound = tokens
        .iter()
        .map(|(id, _)| *id as usize + 1)
        .max()
        .unwrap_or(0);
    let mut three_byte = vec![0u64; id_bound.div_ceil(64)].into_boxed_slice();
    for (id, bytes) in tokens {
        if all_three_byte_chars(bytes) {
            three_byte[*id as usize / 64] |= 1 << (id % 64);
        }
    }
    three_byte
}

/// Whether `bytes` is a non-empty run of complete, well-formed three-byte characters.
fn all_three_byte_chars(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() % 3 == 0
        && (0..bytes.len())
            .step_by(3)
            .all(|at| bmp_char_at(bytes, at).is_some_and(|(_, len)| len == 3))
}

fn filter_bit(key: u64, bits: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (bits - 1)
}
