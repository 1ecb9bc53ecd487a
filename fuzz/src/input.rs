//! Structured values read from the fuzzer's raw bytes.
//!
//! A hand-written reader rather than the `arbitrary` crate, so that the checks depend on nothing
//! but `bpe_fast` and std: the crate's own `cargo test` (rust/tests/fuzz_regressions.rs) compiles
//! these same files and replays saved inputs through them without a new dev-dependency.
//! Reads past the end give zeros, so every byte string is a valid input and a shorter one is a
//! "simpler" one (libFuzzer's minimiser shrinks towards it).

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A number in 0..n (n > 0), from one byte when n fits in one and two otherwise.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        if n <= 256 {
            usize::from(self.byte()) % n
        } else {
            usize::from(self.u16()) % n
        }
    }

    /// Up to `max` bytes, preceded by a length byte.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let wanted = usize::from(self.byte()).min(max);
        self.take(wanted)
    }

    /// A string of up to `max` bytes (invalid UTF-8 replaced, so it may come out a little longer).
    pub fn string(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }
}
