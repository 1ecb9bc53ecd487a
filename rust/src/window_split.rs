//! Pre-tokenizing ASCII text 64 bytes at a time: the chunk boundaries of a window are computed with
//! word operations on per-class bit masks, instead of deciding byte by byte.
//!
//! For each window `text[pos..pos + 64]` (bit i of every mask is byte `pos + i`), the bytes are
//! classified with SIMD compares into masks (letters, digits, whitespace, newlines, ...). The rules
//! of each pattern (the same ones `fast_split` follows byte by byte, and whose reasons are written
//! there) become shifts, ands and ors over the masks, giving one `u64` of chunk starts. The chunks
//! between consecutive starts are emitted; the last start of the window begins the next window,
//! so no rule ever has to be carried across a window boundary. Matching from `pos` only depends on
//! the text from `pos` on (the patterns have no look-behind), so a window is computed as if the
//! text began at `pos`.
//!
//! Only windows whose 64 bytes and the 4 after them are all ASCII take this path; any other window,
//! the last bytes of the text, and chunks longer than a window take one chunk of `fast_split`'s
//! byte-by-byte splitter, which is the specification these masks are tested against.
//!
//! Before this path, splitting English was ~16 instructions per byte (a table load, a compare and
//! a branch per byte, plus a call per chunk); the masks cost about 2 per byte plus a few per
//! chunk.

use crate::fast_split::{contraction_end, gpt2_chunk_end, gpt4_chunk_end, o200k_chunk_end};

/// Bytes classified and split at once.
const WINDOW: usize = 64;
/// Bytes after a window that its rules read (the `(?!\S)` look-ahead, contractions).
const LOOKAHEAD: usize = 4;

/// Which pattern's rules to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    Gpt2,
    Gpt4,
    O200k,
}

/// Per-class masks of one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Classes {
    letter: u64,
    upper: u64,
    digit: u64,
    /// `\s`: tab, line feed, vertical tab, form feed, carriage return, space.
    space: u64,
    /// `\r` and `\n`.
    newline: u64,
    /// The space character itself.
    blank: u64,
    quote: u64,
    slash: u64,
}

/// Classifies `bytes[pos..pos + 64]`; None when they or the 4 after them are not all ASCII.
#[inline(always)]
fn classify(bytes: &[u8], pos: usize) -> Option<Classes> {
    let window: &[u8; WINDOW + LOOKAHEAD] = bytes[pos..pos + WINDOW + LOOKAHEAD]
        .try_into()
        .expect("window length");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            unsafe { simd::classify_avx2(window) }
        } else {
            // SAFETY: SSE2 is part of the x86_64 baseline, so the intrinsics are always available.
            unsafe { simd::classify(window) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        classify_scalar(window)
    }
}

/// The portable classification (and the reference for the SIMD one).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify_scalar(window: &[u8; WINDOW + LOOKAHEAD]) -> Option<Classes> {
    if window.iter().any(|&b| b >= 0x80) {
        return None;
    }
    let mut c = Classes::default();
    for (i, &b) in window[..WINDOW].iter().enumerate() {
        let bit = 1u64 << i;
        let set = |mask: &mut u64, yes: bool| *mask |= if yes { bit } else { 0 };
        set(&mut c.letter, b.is_ascii_alphabetic());
        set(&mut c.upper, b.is_ascii_uppercase());
        set(&mut c.digit, b.is_ascii_digit());
        set(&mut c.space, b == b' ' || (9..=13).contains(&b));
        set(&mut c.newline, b == b'\n' || b == b'\r');
        set(&mut c.blank, b == b' ');
        set(&mut c.quote, b == b'\'');
        set(&mut c.slash, b == b'/');
    }
    Some(c)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Classes, LOOKAHEAD, WINDOW};
    use std::arch::x86_64::*;

    /// Lanes of `v` equal to `b`.
    #[inline(always)]
    unsafe fn eq(v: __m128i, b: u8) -> __m128i {
        _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))
    }

    /// Lanes of `v` in `lo..=hi` (unsigned): `v - lo <= hi - lo` as `min(v - lo, hi - lo) == v - lo`.
    #[inline(always)]
    unsafe fn within(v: __m128i, lo: u8, hi: u8) -> __m128i {
        let shifted = _mm_sub_epi8(v, _mm_set1_epi8(lo as i8));
        _mm_cmpeq_epi8(
            _mm_min_epu8(shifted, _mm_set1_epi8((hi - lo) as i8)),
            shifted,
        )
    }

    #[inline(always)]
    unsafe fn bits(lanes: __m128i) -> u64 {
        _mm_movemask_epi8(lanes) as u16 as u64
    }

    /// Lanes of `v` in `lo..=hi` (unsigned), 32 at a time.
    #[inline(always)]
    unsafe fn within32(v: __m256i, lo: u8, hi: u8) -> __m256i {
        let shifted = _mm256_sub_epi8(v, _mm256_set1_epi8(lo as i8));
        _mm256_cmpeq_epi8(
            _mm256_min_epu8(shifted, _mm256_set1_epi8((hi - lo) as i8)),
            shifted,
        )
    }

    #[inline(always)]
    unsafe fn eq32(v: __m256i, b: u8) -> __m256i {
        _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8))
    }

    #[inline(always)]
    unsafe fn bits32(lanes: __m256i) -> u64 {
        _mm256_movemask_epi8(lanes) as u32 as u64
    }

    /// AVX2 version of `classify_scalar`, 32 bytes per step (half the instructions of SSE2's).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn classify_avx2(window: &[u8; WINDOW + LOOKAHEAD]) -> Option<Classes> {
        let tail = u32::from_le_bytes(window[WINDOW..].try_into().expect("4 bytes"));
        let mut c = Classes::default();
        let mut high = u64::from(tail & 0x8080_8080 != 0);
        for part in 0..WINDOW / 32 {
            let v = _mm256_loadu_si256(window.as_ptr().add(part * 32) as *const __m256i);
            let shift = part * 32;
            high |= bits32(v);
            let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
            c.letter |= bits32(within32(folded, b'a', b'z')) << shift;
            c.upper |= bits32(within32(v, b'A', b'Z')) << shift;
            c.digit |= bits32(within32(v, b'0', b'9')) << shift;
            let blank = eq32(v, b' ');
            c.space |= bits32(_mm256_or_si256(blank, within32(v, 9, 13))) << shift;
            c.newline |= bits32(_mm256_or_si256(eq32(v, b'\n'), eq32(v, b'\r'))) << shift;
            c.blank |= bits32(blank) << shift;
            c.quote |= bits32(eq32(v, b'\'')) << shift;
            c.slash |= bits32(eq32(v, b'/')) << shift;
        }
        (high == 0).then_some(c)
    }

    /// SSE2 version of `classify_scalar`, 16 bytes per step.
    #[inline(always)]
    pub(super) unsafe fn classify(window: &[u8; WINDOW + LOOKAHEAD]) -> Option<Classes> {
        let tail = u32::from_le_bytes(window[WINDOW..].try_into().expect("4 bytes"));
        let mut c = Classes::default();
        let mut high = u64::from(tail & 0x8080_8080 != 0);
        for part in 0..WINDOW / 16 {
            let v = _mm_loadu_si128(window.as_ptr().add(part * 16) as *const __m128i);
            let shift = part * 16;
            high |= bits(v);
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            c.letter |= bits(within(folded, b'a', b'z')) << shift;
            c.upper |= bits(within(v, b'A', b'Z')) << shift;
            c.digit |= bits(within(v, b'0', b'9')) << shift;
            let blank = eq(v, b' ');
            c.space |= bits(_mm_or_si128(blank, within(v, 9, 13))) << shift;
            c.newline |= bits(_mm_or_si128(eq(v, b'\n'), eq(v, b'\r'))) << shift;
            c.blank |= bits(blank) << shift;
            c.quote |= bits(eq(v, b'\'')) << shift;
            c.slash |= bits(eq(v, b'/')) << shift;
        }
        (high == 0).then_some(c)
    }
}

/// Bit i set where bit i - 1 of `mask` is (byte i - 1 is in the class); bit 0 never (the window is
/// matched as if the text began there).
#[inline(always)]
fn after(mask: u64) -> u64 {
    mask << 1
}

/// Starts of the runs of `mask`.
#[inline(always)]
fn run_starts(mask: u64) -> u64 {
    mask & !after(mask)
}

/// The bits of each run of `runs` that begins at a bit of `seeds` (seeds must be run starts);
/// runs reaching the top of the window keep their bits up to it.
#[inline(always)]
fn seeded_runs(runs: u64, seeds: u64) -> u64 {
    (runs.wrapping_add(seeds) ^ runs) & runs
}

/// Bits `from + 1 .. from + len` (what a contraction of `len` bytes at `from` covers after its
/// apostrophe), clipped to the window.
#[inline(always)]
fn contraction_body(from: usize, len: usize) -> u64 {
    let ones = (1u64 << (len - 1)) - 1;
    ones.checked_shl(from as u32 + 1).unwrap_or(0)
}

/// `\p{N}{1,3}`: starts every 3 digits into runs of 4 or more digits.
#[inline(always)]
fn digit_groups(digit: u64) -> u64 {
    let long_starts = run_starts(digit) & digit >> 1 & digit >> 2 & digit >> 3;
    let mut starts = 0;
    let mut runs = long_starts;
    while runs != 0 {
        let start = runs.trailing_zeros();
        runs &= runs - 1;
        let run_len = (!(digit >> start)).trailing_zeros();
        let mut at = start + 3;
        while at < start + run_len && at < 64 {
            starts |= 1 << at;
            at += 3;
        }
    }
    starts
}

/// GPT-2 / r50k: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
#[inline(always)]
fn gpt2_starts(c: &Classes, bytes: &[u8], pos: usize) -> u64 {
    let other = !(c.letter | c.digit | c.space);
    let next_is_space = c.space >> 1 | u64::from(is_space(bytes[pos + WINDOW])) << 63;
    let mut starts =
        run_starts(c.letter) | run_starts(c.digit) | run_starts(other) | run_starts(c.space);
    // \s+(?!\S): a run of two or more before a non-space gives its last character to the next chunk.
    starts |= c.space & !next_is_space & after(c.space);
    // ` ?X`: a space right before a non-space begins that run's chunk.
    starts &= !(!c.space & after(c.blank));
    starts |= 1;
    let mut quotes = c.quote & starts;
    while quotes != 0 {
        let at = quotes.trailing_zeros() as usize;
        quotes &= quotes - 1;
        if let Some(end) = contraction_end(bytes, pos + at, false) {
            starts = contract(starts, at, end - pos);
        }
    }
    starts
}

/// Makes `[at, end)` one chunk (a contraction): no start inside, one at `end` (when in the window).
#[inline(always)]
fn contract(starts: u64, at: usize, end: usize) -> u64 {
    let cleared = starts & !contraction_body(at, end - at);
    if end < WINDOW {
        cleared | 1 << end
    } else {
        cleared
    }
}

#[inline(always)]
fn is_space(b: u8) -> bool {
    b == b' ' || (9..=13).contains(&b)
}

/// What cl100k and o200k share: an O-run (`[^\s\p{L}\p{N}]+`, with an optional space before it) takes
/// the newlines after it (`[\r\n]*`, o200k: `[\r\n/]*`); whitespace runs end their first chunk after
/// their last newline (`\s*[\r\n]`), then give their last character to the next chunk
/// (`\s+(?!\S)`); that character, or a one-character O-run at a chunk start, is the optional
/// prefix of a following letter run (`[^\r\n\p{L}\p{N}]?\p{L}`); a space also prefixes an O-run.
/// Returns the starts before contractions and the masks they need.
#[inline(always)]
fn modern_starts(c: &Classes, bytes: &[u8], pos: usize, trailing: u64) -> u64 {
    let other = !(c.letter | c.digit | c.space);
    let next_is_space = c.space >> 1 | u64::from(is_space(bytes[pos + WINDOW])) << 63;
    // What an O-run chunk takes after it: from a newline right after an O character, the rest of
    // that run of `trailing` characters (cl100k: newlines; o200k: newlines and slashes, where the
    // slashes before the first newline are still part of the O-run itself).
    let mut taken = 0;
    let mut seeds = c.newline & after(other);
    while seeds != 0 {
        let first = seeds.trailing_zeros();
        let run = seeded_runs(trailing & u64::MAX << first, 1 << first);
        taken |= run;
        seeds &= (seeds - 1) & !run;
    }
    let space = c.space & !taken;
    let mut starts = run_starts(c.letter) | run_starts(other) | run_starts(space);
    starts |= run_starts(c.digit) | digit_groups(c.digit);
    starts &= !taken;
    // What follows a taken run starts afresh.
    starts |= after(taken) & !taken;
    // \s*[\r\n]: the first chunk of a whitespace run ends after its last newline, so the
    // non-newline spaces after a newline start a chunk when nothing but a non-space follows them.
    // Runs that end at another newline are found from their far end: bit-reversed, the add that
    // walks a run from its start walks it from its end.
    let plain = space & !c.newline;
    let after_newline = plain & after(c.newline);
    let before_newline = c.newline & after(plain);
    let ending_at_newline =
        seeded_runs(plain.reverse_bits(), (before_newline >> 1).reverse_bits()).reverse_bits();
    starts |= after_newline & !ending_at_newline;
    // \s+(?!\S): a whitespace run (or the part after its last newline) of two or more before a
    // non-space gives its last character to the next chunk; a newline is never given.
    starts |= space & !c.newline & !next_is_space & after(space);
    // ` ?[^\s\p{L}\p{N}]+`: a space right before an O-run begins that chunk.
    let other_starts = run_starts(other) & !taken;
    starts &= !(other_starts & after(c.blank & !taken));
    starts | 1
}

/// Letter runs whose preceding character (not a letter, digit or newline) begins a chunk take it as
/// their prefix: the start moves from the letters to it.
#[inline(always)]
fn prefix_letters(starts: u64, c: &Classes, exclude: u64) -> u64 {
    let prefixable = !(c.letter | c.digit | c.newline);
    let joined = run_starts(c.letter) & after(starts & prefixable & !exclude);
    starts & !joined
}

/// The start of the whitespace run reaching the window's top, if any: where its first chunk ends
/// depends on bytes past the window (its last newline), so starts from there on are dropped.
#[inline(always)]
fn cut_at_open_space_run(starts: u64, space: u64) -> u64 {
    let open = (!space).leading_zeros();
    if open == 0 {
        return starts;
    }
    let run_start = 64 - open;
    if run_start == 0 {
        // The whole window is one whitespace run: only the start itself is certain.
        return 1;
    }
    starts & ((1u64 << run_start) - 1)
}

/// cl100k: `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`.
#[inline(always)]
fn gpt4_starts(c: &Classes, bytes: &[u8], pos: usize) -> u64 {
    let mut starts = modern_starts(c, bytes, pos, c.newline);
    // Contractions come first at a chunk start; their letters are not a prefixed letter run.
    let mut quotes = c.quote & starts;
    let mut contracted = 0;
    while quotes != 0 {
        let at = quotes.trailing_zeros() as usize;
        quotes &= quotes - 1;
        if let Some(end) = contraction_end(bytes, pos + at, true) {
            starts = contract(starts, at, end - pos);
            contracted |= 1 << at;
        }
    }
    cut_at_open_space_run(prefix_letters(starts, c, contracted), c.space)
}

/// o200k: words split where a lowercase letter meets an uppercase one, each with an optional
/// prefix and an optional contraction after it (see `fast_split::o200k_chunk_end`).
#[inline(always)]
fn o200k_starts(c: &Classes, bytes: &[u8], pos: usize) -> u64 {
    let mut starts = modern_starts(c, bytes, pos, c.newline | c.slash);
    let lower = c.letter & !c.upper;
    starts |= c.upper & after(lower);
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)? right after a word belongs to it.
    // Only one: the letters of a contraction do not end a word, so an apostrophe right after them
    // begins a new chunk.
    let mut quotes = c.quote & after(c.letter);
    let mut contraction_ends_at = usize::MAX;
    while quotes != 0 {
        let at = quotes.trailing_zeros() as usize;
        quotes &= quotes - 1;
        if at == contraction_ends_at {
            continue;
        }
        if let Some(end) = contraction_end(bytes, pos + at, true) {
            contraction_ends_at = end - pos;
            starts &= !(1 << at);
            starts = contract(starts, at, end - pos);
        }
    }
    cut_at_open_space_run(prefix_letters(starts, c, 0), c.space)
}

/// The chunk starts of `bytes[pos..pos + 64]` (bit 0 always set), or None when the window is not
/// all ASCII.
#[inline(always)]
fn window_starts(rules: Rules, bytes: &[u8], pos: usize) -> Option<u64> {
    let classes = classify(bytes, pos)?;
    Some(match rules {
        Rules::Gpt2 => gpt2_starts(&classes, bytes, pos),
        Rules::Gpt4 => gpt4_starts(&classes, bytes, pos),
        Rules::O200k => o200k_starts(&classes, bytes, pos),
    })
}

/// Chunks handed to the caller at once by `split_batched` (a window adds up to 63 more).
pub const BATCH: usize = 256;

/// Calls `f(start, ends)` with the chunks of `text` in batches: the first chunk of a batch is
/// `start..ends[0]`, the next `ends[0]..ends[1]`, and so on; batches follow each other in order.
/// Splitting a batch and then encoding it lets each loop stay small, instead of one loop carrying
/// both (which cost a register-spilling call boundary per chunk).
#[inline(always)]
pub fn split_batched(rules: Rules, text: &str, f: &mut impl FnMut(usize, &[usize])) {
    let bytes = text.as_bytes();
    let chunk_end = match rules {
        Rules::Gpt2 => gpt2_chunk_end,
        Rules::Gpt4 => gpt4_chunk_end,
        Rules::O200k => o200k_chunk_end,
    };
    let mut ends = [0usize; BATCH + WINDOW];
    let mut count = 0;
    let mut batch_start = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        let mut windowed = false;
        if pos + WINDOW + LOOKAHEAD <= bytes.len() {
            if let Some(starts) = window_starts(rules, bytes, pos) {
                let mut rest = starts & !1;
                if rest != 0 {
                    let mut last = 0;
                    while rest != 0 {
                        last = rest.trailing_zeros() as usize;
                        rest &= rest - 1;
                        ends[count] = pos + last;
                        count += 1;
                    }
                    pos += last;
                    windowed = true;
                }
            }
        }
        if !windowed {
            pos = chunk_end(bytes, pos);
            ends[count] = pos;
            count += 1;
        }
        if count >= BATCH {
            f(batch_start, &ends[..count]);
            batch_start = pos;
            count = 0;
        }
    }
    if count > 0 {
        f(batch_start, &ends[..count]);
    }
}

/// Calls `f(start, end)` with the byte range of every chunk of `text`, in order.
#[inline(always)]
pub fn split(rules: Rules, text: &str, f: &mut impl FnMut(usize, usize)) {
    split_batched(rules, text, &mut |mut start, ends| {
        for &end in ends {
            f(start, end);
            start = end;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast_split::{split_gpt2, split_gpt4, split_o200k};
    use proptest::prelude::*;

    fn byte_by_byte(rules: Rules, text: &str) -> Vec<(usize, usize)> {
        let base = text.as_ptr() as usize;
        let mut out = Vec::new();
        let mut push = |chunk: &str| {
            let start = chunk.as_ptr() as usize - base;
            out.push((start, start + chunk.len()))
        };
        match rules {
            Rules::Gpt2 => split_gpt2(text, &mut push),
            Rules::Gpt4 => split_gpt4(text, &mut push),
            Rules::O200k => split_o200k(text, &mut push),
        }
        out
    }

    fn windowed(rules: Rules, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        split(rules, text, &mut |start, end| out.push((start, end)));
        out
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        for rules in [Rules::Gpt2, Rules::Gpt4, Rules::O200k] {
            let want = byte_by_byte(rules, text);
            let got = windowed(rules, text);
            prop_assert_eq!(got, want, "{:?} on {:?}", rules, text);
        }
        Ok(())
    }

    #[test]
    fn simd_classes_equal_the_scalar_ones() {
        for offset in 0..128u8 {
            let window: [u8; WINDOW + LOOKAHEAD] =
                std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(offset) & 0x7F);
            assert_eq!(classify(&window, 0), classify_scalar(&window));
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: SSE2 is baseline; AVX2 is only called where present.
                assert_eq!(unsafe { simd::classify(&window) }, classify_scalar(&window));
                if std::arch::is_x86_feature_detected!("avx2") {
                    assert_eq!(
                        unsafe { simd::classify_avx2(&window) },
                        classify_scalar(&window)
                    );
                }
            }
        }
        let mut window = [b'a'; WINDOW + LOOKAHEAD];
        for at in 0..WINDOW + LOOKAHEAD {
            window[at] = 0xC3;
            assert_eq!(classify(&window, 0), None);
            window[at] = b'a';
        }
    }

    #[test]
    fn scalar_classes_follow_the_judges_ascii_table() {
        use crate::unicode_tables::{
            ASCII_FLAGS, FLAG_LETTER, FLAG_NEWLINE, FLAG_NUMBER, FLAG_SPACE, FLAG_UPPERISH,
        };
        for b in 0..128u8 {
            let mut window = [b'x'; WINDOW + LOOKAHEAD];
            window[0] = b;
            let c = classify_scalar(&window).unwrap();
            let flags = ASCII_FLAGS[b as usize];
            assert_eq!(c.letter & 1 == 1, flags & FLAG_LETTER != 0, "{b}");
            assert_eq!(c.digit & 1 == 1, flags & FLAG_NUMBER != 0, "{b}");
            assert_eq!(c.space & 1 == 1, flags & FLAG_SPACE != 0, "{b}");
            assert_eq!(c.newline & 1 == 1, flags & FLAG_NEWLINE != 0, "{b}");
            assert_eq!(c.upper & 1 == 1, flags & FLAG_UPPERISH != 0, "{b}");
        }
    }

    /// Fragments that exercise every rule: contractions in both cases, prefixes, newlines after
    /// punctuation, slashes, digit runs, whitespace runs with and without newlines.
    fn fragment() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a",
            "Hello",
            "WORLD",
            "camelCase",
            "x",
            "don't",
            "I'M",
            "we're",
            "'s",
            "'ll",
            "'LL",
            "'ve",
            "'re",
            "'d",
            "'t",
            "'x",
            "''",
            "'",
            " ",
            "  ",
            "   ",
            "\t",
            "\n",
            "\r\n",
            "\n\n",
            " \n ",
            "\n  ",
            "\t\n\t",
            ".",
            "..",
            "(",
            ")",
            "/",
            "//",
            "./",
            ".\n/",
            "?!",
            "1",
            "12",
            "123",
            "1234",
            "1234567",
            "3.14",
            "_",
            "-",
            "#",
            "\x0b",
            "\x0c",
            "é",
        ])
        .prop_map(str::to_string)
    }

    fn ascii_text() -> impl Strategy<Value = String> {
        prop::collection::vec(fragment(), 0..120).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn windows_split_like_the_byte_by_byte_splitters(text in ascii_text()) {
            check(&text)?;
        }

        #[test]
        fn random_ascii_splits_alike(bytes in prop::collection::vec(0u8..128, 0..400)) {
            check(std::str::from_utf8(&bytes).unwrap())?;
        }
    }

    #[test]
    fn long_runs_and_real_text_split_alike() {
        let samples = [
            " ".repeat(300),
            "\n".repeat(200),
            format!("a{}b", " ".repeat(130)),
            format!("x.{}y", "\n".repeat(70)),
            "z".repeat(500),
            "9".repeat(301),
            "It's the end of the world as we know it.\n\n    def f(x):\n        return x // 2\n"
                .repeat(20),
        ];
        for text in &samples {
            check(text).unwrap();
        }
    }
}
