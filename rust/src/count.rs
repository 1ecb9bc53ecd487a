//! Counting distinct pre-tokenized chunks (chunk bytes -> number of occurrences) over documents
//! given as strings or files, in parallel; the input of the merge loop.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::pretokenize::Pattern;
use crate::threads::with_threads;

pub type ChunkCounts = FxHashMap<Vec<u8>, u64>;

/// Files are read in blocks of this size (splitting patterns only need one block plus the
/// unfinished tail of the previous one in memory).
const DEFAULT_BLOCK_SIZE: usize = 8 << 20;
/// Large documents are cut (at safe places) into pieces of about this size so threads share them.
const PIECE_SIZE: usize = 256 << 10;

pub struct ChunkCounter {
    pattern: Pattern,
    num_threads: usize,
    counts: ChunkCounts,
    total_bytes: u64,
    block_size: usize,
}

impl ChunkCounter {
    pub fn new(pattern: Pattern, num_threads: usize) -> Self {
        ChunkCounter {
            pattern,
            num_threads,
            counts: ChunkCounts::default(),
            total_bytes: 0,
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }

    /// Smaller blocks exercise the streaming path in tests.
    #[cfg(test)]
    fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = block_size;
        self
    }

    /// Threads to use (0 = rayon's global pool).
    pub fn num_threads(&self) -> usize {
        self.num_threads
    }

    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    pub fn num_chunks(&self) -> usize {
        self.counts.len()
    }

    /// Bytes of all documents counted so far (separators excluded).
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn counts(&self) -> &ChunkCounts {
        &self.counts
    }

    /// Each string is one document.
    pub fn add_texts<S: AsRef<str> + Sync>(&mut self, texts: &[S]) -> Result<()> {
        let mut pieces = Vec::new();
        for text in texts {
            let text = text.as_ref();
            self.total_bytes += text.len() as u64;
            self.subdivide(text, &mut pieces);
        }
        self.count_pieces(&pieces)
    }

    /// Streams a file; `doc_sep` splits it into documents (the separator is dropped).
    pub fn add_file(&mut self, path: &Path, doc_sep: Option<&str>) -> Result<()> {
        if doc_sep == Some("") {
            return Err(Error::InvalidArgument("doc_sep must not be empty".into()));
        }
        let io_error = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_error)?;
        // `pending` holds the bytes not yet counted; it starts at file offset `pending_offset`.
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_offset: u64 = 0;
        let mut block = vec![0u8; self.block_size];
        loop {
            let filled = read_full(&mut file, &mut block).map_err(io_error)?;
            pending.extend_from_slice(&block[..filled]);
            let at_end = filled < block.len();
            let consumed =
                self.count_complete_part(&pending, pending_offset, doc_sep, at_end, path)?;
            pending.drain(..consumed);
            pending_offset += consumed as u64;
            if at_end {
                return Ok(());
            }
        }
    }

    /// Counts the documents (or safe prefixes of documents) that are complete in `data` and
    /// returns how many bytes of `data` were used up.
    fn count_complete_part(
        &mut self,
        data: &[u8],
        data_offset: u64,
        doc_sep: Option<&str>,
        at_end: bool,
        path: &Path,
    ) -> Result<usize> {
        // Byte ranges of document text to count, in file order.
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut tail_start = 0;
        if let Some(sep) = doc_sep {
            for found in memchr::memmem::find_iter(data, sep.as_bytes()) {
                ranges.push((tail_start, found));
                tail_start = found + sep.len();
            }
        }
        let consumed = if at_end {
            ranges.push((tail_start, data.len()));
            data.len()
        } else if self.pattern.is_builtin_split() {
            // A separator could straddle the end of `data`; never cut where one might start.
            let guard = doc_sep.map_or(0, |sep| sep.len());
            let limit = data.len().saturating_sub(guard);
            match last_safe_cut(data, tail_start, limit) {
                Some(cut) => {
                    ranges.push((tail_start, cut));
                    cut
                }
                None => tail_start,
            }
        } else {
            tail_start
        };
        let mut texts = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            let text = std::str::from_utf8(&data[start..end]).map_err(|e| Error::InvalidUtf8 {
                path: path.to_path_buf(),
                offset: data_offset + (start + e.valid_up_to()) as u64,
            })?;
            texts.push(text);
        }
        self.add_texts(&texts)?;
        Ok(consumed)
    }

    /// Cuts a large document into pieces at boundaries where the pattern is known to cut anyway.
    fn subdivide<'t>(&self, text: &'t str, pieces: &mut Vec<&'t str>) {
        if !self.pattern.is_builtin_split() {
            pieces.push(text);
            return;
        }
        let bytes = text.as_bytes();
        let mut start = 0;
        while bytes.len() - start > 2 * PIECE_SIZE {
            match first_safe_cut(bytes, start + PIECE_SIZE, start + 2 * PIECE_SIZE) {
                Some(cut) => {
                    pieces.push(&text[start..cut]);
                    start = cut;
                }
                None => break,
            }
        }
        pieces.push(&text[start..]);
    }

    fn count_pieces(&mut self, pieces: &[&str]) -> Result<()> {
        let pattern = &self.pattern;
        let counted: ChunkCounts = with_threads(self.num_threads, || {
            pieces
                .par_iter()
                .try_fold(ChunkCounts::default, |mut counts, piece| {
                    pattern.for_each_chunk(piece, &mut |chunk| {
                        add_chunk(&mut counts, chunk.as_bytes(), 1)
                    })?;
                    Ok::<_, Error>(counts)
                })
                .try_reduce(ChunkCounts::default, |a, b| Ok(merge_counts(a, b)))
        })??;
        let mine = std::mem::take(&mut self.counts);
        self.counts = merge_counts(mine, counted);
        Ok(())
    }
}

fn add_chunk(counts: &mut ChunkCounts, chunk: &[u8], n: u64) {
    // Look up by slice first so that a chunk already seen costs no allocation.
    match counts.get_mut(chunk) {
        Some(count) => *count += n,
        None => {
            counts.insert(chunk.to_vec(), n);
        }
    }
}

fn merge_counts(a: ChunkCounts, b: ChunkCounts) -> ChunkCounts {
    let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    for (chunk, n) in small {
        *big.entry(chunk).or_insert(0) += n;
    }
    big
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The character ending just before byte `at`, if the bytes there are valid UTF-8.
fn char_before(bytes: &[u8], at: usize) -> Option<char> {
    let start = at.saturating_sub(4);
    (start..at).find_map(|s| {
        std::str::from_utf8(&bytes[s..at])
            .ok()
            .and_then(single_char)
    })
}

/// The character starting at byte `at`, if valid.
fn char_at(bytes: &[u8], at: usize) -> Option<char> {
    let end = (at + 4).min(bytes.len());
    (at + 1..=end).find_map(|e| {
        std::str::from_utf8(&bytes[at..e])
            .ok()
            .and_then(single_char)
    })
}

fn single_char(text: &str) -> Option<char> {
    let mut chars = text.chars();
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

/// Whitespace for every regex engine involved (Unicode White_Space, plus the control characters
/// that some engines treat as separators).
fn is_space_like(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// Punctuation that no built-in pattern joins to a preceding letter. The apostrophe is left out
/// (o200k keeps "'s" with its word) and so is '/' (o200k joins it to newlines).
fn is_plain_punctuation(c: char) -> bool {
    (c.is_ascii_punctuation() && c != '\'' && c != '/')
        || matches!(
            c,
            '，' | '。'
                | '、'
                | '；'
                | '：'
                | '？'
                | '！'
                | '“'
                | '”'
                | '「'
                | '」'
                | '《'
                | '》'
                | '（'
                | '）'
        )
}

/// Is cutting between `bytes[..at]` and `bytes[at..]` guaranteed to fall on a chunk boundary of
/// the gpt2, gpt4 and o200k patterns, with both halves chunked exactly as inside the whole text?
/// Two cases, each checked against the three regexes (tests compare with whole-text splitting):
/// - "X\nY" with X and Y not whitespace and Y not '/': every pattern ends a chunk after the
///   newline, and a lone trailing "\n" is one chunk whether or not text follows;
/// - a letter (ASCII or CJK ideograph) followed by plain punctuation: letter runs end there, and
///   the alternatives tried before the letter alternatives never look past the end.
pub(crate) fn is_safe_cut(bytes: &[u8], at: usize) -> bool {
    if at == 0 || at >= bytes.len() {
        return false;
    }
    let (Some(before), Some(after)) = (char_before(bytes, at), char_at(bytes, at)) else {
        return false;
    };
    if before == '\n' {
        let Some(before_newline) = char_before(bytes, at - 1) else {
            return false;
        };
        return !is_space_like(before_newline) && !is_space_like(after) && after != '/';
    }
    let letter = before.is_ascii_alphabetic() || ('\u{4E00}'..='\u{9FFF}').contains(&before);
    letter && is_plain_punctuation(after)
}

/// Candidate cut places are found by the byte that starts or ends the case of `is_safe_cut`.
fn may_be_cut(bytes: &[u8], at: usize) -> bool {
    let b = bytes[at - 1];
    b == b'\n' || b.is_ascii_alphabetic() || (0x80..0xC0).contains(&b)
}

/// The last safe cut in `(from, to]`.
pub(crate) fn last_safe_cut(bytes: &[u8], from: usize, to: usize) -> Option<usize> {
    (from + 1..=to.min(bytes.len()))
        .rev()
        .find(|&at| may_be_cut(bytes, at) && is_safe_cut(bytes, at))
}

/// The first safe cut in `[from, to)`.
fn first_safe_cut(bytes: &[u8], from: usize, to: usize) -> Option<usize> {
    (from.max(1)..to.min(bytes.len())).find(|&at| may_be_cut(bytes, at) && is_safe_cut(bytes, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count_whole(pattern: &Pattern, docs: &[&str]) -> ChunkCounts {
        let mut counts = ChunkCounts::default();
        for doc in docs {
            pattern
                .for_each_chunk(doc, &mut |c| add_chunk(&mut counts, c.as_bytes(), 1))
                .unwrap();
        }
        counts
    }

    fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bpe_fast_count_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        // Small alphabet heavy in the characters that matter to the cut rules.
        let pieces = prop::sample::select(vec![
            "a", "b", "Z", " ", "  ", "\n", "\n\n", "\r\n", "'s", "'", "/", ".", ",", "1", "123",
            "曰", "，", "。", "　", "\t", "é", "😀", "--",
        ]);
        prop::collection::vec(pieces, 0..120).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn streaming_a_file_counts_like_whole_documents(
            text in text_strategy(),
            block in 1usize..40,
            pattern_index in 0usize..5,
            use_sep in any::<bool>(),
        ) {
            let pattern = [Pattern::Gpt2, Pattern::Gpt4, Pattern::O200k, Pattern::Raw,
                Pattern::parse(r"\w+|\s+").unwrap()][pattern_index].clone();
            let sep = if use_sep { Some("\n\n") } else { None };
            let docs: Vec<&str> = match sep { Some(s) => text.split(s).collect(), None => vec![&text] };
            let expected = count_whole(&pattern, &docs);
            let path = temp_file(&format!("stream_{pattern_index}_{block}.txt"), text.as_bytes());
            let mut counter = ChunkCounter::new(pattern, 1).with_block_size(block);
            counter.add_file(&path, sep).unwrap();
            prop_assert_eq!(counter.counts(), &expected);
            let doc_bytes: usize = docs.iter().map(|d| d.len()).sum();
            prop_assert_eq!(counter.total_bytes(), doc_bytes as u64);
        }

        #[test]
        fn safe_cuts_fall_on_chunk_boundaries(text in text_strategy()) {
            for pattern in [Pattern::Gpt2, Pattern::Gpt4, Pattern::O200k] {
                let whole = pattern.split(&text).unwrap();
                for at in 1..text.len() {
                    if is_safe_cut(text.as_bytes(), at) {
                        let mut halves = pattern.split(&text[..at]).unwrap();
                        halves.extend(pattern.split(&text[at..]).unwrap());
                        prop_assert_eq!(&halves, &whole, "cut at {} of {:?}", at, text);
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_names_the_offset() {
        let mut bytes = b"hello\nworld\n".repeat(10);
        bytes.insert(77, 0xFF);
        let path = temp_file("bad.txt", &bytes);
        let mut counter = ChunkCounter::new(Pattern::Gpt2, 1).with_block_size(16);
        match counter.add_file(&path, None) {
            Err(Error::InvalidUtf8 { offset, .. }) => assert_eq!(offset, 77),
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
    }

    #[test]
    fn missing_file_is_an_io_error_and_empty_file_counts_nothing() {
        let mut counter = ChunkCounter::new(Pattern::Gpt2, 1);
        assert!(matches!(
            counter.add_file(Path::new("/nonexistent/x.txt"), None),
            Err(Error::Io { .. })
        ));
        counter
            .add_file(&temp_file("empty.txt", b""), None)
            .unwrap();
        assert_eq!(counter.num_chunks(), 0);
    }

    #[test]
    fn parallel_pieces_count_like_one_document() {
        let text = "The quick brown fox, jumps.\nOver the lazy dog!\n".repeat(30_000);
        let mut counter = ChunkCounter::new(Pattern::Gpt2, 2);
        counter.add_texts(&[text.as_str()]).unwrap();
        assert_eq!(counter.counts(), &count_whole(&Pattern::Gpt2, &[&text]));
    }
}
