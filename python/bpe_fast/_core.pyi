"""Typed surface of the Rust extension `bpe_fast._core` (rust/src/python.rs).

This is the contract between the Rust core and the Python layer (python/bpe_fast/*.py).
Users never import `_core` directly: `bpe_fast.Tokenizer`, `bpe_fast.train` wrap it.
Every error crossing the boundary is a `ValueError` (bad argument / bad data), `OSError`
(file problems, with the path) or `UnicodeDecodeError`-style `ValueError` naming file and byte
offset: never a PanicException.

Patterns: "gpt2", "gpt4" (cl100k), "o200k", "raw", or any other string = a custom regex.
"""

from typing import Callable, Iterable, Optional, Sequence, final

from typing_extensions import Self

__all__ = ["ChunkCounter", "CoreTokenizer", "recover_merges", "split"]

# pyo3 classes are built by __new__ (there is no __init__) and cannot be subclassed (final).

@final
class ChunkCounter:
    """Pre-tokenizes documents and counts distinct chunks (bytes -> u64 count), in parallel.

    Documents never merge across boundaries. In "raw" mode a document is one chunk.
    """

    def __new__(cls, pattern: str, num_threads: int = 0) -> Self: ...  # 0 = all cores
    def add_texts(self, texts: Sequence[str]) -> None:
        """Each str is one document. GIL released while counting."""
    def add_file(self, path: str, doc_sep: Optional[str] = None) -> None:
        """Streams the file (bounded memory for the splitting patterns); `doc_sep` splits it into
        documents (the separator itself is dropped). Raises ValueError naming the file and the byte
        offset on invalid UTF-8, OSError (with the path) when unreadable."""
    def num_chunks(self) -> int: ...  # distinct chunks
    def total_bytes(self) -> int: ...
    def train(
        self,
        num_merges: int,
        min_frequency: int = 1,
        max_token_length: Optional[int] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> list[tuple[int, int]]:
        """Runs the merge loop (GIL released; `progress(merges_done)` called now and then with the GIL).
        Returns merges in rank order; merge k makes id 256 + k. May return fewer than num_merges
        (no candidate pair left with count >= min_frequency). Exactly DESIGN.md section 3."""

@final
class CoreTokenizer:
    def __new__(
        cls,
        # every non-special token as (id, bytes); all 256 single bytes present
        tokens: Sequence[tuple[int, bytes]],
        merges: Sequence[tuple[int, int]],  # rank order; each must produce a token in `tokens`
        special_tokens: Sequence[tuple[str, int]],
        pattern: str,
    ) -> Self:
        """Validates (duplicate ids/bytes, missing single bytes, merges naming unknown ids, not
        producing their token or not in BPE order, special ids clashing) and raises ValueError
        naming the bad entry."""
    @staticmethod
    def from_tiktoken_file(
        path: str, special_tokens: Sequence[tuple[str, int]], pattern: str
    ) -> CoreTokenizer:
        """A tiktoken rank file ("base64 rank" per line, rank = id), read and its merges recovered in
        Rust; ValueError naming the file and the line or token."""
    @property
    def pattern(self) -> str: ...
    @property
    def vocab_size(self) -> int: ...  # max id + 1 over tokens and special tokens
    def merges(self) -> list[tuple[int, int]]: ...
    def tokens(self) -> list[tuple[int, bytes]]: ...  # non-special tokens, id order
    def special_tokens(self) -> list[tuple[str, int]]: ...
    # ValueError for an unknown id; special tokens give their UTF-8 text
    def token_bytes(self, id: int) -> bytes: ...
    # The ints in returned lists are shared, per tokenizer, between all the lists it returns
    # (Python ints are immutable: only `is` can tell).
    def encode_ordinary(self, text: str, num_threads: int = 0) -> list[int]:
        """A text of 256 KiB or more is encoded in parts on `num_threads` threads (0: all cores),
        cut where chunking restarts, so the ids never depend on the thread count."""
    def encode(self, text: str, allowed_special: Sequence[str], num_threads: int = 0) -> list[int]:
        """Special tokens in `allowed_special` are emitted as their ids; all other text is ordinary.
        (The disallowed-special check is done by the Python layer before calling.) Threads as in
        `encode_ordinary`."""
    def encode_batch(
        self, texts: Iterable[str], allowed_special: Sequence[str], num_threads: int = 0
    ) -> list[list[int]]:
        """`encode` of each text, in parallel with the GIL released; meanwhile the calling thread
        builds the lists of the texts already encoded (in order) and encodes when none is ready.
        TypeError naming the index of a non-str item; UnicodeEncodeError for a lone surrogate."""
    def encode_to_buffer(self, text: str, allowed_special: Sequence[str], num_threads: int = 0) -> bytes:
        """Token ids as little-endian uint32 bytes (for numpy.frombuffer) - no Python int per token."""
    def encode_batch_to_buffer(
        self,
        texts: Sequence[str],
        allowed_special: Sequence[str],
        num_threads: int = 0,
        prefix_id: Optional[int] = None,
    ) -> tuple[bytes, bytes]:
        """All documents' ids concatenated as LE uint32 bytes, and LE uint64 end offsets (one per text).
        `prefix_id` (e.g. <|endoftext|>) is put before every document. Used by gpt.prepare."""
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Exact bytes of a list, tuple or any iterable of ints (numpy integers too); ValueError naming
        the first unknown id or non-int item, and its position."""
    def decode_buffer(self, ids: bytes) -> bytes:
        """Same, from LE uint32 bytes (numpy array .tobytes())."""

def recover_merges(tokens: Sequence[tuple[int, bytes]]) -> list[tuple[int, int]]:
    """Merges of a vocab given without them (the report's bare map, tiktoken rank files), as DESIGN.md
    section 4: tokens in id order, each longer than one byte BPE-encoded with the merges recovered so far;
    the two remaining parts are its merge. ValueError naming the token when not exactly two parts."""

def split(pattern: str, text: str) -> list[str]:
    """The pre-tokenizer's chunks of `text` (for tests and `bpe-fast inspect`)."""
