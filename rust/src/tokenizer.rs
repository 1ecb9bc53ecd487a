//! A validated tokenizer: tokens, merges, special tokens and the pre-tokenization pattern, with
//! encoding (ordinary, with special tokens, batched in parallel) and decoding.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::char_atoms::{CharAtoms, MIN_THREE_BYTE_ATOMS};
use crate::encode::Merger;
use crate::error::{Error, Result};
use crate::piece_cache::PieceCache;
use crate::pretokenize::Pattern;
use crate::threads::with_threads;
use crate::word_table::{TokenInfo, TokenTable, LONG_KEY_MAX};

/// Ids above this are refused (far above any real vocabulary; models index embedding tables by id).
pub const MAX_ID: u32 = (1 << 26) - 1;
/// The decode table is indexed by id up to the last id that keeps it at most twice as long as the
/// number of tokens, plus this many: ids scattered above that (a special token given id 2^26 - 1)
/// go to a hash map, so a small vocab file never allocates a table as large as its largest id.
const DENSE_SLACK: usize = 1024;
/// Zero bytes after the decode table, so that `decode_into` can copy a token of at most this many
/// bytes as a fixed-size block (its bytes and then some, overwritten by the next token).
const DECODE_PAD: usize = 16;
/// Texts at least this long are encoded on several threads by `encode_parallel`; shorter ones are
/// not worth a thread hand-off.
const PARALLEL_MIN_BYTES: usize = 1 << 18;
/// Parts per thread in `encode_parallel`, so that threads that finish early take more.
const PARTS_PER_THREAD: usize = 4;
/// How far back from an even fraction of the text `parallel_cuts` looks for a safe cut.
const CUT_SEARCH_BYTES: usize = 1 << 16;
/// Chunks at most this long are remembered by the per-thread cache (longer ones are rarely
/// repeated, and caching a chunk that never comes back costs two allocations).
const CACHED_CHUNK_MAX: usize = 32;
/// The cache is emptied when it holds this many chunks, bounding its memory.
const CACHE_CAPACITY: usize = 1 << 16;

/// Gives each tokenizer an identity, so a thread's cache is never used across tokenizers.
static NEXT_TOKENIZER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// One cache per thread, kept across calls (encode_batch of many small documents reuses it).
    static THREAD_CACHE: std::cell::RefCell<ChunkCache> = std::cell::RefCell::new(ChunkCache::default());
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cached chunk's bytes stored inline as little-endian words (zero-padded), so lookups and
/// insertions never allocate.
/// Rejected: `FxHashMap<Vec<u8>, Vec<u32>>`, which cost two allocations per insertion and a free
/// per entry on every clear (malloc/free were ~18% of a profile of Chinese gpt2 encoding).
/// Rejected: a zeroed `[u8; 32]` filled by `copy_from_slice`, a `memcpy` call per chunk whose
/// narrow stores the key's wide loads then had to wait for. Building the words from loads of the
/// chunk saved little (7.5 MB of Chinese: best of 9 runs 283 -> 259 ms, medians within noise):
/// the hot spot after it is the cache miss on the table entry, not the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    words: [u64; CACHED_CHUNK_MAX / 8],
    len: u8,
}

impl CacheKey {
    /// None for chunks too long to cache.
    fn new(chunk: &[u8]) -> Option<CacheKey> {
        if chunk.len() > CACHED_CHUNK_MAX {
            return None;
        }
        let mut words = [0u64; CACHED_CHUNK_MAX / 8];
        for (word, bytes) in words.iter_mut().zip(chunk.chunks(8)) {
            *word = load_word(bytes);
        }
        Some(CacheKey {
            words,
            len: chunk.len() as u8,
        })
    }
}

/// Up to 8 bytes as a little-endian u64 (zero above them), from at most three loads that stay
/// inside `bytes`: two overlapping ones cover any length from 4 to 8, and three single bytes any
/// length from 1 to 3 (where they overlap they carry the same byte).
#[inline]
fn load_word(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    let u32_at = |i: usize| {
        u64::from(u32::from_le_bytes([
            bytes[i],
            bytes[i + 1],
            bytes[i + 2],
            bytes[i + 3],
        ]))
    };
    match n {
        8.. => u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
        4..=7 => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
        1..=3 => {
            u64::from(bytes[0])
                | u64::from(bytes[n / 2]) << (8 * (n / 2))
                | u64::from(bytes[n - 1]) << (8 * (n - 1))
        }
        0 => 0,
    }
}

/// Remembers the encoding of chunks that are not single tokens (frequent words split in two...).
///
/// Rejected (measured, no clear gain): one per-thread two-way set-associative table for chunks of
/// 2..=24 bytes, 64-byte slots holding the key inline and up to 8 ids, filled with whole tokens
/// and BPE results alike (one probe and one cache line per chunk, older entry of a full set
/// evicted instead of clearing everything). With 2^16 and 2^17 slots (4 / 8 MiB per thread),
/// Chinese gpt2 encoding (4 MB, ~64 KB documents) stayed within run-to-run noise of this
/// design (0.236-0.278 s against 0.240-0.289 s) and one 0.25 MB English call looked no
/// better. The bound is the corpus: ~542k chunks, ~188k distinct, so about a third are first
/// occurrences that must run BPE whatever the cache does (`Merger::encode` stayed ~20% of a
/// profile).
#[derive(Default)]
pub struct ChunkCache {
    /// The `identity` of the tokenizer whose encodings `map` holds.
    owner: Option<u64>,
    /// Short pieces (the cache in front of this one).
    pieces: PieceCache,
    /// Chunk -> (start, len) of its ids in `ids`.
    map: FxHashMap<CacheKey, (u32, u32)>,
    /// The ids of all cached chunks, back to back; emptied together with `map`.
    ids: Vec<u32>,
    hits: u64,
    misses: u64,
}

impl ChunkCache {
    /// Empties the cache (keeping its allocations) and gives it to the tokenizer `owner`.
    fn reset(&mut self, owner: u64) {
        self.owner = Some(owner);
        self.pieces.reset(owner);
        self.map.clear();
        self.ids.clear();
        self.hits = 0;
        self.misses = 0;
    }

    /// Text whose chunks rarely repeat (Chinese clauses under the gpt2 pattern) would only pay
    /// for insertions: after a warm-up, keep inserting only while at least a third of lookups hit.
    fn worth_inserting(&self) -> bool {
        self.misses < 4096 || self.hits * 2 >= self.misses
    }
}

/// Which special tokens an encode call turns into their ids; the rest of the text is ordinary.
pub struct SpecialMatcher {
    finder: AhoCorasick,
    ids: Vec<u32>,
}

#[derive(Debug)]
pub struct Tokenizer {
    pattern: Pattern,
    merger: Merger,
    merges: Vec<(u32, u32)>,
    /// Non-special tokens in id order.
    tokens: Vec<(u32, Vec<u8>)>,
    /// Tokens whose own bytes BPE-encode to themselves: a chunk equal to one is that token.
    whole: FxHashMap<Vec<u8>, u32>,
    /// (first byte, length) of the keys of `whole`, as bits: most chunks that are no token
    /// (long Chinese clauses above all) fail this 8 KiB test and skip hashing and probing the
    /// whole-token map, which misses the caches.
    whole_shapes: WholeShapes,
    /// Every token of 2..=16 bytes by its bytes: the whole-token lookup for short chunks (`whole`
    /// holds only longer ones), and BPE's pair lookup for short pieces.
    table: TokenTable,
    /// Multibyte characters a chunk's BPE may start from (see `CharAtoms`).
    atoms: CharAtoms,
    specials: Vec<(String, u32)>,
    /// id -> (start, len) in `decode_bytes` for the ids below its length; len u32::MAX = no such id.
    decode_spans: Vec<(u32, u32)>,
    /// The same for the ids at or above `decode_spans.len()`.
    sparse_spans: FxHashMap<u32, (u32, u32)>,
    decode_bytes: Vec<u8>,
    /// Max id + 1 over tokens and special tokens.
    vocab_size: usize,
    /// Matcher for all special tokens (the common "allowed_special='all'" case).
    all_specials: Option<Arc<SpecialMatcher>>,
    identity: u64,
}

/// A set of (first byte, length) shapes of byte strings up to `WHOLE_TOKEN_MAX_LEN` long.
#[derive(Debug)]
struct WholeShapes {
    bits: Vec<[u64; WHOLE_TOKEN_MAX_LEN / 64 + 1]>,
}

impl Default for WholeShapes {
    fn default() -> Self {
        WholeShapes {
            bits: vec![[0; WHOLE_TOKEN_MAX_LEN / 64 + 1]; 256],
        }
    }
}

impl WholeShapes {
    fn add(&mut self, bytes: &[u8]) {
        if let (Some(&first), len @ ..=WHOLE_TOKEN_MAX_LEN) = (bytes.first(), bytes.len()) {
            self.bits[first as usize][len / 64] |= 1 << (len % 64);
        }
    }

    /// False when no string of this shape was added.
    fn contains(&self, bytes: &[u8]) -> bool {
        match (bytes.first(), bytes.len()) {
            (Some(&first), len @ ..=WHOLE_TOKEN_MAX_LEN) => {
                self.bits[first as usize][len / 64] >> (len % 64) & 1 == 1
            }
            _ => false,
        }
    }
}

/// Longest token kept in the whole-chunk lookup (the longest GPT-2, cl100k and o200k tokens
/// are 128 bytes or shorter; longer chunks still encode exactly, through BPE).
const WHOLE_TOKEN_MAX_LEN: usize = 256;

/// Room for the ids of `text`: at most one per byte, so the vector never grows while encoding.
/// A third of the bytes (English needs about a quarter) made Chinese, at ~1.3 bytes per id,
/// reallocate and copy twice per call; pages reserved but never written cost no memory. Capped
/// so a huge text does not ask for 4 bytes of address space per byte up front.
fn id_capacity(text: &str) -> usize {
    text.len().min(1 << 24)
}

/// The decode table of validated tokens and special tokens (distinct ids): `(dense spans, sparse
/// spans, bytes, vocab size)`. Its memory is bounded by the entries given, whatever their ids (see
/// `DENSE_SLACK`).
#[allow(clippy::type_complexity)]
fn build_decode_table(
    tokens: &[(u32, Vec<u8>)],
    specials: &[(String, u32)],
) -> Result<(Vec<(u32, u32)>, FxHashMap<u32, (u32, u32)>, Vec<u8>, usize)> {
    let mut entries: Vec<(u32, &[u8])> = tokens
        .iter()
        .map(|(id, b)| (*id, b.as_slice()))
        .chain(specials.iter().map(|(t, id)| (*id, t.as_bytes())))
        .collect();
    entries.sort_unstable_by_key(|(id, _)| *id);
    let vocab_size = entries.last().map_or(0, |(id, _)| *id as usize + 1);
    // The k-th smallest id (from 0) may be dense while id < 2 (k + 1) + DENSE_SLACK.
    let dense_len = entries
        .iter()
        .enumerate()
        .rev()
        .find(|(k, (id, _))| (*id as usize) < 2 * (k + 1) + DENSE_SLACK)
        .map_or(0, |(_, (id, _))| *id as usize + 1);
    let mut dense = vec![(0u32, u32::MAX); dense_len];
    let mut sparse: FxHashMap<u32, (u32, u32)> = FxHashMap::default();
    let mut bytes = Vec::new();
    for (id, value) in entries {
        let start = u32::try_from(bytes.len()).map_err(|_| {
            Error::invalid_data(
                "token bytes exceed 4 GiB in total",
                format!("token id {id}"),
            )
        })?;
        let span = (start, value.len() as u32);
        match dense.get_mut(id as usize) {
            Some(slot) => *slot = span,
            None => {
                sparse.insert(id, span);
            }
        }
        bytes.extend_from_slice(value);
    }
    bytes.extend_from_slice(&[0; DECODE_PAD]);
    Ok((dense, sparse, bytes, vocab_size))
}

impl std::fmt::Debug for SpecialMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecialMatcher")
            .field("ids", &self.ids)
            .finish()
    }
}

impl Tokenizer {
    /// Validates everything and builds the lookup tables; errors name the bad entry.
    pub fn new(
        tokens: Vec<(u32, Vec<u8>)>,
        merges: Vec<(u32, u32)>,
        specials: Vec<(String, u32)>,
        pattern: Pattern,
    ) -> Result<Tokenizer> {
        Self::build(tokens, merges, specials, pattern, false)
    }

    /// A vocab given as tokens in rank order without merges (tiktoken rank files, the report's bare
    /// map): the merges are recovered (`recover_merges`), then everything is validated as in `new`.
    /// Recovery BPE-encodes every token with the merges before it and finds exactly the two parts
    /// its own merge joins, so every token is proven whole on the way (BPE with all merges applies
    /// the same lower-ranked merges first, then that one): the separate proof `new` runs per token
    /// is skipped. For o200k that proof was ~0.4 s of loading.
    pub fn from_ranks(
        tokens: Vec<(u32, Vec<u8>)>,
        specials: Vec<(String, u32)>,
        pattern: Pattern,
    ) -> Result<Tokenizer> {
        let merges = crate::recover::recover_merges(&tokens)?;
        Self::build(tokens, merges, specials, pattern, true)
    }

    fn build(
        mut tokens: Vec<(u32, Vec<u8>)>,
        merges: Vec<(u32, u32)>,
        specials: Vec<(String, u32)>,
        pattern: Pattern,
        all_whole: bool,
    ) -> Result<Tokenizer> {
        tokens.sort_by_key(|(id, _)| *id);
        let mut id_of: FxHashMap<&[u8], u32> = FxHashMap::default();
        let mut previous_id: Option<u32> = None;
        let mut byte_ids = [u32::MAX; 256];
        for (id, bytes) in &tokens {
            let where_ = || format!("token id {id}");
            if *id > MAX_ID {
                return Err(Error::invalid_data(
                    format!("id exceeds the maximum {MAX_ID}"),
                    where_(),
                ));
            }
            if previous_id == Some(*id) {
                return Err(Error::invalid_data("duplicate id", where_()));
            }
            previous_id = Some(*id);
            if bytes.is_empty() {
                return Err(Error::invalid_data("empty token bytes", where_()));
            }
            if let Some(other) = id_of.insert(bytes.as_slice(), *id) {
                return Err(Error::invalid_data(
                    format!("bytes {} duplicate those of token id {other}", hex(bytes)),
                    where_(),
                ));
            }
            if bytes.len() == 1 {
                byte_ids[bytes[0] as usize] = *id;
            }
        }
        if let Some(missing) = byte_ids.iter().position(|&id| id == u32::MAX) {
            return Err(Error::invalid_data(
                "no token for this single byte",
                format!("byte {missing:02x}"),
            ));
        }

        let bytes_of: FxHashMap<u32, &[u8]> =
            tokens.iter().map(|(id, b)| (*id, b.as_slice())).collect();
        let mut merger = Merger::new(byte_ids);
        let mut produced: FxHashMap<u32, usize> = FxHashMap::default();
        // made_by_rank[rank]: the id merge `rank` makes.
        let mut made_by_rank: Vec<u32> = Vec::with_capacity(merges.len());
        for (rank, &(left, right)) in merges.iter().enumerate() {
            let where_ = || format!("merge {rank} ({left}, {right})");
            let (Some(l), Some(r)) = (bytes_of.get(&left), bytes_of.get(&right)) else {
                let unknown = if bytes_of.contains_key(&left) {
                    right
                } else {
                    left
                };
                return Err(Error::invalid_data(
                    format!("unknown token id {unknown}"),
                    where_(),
                ));
            };
            // BPE applies merges in rank order, so a merge can only join single bytes and tokens
            // that earlier merges made; a list in any other order encodes differently from the
            // order it was trained in (GPT-2's files, tiktoken ranks and our trainer all comply).
            for operand in [left, right] {
                if bytes_of[&operand].len() > 1 && !produced.contains_key(&operand) {
                    return Err(Error::invalid_data(
                        format!(
                            "uses token id {operand}, which no earlier merge makes (merges must be \
                             listed in the order BPE applies them)"
                        ),
                        where_(),
                    ));
                }
            }
            let joined = [*l, *r].concat();
            let Some(&made) = id_of.get(joined.as_slice()) else {
                return Err(Error::invalid_data(
                    format!("the merged bytes {} are not a token", hex(&joined)),
                    where_(),
                ));
            };
            if let Some(earlier) = produced.insert(made, rank) {
                return Err(Error::invalid_data(
                    format!("token id {made} is already made by merge {earlier}"),
                    where_(),
                ));
            }
            made_by_rank.push(made);
            if !merger.push(left, right, made) {
                return Err(Error::invalid_data("duplicate merge", where_()));
            }
        }
        for (id, bytes) in &tokens {
            if bytes.len() > 1 && !produced.contains_key(id) {
                return Err(Error::invalid_data(
                    format!("token {} is made by no merge", hex(bytes)),
                    format!("token id {id}"),
                ));
            }
        }

        let mut special_names: FxHashSet<&str> = FxHashSet::default();
        let mut special_ids: FxHashSet<u32> = FxHashSet::default();
        for (text, id) in &specials {
            let where_ = || format!("special token {text:?}");
            if text.is_empty() {
                return Err(Error::invalid_data("empty special token", where_()));
            }
            if *id > MAX_ID {
                return Err(Error::invalid_data(
                    format!("id {id} exceeds the maximum {MAX_ID}"),
                    where_(),
                ));
            }
            if !special_names.insert(text) {
                return Err(Error::invalid_data("duplicate special token", where_()));
            }
            if bytes_of.contains_key(id) || !special_ids.insert(*id) {
                return Err(Error::invalid_data(
                    format!("id {id} is already used"),
                    where_(),
                ));
            }
        }

        // A chunk equal to a token's bytes may skip BPE only if BPE would give that token anyway.
        // Only a shortcut, so tokens longer than WHOLE_TOKEN_MAX_LEN are left out: proving them
        // costs a BPE run each, and training on one long run ("aaaa...") makes tokens of up to
        // half the run's length, whose checks took longer than the training itself.
        let is_whole: Vec<bool> = if all_whole {
            tokens
                .iter()
                .map(|(_, bytes)| (2..=WHOLE_TOKEN_MAX_LEN).contains(&bytes.len()))
                .collect()
        } else {
            with_threads(0, || {
                tokens
                    .par_iter()
                    .map(|(id, bytes)| {
                        if !(2..=WHOLE_TOKEN_MAX_LEN).contains(&bytes.len()) {
                            return false;
                        }
                        let mut parts = Vec::new();
                        merger.encode(bytes, &mut parts);
                        parts == [*id]
                    })
                    .collect()
            })?
        };
        let whole: FxHashMap<Vec<u8>, u32> = tokens
            .iter()
            .zip(&is_whole)
            .filter(|((_, bytes), &is)| is && bytes.len() > LONG_KEY_MAX)
            .map(|((id, bytes), _)| (bytes.clone(), *id))
            .collect();
        let mut whole_shapes = WholeShapes::default();
        for bytes in whole.keys() {
            whole_shapes.add(bytes);
        }
        let table = TokenTable::new(
            tokens
                .iter()
                .zip(&is_whole)
                .filter(|((_, bytes), _)| (2..=LONG_KEY_MAX).contains(&bytes.len()))
                .map(|((id, bytes), &is)| {
                    let merge = produced
                        .get(id)
                        .map(|&rank| (rank as u32, bytes_of[&merges[rank].0].len()));
                    (
                        bytes.as_slice(),
                        TokenInfo::new(*id, bytes.len(), is, merge),
                    )
                }),
        );

        let atoms = if merger.is_monotone() {
            let merges_made = merges.iter().zip(&made_by_rank);
            CharAtoms::new(
                &tokens,
                &is_whole,
                merges_made.map(|(&(left, right), &made)| (left, right, made)),
                MIN_THREE_BYTE_ATOMS,
            )
        } else {
            CharAtoms::none()
        };

        let (decode_spans, sparse_spans, decode_bytes, vocab_size) =
            build_decode_table(&tokens, &specials)?;

        let mut tokenizer = Tokenizer {
            pattern,
            merger,
            merges,
            tokens,
            whole,
            whole_shapes,
            table,
            atoms,
            specials,
            decode_spans,
            sparse_spans,
            decode_bytes,
            vocab_size,
            all_specials: None,
            identity: NEXT_TOKENIZER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let all: Vec<String> = tokenizer.specials.iter().map(|(t, _)| t.clone()).collect();
        tokenizer.all_specials = tokenizer.build_matcher(&all)?.map(Arc::new);
        Ok(tokenizer)
    }

    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    pub fn tokens(&self) -> &[(u32, Vec<u8>)] {
        &self.tokens
    }

    pub fn specials(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// How many characters chunks may start BPE from as whole tokens (`char_atoms.rs`); 0 when
    /// this vocabulary keeps the byte-level path.
    pub fn char_atom_count(&self) -> usize {
        self.atoms.len()
    }

    /// Max id + 1 over tokens and special tokens (like tiktoken's n_vocab).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        let (start, len) = self.span(u64::from(id), 0)?;
        Ok(&self.decode_bytes[start..start + len])
    }

    /// (start, len) of token `id` in the decode table; an unknown id is an error naming it and
    /// `position` (its index in the ids being decoded).
    #[inline]
    fn span(&self, id: u64, position: usize) -> Result<(usize, usize)> {
        let found = match usize::try_from(id)
            .ok()
            .and_then(|i| self.decode_spans.get(i))
        {
            Some(span) => Some(span),
            None => self.sparse_span(id),
        };
        match found {
            Some(&(start, len)) if len != u32::MAX => Ok((start as usize, len as usize)),
            _ => Err(Error::UnknownId { id, position }),
        }
    }

    /// Kept out of line: most vocabularies have no sparse ids, and `span` stays small.
    #[inline(never)]
    fn sparse_span(&self, id: u64) -> Option<&(u32, u32)> {
        if self.sparse_spans.is_empty() {
            return None;
        }
        self.sparse_spans.get(&u32::try_from(id).ok()?)
    }

    /// Appends the tokens of the chunk `text[start..start + len]` (`text` is the whole text, so
    /// short chunks can be loaded as words: see `TokenTable`). The two outcomes of most chunks (a
    /// single byte, a whole token of at most 16 bytes) are inline; the rest is out of line, so the
    /// loop over a batch of chunks stays small.
    #[inline(always)]
    fn encode_chunk(
        &self,
        text: &[u8],
        start: usize,
        len: usize,
        out: &mut Vec<u32>,
        cache: &mut ChunkCache,
    ) {
        if len <= LONG_KEY_MAX {
            self.encode_short_piece(text, start, len, out, cache);
        } else {
            self.encode_long_chunk(text, start, len, out, cache);
        }
    }

    /// A chunk of more than 16 bytes: a whole token, a cached chunk, or BPE of its pieces.
    #[inline(never)]
    fn encode_long_chunk(
        &self,
        text: &[u8],
        start: usize,
        len: usize,
        out: &mut Vec<u32>,
        cache: &mut ChunkCache,
    ) {
        let chunk = &text[start..start + len];
        if self.whole_shapes.contains(chunk) {
            if let Some(&id) = self.whole.get(chunk) {
                out.push(id);
                return;
            }
        }
        let Some(key) = CacheKey::new(chunk) else {
            self.encode_pieces(text, start, len, out, cache);
            return;
        };
        if let Some(&(start, len)) = cache.map.get(&key) {
            out.extend_from_slice(&cache.ids[start as usize..(start + len) as usize]);
            cache.hits += 1;
            return;
        }
        cache.misses += 1;
        let at = out.len();
        self.encode_pieces(text, start, len, out, cache);
        if cache.worth_inserting() {
            if cache.map.len() >= CACHE_CAPACITY {
                // clear() keeps both allocations, so a refill costs no reallocation.
                cache.map.clear();
                cache.ids.clear();
            }
            let made = &out[at..];
            cache
                .map
                .insert(key, (cache.ids.len() as u32, made.len() as u32));
            cache.ids.extend_from_slice(made);
        }
    }

    /// A piece of 2..=16 bytes that is not a whole token: cached, or BPE (then cached).
    #[inline(never)]
    fn encode_piece_not_whole(
        &self,
        text: &[u8],
        start: usize,
        len: usize,
        out: &mut Vec<u32>,
        cache: &mut ChunkCache,
    ) {
        if cache.pieces.get(text, start, len, out) {
            return;
        }
        let at = out.len();
        self.encode_pieces(text, start, len, out, cache);
        cache.pieces.insert(text, start, len, &out[at..]);
    }

    /// A piece of at most 16 bytes: its byte, a whole token, a cached piece, or BPE (whose result
    /// is then cached).
    #[inline(always)]
    fn encode_short_piece(
        &self,
        text: &[u8],
        start: usize,
        len: usize,
        out: &mut Vec<u32>,
        cache: &mut ChunkCache,
    ) {
        if len == 1 {
            out.push(self.merger.byte_id(text[start]));
            return;
        }
        match self.table.whole(text, start, len) {
            Some(id) => out.push(id),
            None => self.encode_piece_not_whole(text, start, len, out, cache),
        }
    }

    /// BPE of `text[start..start + n]` (2 <= n <= 16), the pair question answered by bytes
    /// (`TokenTable::pair`: one probe of the table short chunks use anyway, instead of hashing an id
    /// pair). The scan for the lowest rank is `Merger::encode_short`'s (arrays of fixed size, a
    /// merged-away part keeps NO_RANK, `next`/`prev` link the live ones), here at 16 entries so
    /// that setting them up is a few vector stores rather than a `memset` call.
    fn bpe_by_bytes(&self, text: &[u8], start: usize, n: usize, out: &mut Vec<u32>) {
        const N: usize = LONG_KEY_MAX;
        const NONE: (u32, u32) = (u32::MAX, u32::MAX);
        debug_assert!((2..=N).contains(&n));
        let pair = |a: usize, b: usize, c: usize| {
            self.table
                .pair(text, start + a, start + b, start + c)
                .unwrap_or(NONE)
        };
        let mut sym = [0u32; N];
        let mut rank = [u32::MAX; N];
        let mut made = [0u32; N];
        // next[i]: where the part after part i starts (n: none); parts keep their first offset.
        let mut next = [0u8; N];
        let mut prev = [0u8; N];
        for i in 0..n {
            sym[i] = self.merger.byte_id(text[start + i]);
            next[i] = i as u8 + 1;
            prev[i] = i.saturating_sub(1) as u8;
        }
        for i in 0..n - 1 {
            (rank[i], made[i]) = self.merger.byte_pair(text[start + i], text[start + i + 1]);
        }
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            // Strict `<`: the leftmost of equal ranks wins.
            for (i, &r) in rank[..n - 1].iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            let right = usize::from(next[at]);
            let after = usize::from(next[right]);
            sym[at] = made[at];
            rank[right] = u32::MAX;
            next[at] = after as u8;
            if after < n {
                prev[after] = at as u8;
                let end = usize::from(next[after]);
                (rank[at], made[at]) = pair(at, after, end);
            } else {
                rank[at] = u32::MAX;
            }
            if at > 0 {
                let before = usize::from(prev[at]);
                (rank[before], made[before]) = pair(before, at, after);
            }
        }
        let mut i = 0;
        while i < n {
            out.push(sym[i]);
            i = usize::from(next[i]);
        }
    }

    /// BPE of `text[start..start + len]` as a whole: cut where no merge can join
    /// (`Merger::split_points`), short pieces through `encode_short_piece` (most repeat), the rest
    /// by BPE.
    fn encode_pieces(
        &self,
        text: &[u8],
        start: usize,
        len: usize,
        out: &mut Vec<u32>,
        cache: &mut ChunkCache,
    ) {
        let chunk = &text[start..start + len];
        // Rejected: taking CJK chunks to the atoms before the chunk cache (fastokens skips its cache
        // for such runs). On unseen songci.txt slices with o200k, 3 runs each alternated: 34-50
        // MB/s against 37-54 with the cache first, whose hits (repeated phrases) paid for its misses.
        if self.atoms.applies(chunk) {
            self.atoms.encode(&self.merger, chunk, out);
            return;
        }
        let mut piece_start = 0;
        let cuts = self.merger.split_points(chunk);
        for end in cuts.chain(std::iter::once(len)) {
            let piece_len = end - piece_start;
            if piece_len == len {
                // Nothing to cut: BPE of the whole.
                if len <= LONG_KEY_MAX {
                    self.bpe_by_bytes(text, start, len, out);
                } else {
                    self.merger.encode_unsplit(chunk, out);
                }
            } else if piece_len <= LONG_KEY_MAX {
                self.encode_short_piece(text, start + piece_start, piece_len, out, cache);
            } else {
                self.merger.encode_unsplit(&chunk[piece_start..end], out);
            }
            piece_start = end;
        }
    }

    fn encode_ordinary_into(
        &self,
        text: &str,
        out: &mut Vec<u32>,
        cache: &mut ChunkCache,
    ) -> Result<()> {
        let bytes = text.as_bytes();
        let batched = self.pattern.for_each_batch(text, &mut |mut start, ends| {
            // At least one id per chunk: reserve so the pushes below never reallocate.
            // Rejected: prefetching the token-table slot of the chunk 8 (or 3) chunks ahead, though
            // the probe's load is ~30% of this loop's samples on unseen English. GPT-2, 10.7 MB of
            // prose, one call per 500 KB, 4-5 alternated runs: 157-174 MB/s with 8 ahead and 182-188
            // with 3, against 178-207 without (the out-of-order core already overlaps the misses of
            // neighbouring chunks; the prefetch doubles the hashing).
            out.reserve(ends.len());
            for &end in ends {
                self.encode_chunk(bytes, start, end - start, out, cache);
                start = end;
            }
        });
        if batched {
            return Ok(());
        }
        self.pattern.for_each_span(text, &mut |start, end| {
            self.encode_chunk(bytes, start, end - start, out, cache)
        })
    }

    /// Runs `work` with this thread's chunk cache, emptied first if it belongs to another tokenizer.
    fn with_cache<R>(&self, work: impl FnOnce(&mut ChunkCache) -> R) -> R {
        THREAD_CACHE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut cache) => {
                if cache.owner != Some(self.identity) {
                    cache.reset(self.identity);
                }
                work(&mut cache)
            }
            // Only reachable by re-entrance (a thread already inside an encode): use a fresh cache.
            Err(_) => work(&mut ChunkCache::default()),
        })
    }

    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(id_capacity(text));
        self.with_cache(|cache| self.encode_ordinary_into(text, &mut out, cache))?;
        Ok(out)
    }

    /// A matcher for the allowed special tokens (leftmost-longest), or None when none is allowed.
    pub fn special_matcher(&self, allowed: &[String]) -> Result<Option<Arc<SpecialMatcher>>> {
        if allowed.is_empty() {
            return Ok(None);
        }
        let all = self.all_specials.as_ref();
        if allowed.len() == self.specials.len() && all.is_some() {
            let known: FxHashSet<&str> = self.specials.iter().map(|(t, _)| t.as_str()).collect();
            let wanted: FxHashSet<&str> = allowed.iter().map(String::as_str).collect();
            if known == wanted {
                return Ok(all.cloned());
            }
        }
        Ok(self.build_matcher(allowed)?.map(Arc::new))
    }

    fn build_matcher(&self, allowed: &[String]) -> Result<Option<SpecialMatcher>> {
        if allowed.is_empty() {
            return Ok(None);
        }
        let mut ids = Vec::with_capacity(allowed.len());
        for text in allowed {
            let id = self
                .specials
                .iter()
                .find(|(t, _)| t == text)
                .map(|(_, id)| *id)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("{text:?} is not a special token"))
                })?;
            ids.push(id);
        }
        let finder = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(allowed)
            .map_err(|e| Error::InvalidArgument(format!("special tokens: {e}")))?;
        Ok(Some(SpecialMatcher { finder, ids }))
    }

    fn encode_into(
        &self,
        text: &str,
        specials: Option<&SpecialMatcher>,
        out: &mut Vec<u32>,
        cache: &mut ChunkCache,
    ) -> Result<()> {
        let Some(matcher) = specials else {
            return self.encode_ordinary_into(text, out, cache);
        };
        let mut start = 0;
        for found in matcher.finder.find_iter(text) {
            self.encode_ordinary_into(&text[start..found.start()], out, cache)?;
            out.push(matcher.ids[found.pattern().as_usize()]);
            start = found.end();
        }
        self.encode_ordinary_into(&text[start..], out, cache)
    }

    pub fn encode(&self, text: &str, specials: Option<&SpecialMatcher>) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(id_capacity(text));
        self.with_cache(|cache| self.encode_into(text, specials, &mut out, cache))?;
        Ok(out)
    }

    /// `encode` of one text on up to `num_threads` threads (0 = all cores): a text of at least
    /// `PARALLEL_MIN_BYTES` under a built-in pattern is cut where chunking is known to restart
    /// (`count::last_safe_cut`: after a newline between non-spaces, or between a letter and plain
    /// punctuation, the places streaming training cuts files at) and never inside an allowed
    /// special token; the parts are encoded at once and their ids joined. The ids are those of
    /// `encode`, since both halves of a safe cut chunk exactly as inside the whole text.
    pub fn encode_parallel(
        &self,
        text: &str,
        specials: Option<&SpecialMatcher>,
        num_threads: usize,
    ) -> Result<Vec<u32>> {
        let threads = if num_threads == 0 {
            crate::threads::default_threads()
        } else {
            num_threads
        };
        if threads < 2 || text.len() < PARALLEL_MIN_BYTES || !self.pattern.is_builtin_split() {
            return self.encode(text, specials);
        }
        let cuts = self.parallel_cuts(text, specials, threads * PARTS_PER_THREAD);
        if cuts.len() < 3 {
            return self.encode(text, specials);
        }
        let parts: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        let encoded = with_threads(threads, || {
            parts
                .par_iter()
                .map(|part| self.encode(part, specials))
                .collect::<Result<Vec<_>>>()
        })??;
        let mut ids = Vec::with_capacity(encoded.iter().map(Vec::len).sum());
        for part in encoded {
            ids.extend_from_slice(&part);
        }
        Ok(ids)
    }

    /// 0, the safe cuts near `parts` even fractions of `text` (none inside an allowed special
    /// token), and `text.len()`.
    fn parallel_cuts(
        &self,
        text: &str,
        specials: Option<&SpecialMatcher>,
        parts: usize,
    ) -> Vec<usize> {
        let bytes = text.as_bytes();
        let specials_at: Vec<(usize, usize)> = specials.map_or_else(Vec::new, |m| {
            m.finder
                .find_iter(text)
                .map(|found| (found.start(), found.end()))
                .collect()
        });
        let inside_special = |at: usize| {
            let i = specials_at.partition_point(|&(_, end)| end <= at);
            specials_at.get(i).is_some_and(|&(start, _)| start < at)
        };
        let step = text.len() / parts;
        let mut cuts = vec![0];
        for k in 1..parts {
            let want = k * step;
            let from = *cuts.last().expect("starts with 0");
            // A bounded search back: text with no safe cut nearby is simply cut less often.
            let floor = from.max(want.saturating_sub(CUT_SEARCH_BYTES));
            if let Some(at) = crate::count::last_safe_cut(bytes, floor, want) {
                if at > from && !inside_special(at) {
                    cuts.push(at);
                }
            }
        }
        cuts.push(text.len());
        cuts
    }

    /// Each text encoded on its own, in parallel; results in input order.
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        specials: Option<&SpecialMatcher>,
        num_threads: usize,
    ) -> Result<Vec<Vec<u32>>> {
        with_threads(num_threads, || {
            texts
                .par_iter()
                .map(|text| self.encode(text.as_ref(), specials))
                .collect::<Result<Vec<_>>>()
        })?
    }

    /// All texts' ids concatenated (each optionally preceded by `prefix`) and the end offset of
    /// each text in that stream.
    pub fn encode_batch_flat<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        specials: Option<&SpecialMatcher>,
        num_threads: usize,
        prefix: Option<u32>,
    ) -> Result<(Vec<u32>, Vec<u64>)> {
        if let Some(id) = prefix {
            self.token_bytes(id)?;
        }
        let per_text = self.encode_batch(texts, specials, num_threads)?;
        let total: usize = per_text
            .iter()
            .map(|ids| ids.len() + usize::from(prefix.is_some()))
            .sum();
        let mut ids = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(per_text.len());
        for text_ids in per_text {
            ids.extend(prefix);
            ids.extend_from_slice(&text_ids);
            ends.push(ids.len() as u64);
        }
        Ok((ids, ends))
    }

    /// The byte length of the decoding of `ids`; the first unknown id is an error naming it and
    /// its position.
    pub fn decoded_len(&self, ids: &[u32]) -> Result<usize> {
        let mut total = 0usize;
        for (position, &id) in ids.iter().enumerate() {
            total += self.span(u64::from(id), position)?.1;
        }
        Ok(total)
    }

    /// Writes the exact bytes of `ids` into `out`, which must be `decoded_len(ids)` bytes long
    /// (the two let the binding size a Python bytes object first and fill it in place).
    pub fn decode_into(&self, ids: &[u32], out: &mut [u8]) -> Result<()> {
        let table = &self.decode_bytes;
        let given = out.len();
        let wrong_size = || {
            Error::InvalidArgument(format!(
                "decode_into: {given} bytes given, not the decoded length of the ids"
            ))
        };
        let mut at = 0;
        for (position, &id) in ids.iter().enumerate() {
            let (start, len) = self.span(u64::from(id), position)?;
            // Most tokens are short: one fixed-size copy beats a memcpy call of `len` bytes. The
            // table's padding keeps `start + DECODE_PAD` in it; the bytes written past `len` are
            // overwritten by the next token (the room check keeps them inside `out`).
            if len <= DECODE_PAD && out.len() - at >= DECODE_PAD {
                out[at..at + DECODE_PAD].copy_from_slice(&table[start..start + DECODE_PAD]);
            } else {
                let Some(dest) = out.get_mut(at..at + len) else {
                    return Err(wrong_size());
                };
                dest.copy_from_slice(&table[start..start + len]);
            }
            at += len;
        }
        if at != out.len() {
            return Err(wrong_size());
        }
        Ok(())
    }

    /// The exact bytes of `ids`; the first unknown id is an error naming it and its position.
    pub fn decode_bytes(&self, ids: impl IntoIterator<Item = u64>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (position, id) in ids.into_iter().enumerate() {
            let (start, len) = self.span(id, position)?;
            out.extend_from_slice(&self.decode_bytes[start..start + len]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::count::ChunkCounter;
    use crate::train::{train_merges, TrainOptions};
    use proptest::prelude::*;

    fn trained(text: &str, pattern: Pattern, merges: usize) -> Tokenizer {
        let mut counter = ChunkCounter::new(pattern.clone(), 1);
        counter.add_texts(&[text]).unwrap();
        let options = TrainOptions {
            num_merges: merges,
            min_frequency: 1,
            max_token_length: None,
            num_threads: 1,
        };
        let counts = counter.counts().iter().map(|(b, n)| (b.as_slice(), *n));
        let merges = train_merges(counts, &options, &mut |_| Ok(())).unwrap();
        let mut tokens: Vec<(u32, Vec<u8>)> =
            (0..=255u8).map(|b| (u32::from(b), vec![b])).collect();
        for (k, &(l, r)) in merges.iter().enumerate() {
            let joined = [tokens[l as usize].1.clone(), tokens[r as usize].1.clone()].concat();
            tokens.push((256 + k as u32, joined));
        }
        let special_id = tokens.len() as u32;
        Tokenizer::new(
            tokens,
            merges,
            vec![("<|endoftext|>".into(), special_id)],
            pattern,
        )
        .unwrap()
    }

    /// `tok` with the atoms of its vocabulary however few (small test vocabularies fall below
    /// `MIN_THREE_BYTE_ATOMS`, which would leave the atom path unused).
    fn with_every_atom(mut tok: Tokenizer) -> Tokenizer {
        let whole: Vec<bool> = tok
            .tokens
            .iter()
            .map(|(id, bytes)| crate::encode::naive::encode(&tok.merger, bytes) == [*id])
            .collect();
        let id_of: FxHashMap<&[u8], u32> = tok
            .tokens
            .iter()
            .map(|(id, b)| (b.as_slice(), *id))
            .collect();
        let bytes_of: FxHashMap<u32, &[u8]> = tok
            .tokens
            .iter()
            .map(|(id, b)| (*id, b.as_slice()))
            .collect();
        let merges = tok.merges.iter().map(|&(left, right)| {
            let joined = [bytes_of[&left], bytes_of[&right]].concat();
            (left, right, id_of[joined.as_slice()])
        });
        tok.atoms = CharAtoms::new(&tok.tokens, &whole, merges.collect::<Vec<_>>(), 0);
        tok
    }

    fn naive_encode(tok: &Tokenizer, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for chunk in tok.pattern.split(text).unwrap() {
            out.extend(crate::encode::naive::encode(&tok.merger, chunk.as_bytes()));
        }
        out
    }

    const SAMPLE: &str = "the cat sat on the mat; the dog ate the hat. aaaa aaaaaaa 三国演义 三国 ";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn encode_matches_naive_and_roundtrips(text in "[a-z .;三国演义\n]{0,80}", raw in any::<bool>()) {
            let pattern = if raw { Pattern::Raw } else { Pattern::Gpt2 };
            let tok = trained(&SAMPLE.repeat(3), pattern, 60);
            let ids = tok.encode_ordinary(&text).unwrap();
            prop_assert_eq!(&ids, &naive_encode(&tok, &text));
            let decoded = tok.decode_bytes(ids.iter().map(|&i| u64::from(i))).unwrap();
            prop_assert_eq!(decoded, text.as_bytes());
        }
    }

    /// Characters for the atom path (`CharAtoms`): CJK, kana, Hangul, fullwidth punctuation,
    /// Cyrillic, a two-byte Latin letter, ASCII. Trained without pre-tokenization ("raw") the
    /// merges join bytes across character boundaries early, so the vocabularies are full of head
    /// and tail tokens (a partial character plus its neighbour), the case the atoms' rules exist
    /// for.
    const ATOM_TEXT: &str = "[三国演义中的人天下大事分久必合，。「」あいうカ한국어приветé a\n]";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn atom_path_equals_byte_bpe(
            training in proptest::string::string_regex(&format!("{ATOM_TEXT}{{10,120}}")).unwrap(),
            text in proptest::string::string_regex(&format!("{ATOM_TEXT}{{0,60}}")).unwrap(),
            cut in any::<(usize, usize)>(),
            raw in any::<bool>(),
            merges in 10usize..300,
        ) {
            let pattern = if raw { Pattern::Raw } else { Pattern::O200k };
            let tok = with_every_atom(trained(&training.repeat(3), pattern, merges));
            let bytes = text.as_bytes();
            // The atom path alone, on the whole text and on a piece cut anywhere (even inside a
            // character), against BPE from single bytes.
            let (a, b) = (cut.0 % (bytes.len() + 1), cut.1 % (bytes.len() + 1));
            for piece in [bytes, &bytes[a.min(b)..a.max(b)]] {
                let mut from_atoms = Vec::new();
                tok.atoms.encode(&tok.merger, piece, &mut from_atoms);
                prop_assert_eq!(from_atoms, crate::encode::naive::encode(&tok.merger, piece));
            }
            prop_assert_eq!(tok.encode_ordinary(&text).unwrap(), naive_encode(&tok, &text));
        }
    }

    #[test]
    fn atoms_and_their_rules_are_found_and_used() {
        let training =
            "三国演义，天下大事，分久必合，合久必分。三国的人天下한국어あいう привет мир".repeat(5);
        // A vocabulary with fewer than MIN_THREE_BYTE_ATOMS of them keeps the byte-level path.
        let few = trained(&training, Pattern::Raw, 300);
        assert_eq!(few.atoms.len(), 0);
        assert!(!few.atoms.applies(training.as_bytes()));
        let tok = with_every_atom(few);
        // Some characters are atoms, and some of them have head or tail tokens to check.
        assert!(tok.atoms.len() > 3, "{:?}", tok.atoms);
        assert!(tok.atoms.rule_count() > 1, "{:?}", tok.atoms);
        for text in [
            training.as_str(),
            "天下大事",
            "，三国。",
            "한국어 三 é",
            "привет",
        ] {
            assert!(tok.atoms.applies(text.as_bytes()));
            assert_eq!(tok.encode_ordinary(text).unwrap(), naive_encode(&tok, text));
        }
        assert!(!tok.atoms.applies(b"plain ascii"));
    }

    #[test]
    fn from_ranks_equals_new_with_the_recovered_merges() {
        let tok = trained(&SAMPLE.repeat(3), Pattern::Gpt2, 60);
        let specials = tok.specials().to_vec();
        let ranked = Tokenizer::from_ranks(tok.tokens().to_vec(), specials, Pattern::Gpt2).unwrap();
        assert_eq!(ranked.merges(), tok.merges());
        for text in [SAMPLE, "aaaa aaaaaaa the thethe", "三国演义三国"] {
            assert_eq!(
                ranked.encode_ordinary(text).unwrap(),
                tok.encode_ordinary(text).unwrap()
            );
        }
    }

    #[test]
    fn parallel_encoding_equals_one_thread() {
        let tok = trained(&SAMPLE.repeat(3), Pattern::Gpt2, 60);
        let line =
            "the cat sat, on the mat; the dog ate the hat.\n三国演义 第一回,宴桃园豪杰三结义\n";
        let mut text = line.repeat(PARALLEL_MIN_BYTES / line.len() + 50);
        text.insert_str(text.len() / 2, "<|endoftext|>");
        text.insert_str(text.len() / 3, "<|endoftext|>");
        let matcher = tok.special_matcher(&["<|endoftext|>".to_string()]).unwrap();
        for specials in [None, matcher.as_deref()] {
            let one = tok.encode(&text, specials).unwrap();
            for threads in [2, 3, 8] {
                assert_eq!(tok.encode_parallel(&text, specials, threads).unwrap(), one);
            }
            // The cuts are real (the text is long enough to be split), and never inside a special.
            let cuts = tok.parallel_cuts(&text, specials, 16);
            assert!(cuts.len() > 3, "{cuts:?}");
        }
        // A text with no safe cut anywhere is encoded whole, still correctly.
        let word = "ab".repeat(PARALLEL_MIN_BYTES);
        assert_eq!(
            tok.encode_parallel(&word, None, 4).unwrap(),
            tok.encode_ordinary(&word).unwrap()
        );
    }

    #[test]
    fn cache_keys_are_the_zero_padded_bytes() {
        let bytes: Vec<u8> = (1..=CACHED_CHUNK_MAX as u8)
            .map(|b| b.wrapping_mul(37))
            .collect();
        for len in 0..=CACHED_CHUNK_MAX {
            let mut padded = [0u8; CACHED_CHUNK_MAX];
            padded[..len].copy_from_slice(&bytes[..len]);
            let words: Vec<u64> = padded
                .chunks(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                .collect();
            let key = CacheKey::new(&bytes[..len]).unwrap();
            assert_eq!(key.words.as_slice(), words.as_slice(), "length {len}");
            assert_eq!(usize::from(key.len), len);
        }
        assert!(CacheKey::new(&[0; CACHED_CHUNK_MAX + 1]).is_none());
        // Trailing zero bytes are told apart by the length.
        assert!(CacheKey::new(b"ab") != CacheKey::new(b"ab\0"));
    }

    #[test]
    fn special_tokens_split_only_when_allowed() {
        let tok = trained(SAMPLE, Pattern::Gpt2, 20);
        let eot = tok.specials()[0].1;
        let text = "the cat<|endoftext|>the";
        let matcher = tok.special_matcher(&["<|endoftext|>".to_string()]).unwrap();
        let with = tok.encode(text, matcher.as_deref()).unwrap();
        assert!(with.contains(&eot));
        assert!(!tok.encode_ordinary(text).unwrap().contains(&eot));
        assert!(tok.special_matcher(&["<|nope|>".to_string()]).is_err());
    }

    #[test]
    fn batch_flat_puts_prefix_and_offsets() {
        let tok = trained(SAMPLE, Pattern::Gpt2, 20);
        let eot = tok.specials()[0].1;
        let texts = ["the cat", "", "mat"];
        let (ids, ends) = tok.encode_batch_flat(&texts, None, 2, Some(eot)).unwrap();
        let separate: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| tok.encode_ordinary(t).unwrap())
            .collect();
        assert_eq!(ends.len(), 3);
        assert_eq!(ends[2] as usize, ids.len());
        assert_eq!(ids[0], eot);
        assert_eq!(&ids[1..ends[0] as usize], separate[0].as_slice());
    }

    #[test]
    fn unknown_id_names_id_and_position() {
        let tok = trained(SAMPLE, Pattern::Gpt2, 5);
        match tok.decode_bytes([97, 98, 999_999]) {
            Err(Error::UnknownId { id, position }) => assert_eq!((id, position), (999_999, 2)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_into_matches_decode_bytes() {
        let tok = trained(&SAMPLE.repeat(3), Pattern::Gpt2, 60);
        let eot = tok.specials()[0].1;
        for text in ["", "a", SAMPLE, &SAMPLE.repeat(5)] {
            let mut ids = tok.encode_ordinary(text).unwrap();
            ids.push(eot);
            let want = tok.decode_bytes(ids.iter().map(|&i| u64::from(i))).unwrap();
            let len = tok.decoded_len(&ids).unwrap();
            assert_eq!(len, want.len());
            let mut out = vec![0xAA; len];
            tok.decode_into(&ids, &mut out).unwrap();
            assert_eq!(out, want);
            // A wrongly sized buffer is an error, never a panic.
            for wrong in [len.saturating_sub(1), len + 1, len + 20] {
                if wrong != len {
                    assert!(tok.decode_into(&ids, &mut vec![0; wrong]).is_err());
                }
            }
        }
        // A token longer than the padding takes the other copy path.
        let long = tok
            .tokens()
            .iter()
            .max_by_key(|(_, b)| b.len())
            .map(|(id, b)| (*id, b.clone()))
            .unwrap();
        let ids = [long.0, 97, long.0];
        let mut out = vec![0; tok.decoded_len(&ids).unwrap()];
        tok.decode_into(&ids, &mut out).unwrap();
        assert_eq!(out, [long.1.clone(), b"a".to_vec(), long.1].concat());
        match tok.decoded_len(&[97, 999_999]) {
            Err(Error::UnknownId { id, position }) => assert_eq!((id, position), (999_999, 1)),
            other => panic!("{other:?}"),
        }
    }

    fn bytes_vocab() -> Vec<(u32, Vec<u8>)> {
        (0..=255u8).map(|b| (u32::from(b), vec![b])).collect()
    }

    #[test]
    fn validation_names_bad_entries() {
        let err = |tokens, merges, specials| {
            Tokenizer::new(tokens, merges, specials, Pattern::Gpt2)
                .unwrap_err()
                .to_string()
        };
        let mut missing = bytes_vocab();
        missing.remove(7);
        assert!(err(missing, vec![], vec![]).contains("byte 07"));
        let mut dup = bytes_vocab();
        dup.push((256, vec![0]));
        assert!(err(dup, vec![], vec![]).contains("token id 256"));
        let mut no_merge = bytes_vocab();
        no_merge.push((256, b"ab".to_vec()));
        assert!(err(no_merge.clone(), vec![], vec![]).contains("made by no merge"));
        assert!(err(no_merge.clone(), vec![(97, 99)], vec![]).contains("not a token"));
        assert!(err(no_merge.clone(), vec![(97, 300)], vec![]).contains("unknown token id 300"));
        assert!(
            err(no_merge.clone(), vec![(97, 98)], vec![("<s>".into(), 256)])
                .contains("already used")
        );
        assert!(err(no_merge, vec![(97, 98), (97, 98)], vec![]).contains("merge 1"));
    }

    #[test]
    fn merges_out_of_bpe_order_are_refused_naming_the_first() {
        let mut tokens = bytes_vocab();
        tokens.push((256, b"ab".to_vec()));
        tokens.push((257, b"abc".to_vec()));
        let message = Tokenizer::new(
            tokens.clone(),
            vec![(256, 99), (97, 98)],
            vec![],
            Pattern::Gpt2,
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("merge 0 (256, 99)"), "{message}");
        assert!(message.contains("no earlier merge makes"), "{message}");
        // The same merges in BPE order load.
        Tokenizer::new(tokens, vec![(97, 98), (256, 99)], vec![], Pattern::Gpt2).unwrap();
    }

    #[test]
    fn sparse_ids_do_not_allocate_a_table_as_large_as_the_id() {
        let mut tokens = bytes_vocab();
        tokens.push((256, b"ab".to_vec()));
        let specials = vec![
            ("<|endoftext|>".to_string(), MAX_ID),
            ("<s>".to_string(), 300),
        ];
        let tok = Tokenizer::new(tokens, vec![(97, 98)], specials, Pattern::Gpt2).unwrap();
        assert_eq!(tok.vocab_size(), MAX_ID as usize + 1);
        assert!(tok.decode_spans.len() <= 2 * 259 + DENSE_SLACK);
        assert_eq!(tok.sparse_spans.len(), 1);
        let ids = [256, MAX_ID, 300, 99];
        let want = b"ab<|endoftext|><s>c".to_vec();
        let wide = ids.iter().map(|&i| u64::from(i));
        assert_eq!(tok.decode_bytes(wide).unwrap(), want);
        let mut out = vec![0; tok.decoded_len(&ids).unwrap()];
        tok.decode_into(&ids, &mut out).unwrap();
        assert_eq!(out, want);
        assert_eq!(tok.token_bytes(MAX_ID).unwrap(), b"<|endoftext|>");
        for unknown in [MAX_ID - 1, 299, 301, u32::MAX] {
            assert!(tok.token_bytes(unknown).is_err(), "{unknown}");
        }
        assert!(tok.decode_bytes([u64::MAX]).is_err());
        // Tokens with scattered ids (bytes permuted far apart) are decoded through the map too.
        let far: Vec<(u32, Vec<u8>)> = (0..=255u8)
            .map(|b| (u32::from(b) * 100_000, vec![b]))
            .collect();
        let tok = Tokenizer::new(far, vec![], vec![], Pattern::Raw).unwrap();
        assert!(tok.decode_spans.len() <= 2 * 256 + DENSE_SLACK);
        let ids = tok.encode_ordinary("hi").unwrap();
        assert_eq!(ids, [104 * 100_000, 105 * 100_000]);
        assert_eq!(
            tok.decode_bytes(ids.iter().map(|&i| u64::from(i))).unwrap(),
            b"hi"
        );
    }

    #[test]
    fn gpt2_files_encode_known_text() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/bpe_fast/gpt2");
        let encoder: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("encoder.json")).unwrap())
                .unwrap();
        // GPT-2 stores bytes as printable unicode characters; invert that mapping.
        let mut printable: Vec<u32> = (b'!'..=b'~')
            .chain(0xA1..=0xAC)
            .chain(0xAE..=0xFF)
            .map(u32::from)
            .collect();
        let mut to_byte: FxHashMap<char, u8> = FxHashMap::default();
        let mut extra = 0;
        for b in 0..=255u32 {
            let c = if printable.contains(&b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            to_byte.insert(char::from_u32(c).unwrap(), b as u8);
        }
        printable.clear();
        let decode = |s: &str| s.chars().map(|c| to_byte[&c]).collect::<Vec<u8>>();
        let mut id_of: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        let mut tokens = Vec::new();
        for (text, id) in &encoder {
            let id = id.as_u64().unwrap() as u32;
            if text == "<|endoftext|>" {
                continue;
            }
            id_of.insert(decode(text), id);
            tokens.push((id, decode(text)));
        }
        let merges_text = std::fs::read_to_string(dir.join("vocab.bpe")).unwrap();
        let merges: Vec<(u32, u32)> = merges_text
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (a, b) = l.split_once(' ').unwrap();
                (id_of[&decode(a)], id_of[&decode(b)])
            })
            .collect();
        let tok = Tokenizer::new(
            tokens,
            merges,
            vec![("<|endoftext|>".into(), 50256)],
            Pattern::Gpt2,
        )
        .unwrap();
        // Known GPT-2 ids (tiktoken's gpt2 encoding).
        assert_eq!(
            tok.encode_ordinary("Hello world").unwrap(),
            vec![15496, 995]
        );
        let matcher = tok.special_matcher(&["<|endoftext|>".to_string()]).unwrap();
        assert_eq!(
            tok.encode("<|endoftext|>", matcher.as_deref()).unwrap(),
            vec![50256]
        );
        assert_eq!(
            crate::recover::recover_merges(tok.tokens()).unwrap(),
            tok.merges()
        );
        // GPT-2's ids are contiguous: its whole decode table is dense.
        assert!(tok.sparse_spans.is_empty());
        assert_eq!(tok.decode_spans.len(), 50257);
        // GPT-2's merges are monotone, so long chunks take the bucket queue; check it on the
        // pathological inputs of the benchmarks (one long chunk each) against the naive encoder.
        assert!(tok.merger.is_monotone());
        let word: String = (0..3000u32)
            .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 24) as u8 % 26))
            .collect();
        for text in ["a".repeat(1000), "^".repeat(777), " ".repeat(300), word] {
            assert_eq!(
                tok.encode_ordinary(&text).unwrap(),
                naive_encode(&tok, &text)
            );
        }
    }
}
