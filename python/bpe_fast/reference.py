"""Pure-Python reference BPE: the oracle the Rust core is tested against (DESIGN.md §3, §4).

Clarity first. The only concession to speed is that chunks are kept once with their multiplicity and
that pair counts are updated only for the chunks a merge touches; the result is by construction the
same as recounting every pair of every chunk after each merge.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Callable, Optional

import regex

from .patterns import canonical_pattern, split_text

Pair = tuple[int, int]


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


def count_chunks(documents: Iterable[str], pattern: str) -> Counter[bytes]:
    """Distinct pre-tokenized chunks (UTF-8 bytes) of every document, with their multiplicity.

    Documents are split independently, so no chunk (hence no merge) crosses a document boundary.
    """
    counts: Counter[bytes] = Counter()
    for document in documents:
        for chunk in split_text(pattern, document):
            counts[chunk.encode("utf-8")] += 1
    return counts


def _pairs(ids: Sequence[int]) -> Iterable[Pair]:
    """Adjacent pairs, overlapping: [a, a, a] gives (a, a) twice."""
    return zip(ids, ids[1:])


def _replace_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace occurrences of `pair` left to right, non-overlapping."""
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _best_pair(
    pair_counts: dict[Pair, int],
    token_length: list[int],
    min_frequency: int,
    max_token_length: Optional[int],
) -> Optional[Pair]:
    """Highest count among candidates; ties go to the smallest (left_id, right_id)."""
    best: Optional[Pair] = None
    best_count = 0
    for pair, count in pair_counts.items():
        if count < min_frequency or count <= 0:
            continue
        if max_token_length is not None and token_length[pair[0]] + token_length[pair[1]] > max_token_length:
            continue
        if best is None or count > best_count or (count == best_count and pair < best):
            best, best_count = pair, count
    return best


def train_merges(
    chunk_counts: dict[bytes, int],
    num_merges: int,
    min_frequency: int = 1,
    max_token_length: Optional[int] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> list[Pair]:
    """The naive merge loop of DESIGN.md §3. Merge k makes id 256 + k. May return fewer merges."""
    words = [list(chunk) for chunk in chunk_counts]
    multiplicity = list(chunk_counts.values())
    token_length = [1] * 256

    pair_counts: Counter[Pair] = Counter()
    # pair -> indices of words that (may) contain it; entries can go stale and are re-checked.
    words_with_pair: dict[Pair, set[int]] = defaultdict(set)
    for index, word in enumerate(words):
        for pair in _pairs(word):
            pair_counts[pair] += multiplicity[index]
            words_with_pair[pair].add(index)

    merges: list[Pair] = []
    while len(merges) < num_merges:
        best = _best_pair(pair_counts, token_length, min_frequency, max_token_length)
        if best is None:
            break
        new_id = 256 + len(merges)
        merges.append(best)
        token_length.append(token_length[best[0]] + token_length[best[1]])
        for index in sorted(words_with_pair.pop(best, ())):
            old = words[index]
            new = _replace_pair(old, best, new_id)
            if len(new) == len(old):
                continue  # stale index: the word no longer holds the pair
            count = multiplicity[index]
            for pair in _pairs(old):
                pair_counts[pair] -= count
                if pair_counts[pair] == 0:
                    del pair_counts[pair]
            for pair in _pairs(new):
                pair_counts[pair] += count
                words_with_pair[pair].add(index)
            words[index] = new
        if progress is not None:
            progress(len(merges))
    return merges


def train(
    documents: Iterable[str],
    vocab_size: int,
    pattern: str = "gpt2",
    special_tokens: Sequence[str] = (),
    min_frequency: int = 1,
    max_token_length: Optional[int] = None,
) -> ReferenceTokenizer:
    """Train on in-memory documents; the same semantics as `bpe_fast.train` (without files/threads)."""
    pattern = canonical_pattern(pattern)
    special_tokens = list(special_tokens)
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(f"vocab_size {vocab_size} is below 256 + {len(special_tokens)} special tokens")
    merges = train_merges(
        count_chunks(documents, pattern),
        vocab_size - 256 - len(special_tokens),
        min_frequency,
        max_token_length,
    )
    tokens = {i: bytes([i]) for i in range(256)}
    for rank, (left, right) in enumerate(merges):
        tokens[256 + rank] = tokens[left] + tokens[right]
    first_special = 256 + len(merges)
    specials = {text: first_special + i for i, text in enumerate(special_tokens)}
    return ReferenceTokenizer(tokens, merges, specials, pattern)


# ----------------------------------------------------------------------------------------------------
# Encoding / decoding
# ----------------------------------------------------------------------------------------------------


def bpe_encode_piece(
    piece: bytes, byte_ids: Sequence[int], merge_table: dict[Pair, tuple[int, int]]
) -> list[int]:
    """Encode one chunk: apply the lowest-rank listed merge present, leftmost on ties, until none applies.

    `byte_ids[b]` is the id of single byte b; `merge_table[(left, right)] = (rank, result_id)`.
    """
    ids = [byte_ids[b] for b in piece]
    while len(ids) > 1:
        best_rank, best_pos = None, -1
        for pos, pair in enumerate(_pairs(ids)):
            entry = merge_table.get(pair)
            if entry is not None and (best_rank is None or entry[0] < best_rank):  # strict: keeps leftmost
                best_rank, best_pos = entry[0], pos
        if best_rank is None:
            break
        ids[best_pos : best_pos + 2] = [merge_table[(ids[best_pos], ids[best_pos + 1])][1]]
    return ids


class ReferenceTokenizer:
    """Pure-Python tokenizer with the same method names as `_core.CoreTokenizer`."""

    def __init__(
        self,
        tokens: dict[int, bytes],
        merges: Sequence[Pair],
        special_tokens: dict[str, int],
        pattern: str,
    ) -> None:
        self._tokens = dict(tokens)
        self._merges = [tuple(m) for m in merges]
        self._special = dict(special_tokens)
        self._pattern = canonical_pattern(pattern)
        id_of_bytes = {value: key for key, value in self._tokens.items()}
        self._byte_ids = [id_of_bytes[bytes([b])] for b in range(256)]
        self._merge_table: dict[Pair, tuple[int, int]] = {}
        for rank, (left, right) in enumerate(self._merges):
            result = id_of_bytes[self._tokens[left] + self._tokens[right]]
            self._merge_table.setdefault((left, right), (rank, result))

    @property
    def pattern(self) -> str:
        return self._pattern

    @property
    def vocab_size(self) -> int:
        return max([*self._tokens, *self._special.values()]) + 1

    def merges(self) -> list[Pair]:
        return list(self._merges)

    def tokens(self) -> list[tuple[int, bytes]]:
        return sorted(self._tokens.items())

    def special_tokens(self) -> list[tuple[str, int]]:
        return list(self._special.items())

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._tokens:
            return self._tokens[token_id]
        for text, special_id in self._special.items():
            if special_id == token_id:
                return text.encode("utf-8")
        raise ValueError(f"unknown token id {token_id}")

    def encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk in split_text(self._pattern, text):
            ids.extend(bpe_encode_piece(chunk.encode("utf-8"), self._byte_ids, self._merge_table))
        return ids

    def encode(self, text: str, allowed_special: Iterable[str] = ()) -> list[int]:
        """Allowed special-token text becomes its id; everything else is ordinary text.

        At each position the longest allowed special token wins, so overlapping specials are deterministic.
        """
        allowed = sorted(set(allowed_special), key=lambda s: (-len(s), s))
        if not allowed:
            return self.encode_ordinary(text)
        finder = regex.compile("|".join(regex.escape(s) for s in allowed))
        ids: list[int] = []
        start = 0
        for match in finder.finditer(text):
            ids.extend(self.encode_ordinary(text[start : match.start()]))
            ids.append(self._special[match.group(0)])
            start = match.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def encode_batch(
        self, texts: Sequence[str], allowed_special: Sequence[str] = (), num_threads: int = 0
    ) -> list[list[int]]:
        return [self.encode(text, allowed_special) for text in texts]

    def encode_to_buffer(self, text: str, allowed_special: Sequence[str] = ()) -> bytes:
        return b"".join(i.to_bytes(4, "little") for i in self.encode(text, allowed_special))

    def decode_buffer(self, ids: bytes) -> bytes:
        return self.decode_bytes(int.from_bytes(ids[i : i + 4], "little") for i in range(0, len(ids), 4))


def recover_merges(tokens: Sequence[tuple[int, bytes]]) -> list[Pair]:
    """Merges of a vocab given without them (DESIGN.md §4).

    Tokens in id order; each longer than one byte is BPE-encoded with the merges recovered so far; the two
    parts that remain are its merge. Anything but two parts is a ValueError naming the token.
    """
    id_of_bytes = {value: key for key, value in tokens}
    byte_ids = []
    for b in range(256):
        if bytes([b]) not in id_of_bytes:
            raise ValueError(f"vocab lacks the single byte {b:#04x}")
        byte_ids.append(id_of_bytes[bytes([b])])
    merges: list[Pair] = []
    merge_table: dict[Pair, tuple[int, int]] = {}
    for token_id, value in sorted(tokens):
        if len(value) < 2:
            continue
        parts = bpe_encode_piece(value, byte_ids, merge_table)
        if len(parts) != 2:
            raise ValueError(
                f"cannot recover a merge for token {token_id} ({value.hex()}): "
                f"the merges before it leave {len(parts)} parts, not 2"
            )
        pair = (parts[0], parts[1])
        merge_table.setdefault(pair, (len(merges), token_id))
        merges.append(pair)
    return merges


# ----------------------------------------------------------------------------------------------------
# The same surface as the Rust extension (`_core`), so the public API can be exercised against the oracle.
# ----------------------------------------------------------------------------------------------------


class ReferenceChunkCounter:
    """Pure-Python stand-in for `_core.ChunkCounter` (same methods; threads are ignored)."""

    def __init__(self, pattern: str, num_threads: int = 0) -> None:
        self.pattern = canonical_pattern(pattern)
        self.counts: Counter[bytes] = Counter()
        self.bytes_seen = 0

    def add_texts(self, texts: Sequence[str]) -> None:
        for text in texts:
            self.bytes_seen += len(text.encode("utf-8"))
        self.counts.update(count_chunks(texts, self.pattern))

    def add_file(self, path: str, doc_sep: Optional[str] = None) -> None:
        raw = open(path, "rb").read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: invalid UTF-8 at byte offset {err.start}") from None
        self.add_texts(text.split(doc_sep) if doc_sep is not None else [text])

    def num_chunks(self) -> int:
        return len(self.counts)

    def total_bytes(self) -> int:
        return self.bytes_seen

    def train(
        self,
        num_merges: int,
        min_frequency: int = 1,
        max_token_length: Optional[int] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> list[Pair]:
        return train_merges(self.counts, num_merges, min_frequency, max_token_length, progress)


# Module-level names matching `_core`, so `reference` itself can stand in for the extension.
CoreTokenizer = ReferenceTokenizer
ChunkCounter = ReferenceChunkCounter


def split(pattern: str, text: str) -> list[str]:
    return split_text(pattern, text)
