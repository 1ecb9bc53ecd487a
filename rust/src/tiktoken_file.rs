//! Reading tiktoken rank files ("base64 rank" per line; the rank is the token id).
//!
//! Read here rather than in Python: decoding o200k's 200k lines with `base64.b64decode` one line at a
//! time took ~0.6-1.2 s of the ~2-4 s `Tokenizer.from_tiktoken` took; in Rust it is milliseconds.

use std::path::Path;

use crate::error::{Error, Result};

/// The standard base64 alphabet's value of each byte (64 for '=', 255 for anything else).
const BASE64_VALUES: [u8; 256] = {
    let mut table = [255u8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table[b'=' as usize] = 64;
    table
};

/// Standard base64 with padding (as tiktoken writes it); None for anything else.
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() % 4 != 0 {
        return None;
    }
    let padding = text.iter().rev().take_while(|&&c| c == b'=').count();
    if padding > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (k, quad) in text.chunks_exact(4).enumerate() {
        let last = k + 1 == text.len() / 4;
        let mut values = [0u32; 4];
        for (value, &c) in values.iter_mut().zip(quad) {
            let v = BASE64_VALUES[c as usize];
            // '=' only as the padding at the very end.
            if v == 255 || (v == 64 && !last) {
                return None;
            }
            *value = u32::from(v & 63);
        }
        let pad_here = if last { padding } else { 0 };
        if quad[..4 - pad_here].contains(&b'=') {
            return None;
        }
        let word = values[0] << 18 | values[1] << 12 | values[2] << 6 | values[3];
        let bytes = [(word >> 16) as u8, (word >> 8) as u8, word as u8];
        out.extend_from_slice(&bytes[..3 - pad_here]);
    }
    Some(out)
}

/// The (id, bytes) of every line of a tiktoken rank file; errors name the file and the line.
pub fn read_tiktoken_ranks(path: &Path) -> Result<Vec<(u32, Vec<u8>)>> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: is a directory, not a tiktoken rank file",
            path.display()
        )));
    }
    let contents = std::fs::read(path).map_err(io_error)?;
    let mut tokens = Vec::new();
    for (index, line) in contents.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "{}:{}: not a tiktoken rank line ({why})",
                path.display(),
                index + 1
            ))
        };
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let (Some(encoded), Some(rank), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected 'base64 rank'"));
        };
        let bytes = decode_base64(encoded).ok_or_else(|| bad("invalid base64"))?;
        let rank = std::str::from_utf8(rank)
            .ok()
            .and_then(|r| r.parse::<u32>().ok())
            .ok_or_else(|| bad("the rank is not a non-negative integer below 2^32"))?;
        tokens.push((rank, bytes));
    }
    if tokens.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: empty tiktoken rank file",
            path.display()
        )));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_base64(bytes: &[u8]) -> String {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let word = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for k in 0..4 {
                if k <= chunk.len() {
                    out.push(alphabet[(word >> (18 - 6 * k) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in prop::collection::vec(any::<u8>(), 1..64)) {
            prop_assert_eq!(decode_base64(encode_base64(&bytes).as_bytes()), Some(bytes));
        }
    }

    #[test]
    fn malformed_base64_is_refused() {
        for bad in [
            "",
            "YQ=",
            "Y===",
            "YQ==YQ==",
            "not-base64!!",
            "Y Q=",
            "=YQ=",
        ] {
            assert_eq!(decode_base64(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(decode_base64(b"YQ=="), Some(b"a".to_vec()));
        assert_eq!(decode_base64(b"YWI="), Some(b"ab".to_vec()));
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("bpe_fast_tiktoken_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.tiktoken");
        std::fs::write(&path, "YQ== 0\nnot-base64!! 1\n").unwrap();
        let error = read_tiktoken_ranks(&path).unwrap_err().to_string();
        assert!(error.contains("bad.tiktoken:2"), "{error}");
        std::fs::write(&path, "YQ== 0\r\n\r\nYg== 1\r\n").unwrap();
        assert_eq!(
            read_tiktoken_ranks(&path).unwrap(),
            vec![(0, b"a".to_vec()), (1, b"b".to_vec())]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
