"""`bpe_fast.train`: argument checking, feeding the corpus to Rust, and assembling the Tokenizer.

The merge loop itself is Rust's (`_core.ChunkCounter.train`), exactly DESIGN.md §3; `reference.py` is the
pure-Python oracle it is tested against.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional, Union

from ._native import core
from .patterns import canonical_pattern
from .tokenizer import Tokenizer

PathLike = Union[str, "os.PathLike[str]"]
TrainingData = Union[PathLike, Iterable[PathLike], Iterable[str]]

# Documents given as str are handed to Rust in batches, so an iterator over a huge corpus never has to
# be held in memory at once (Rust keeps only the distinct chunks and their counts).
_BATCH_CHARS = 8 * 1024 * 1024
_BATCH_DOCS = 4096


def _positive_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_special_tokens(special_tokens: Sequence[str]) -> list[str]:
    if isinstance(special_tokens, str):
        raise ValueError(
            f"special_tokens must be a sequence of str, not one str ({special_tokens!r}); wrap it in a list"
        )
    result = list(special_tokens)
    for token in result:
        if not isinstance(token, str) or not token:
            raise ValueError(f"special tokens must be non-empty str, got {token!r}")
    duplicates = sorted({t for t in result if result.count(t) > 1})
    if duplicates:
        raise ValueError(f"special token(s) given twice: {duplicates}")
    return result


class _Feeder:
    """Routes training inputs to the ChunkCounter: files by path, str documents in bounded batches."""

    def __init__(self, counter: object, doc_sep: Optional[str]) -> None:
        self.counter = counter
        self.doc_sep = doc_sep
        self.batch: list[str] = []
        self.batch_chars = 0

    def add_file(self, path: PathLike) -> None:
        path = Path(path)
        if path.is_dir():
            raise ValueError(
                f"{path}: is a directory; pass the files in it (e.g. sorted(Path(dir).glob('*.txt')))"
            )
        self.flush()
        self.counter.add_file(os.fspath(path), self.doc_sep)

    def add_text(self, text: str) -> None:
        # doc_sep applies to str documents as to files: the separator splits (and is dropped).
        pieces = text.split(self.doc_sep) if self.doc_sep is not None else [text]
        for piece in pieces:
            self.batch.append(piece)
            self.batch_chars += len(piece)
        if self.batch_chars >= _BATCH_CHARS or len(self.batch) >= _BATCH_DOCS:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.counter.add_texts(self.batch)
            self.batch, self.batch_chars = [], 0


def _feed(feeder: _Feeder, data: TrainingData) -> None:
    if isinstance(data, (str, os.PathLike)):
        feeder.add_file(data)  # a single path (str or PathLike) is one file
    elif isinstance(data, (bytes, bytearray)):
        raise ValueError(
            "training data must be a path, an iterable of paths or an iterable of str, not bytes"
        )
    else:
        try:
            items = iter(data)
        except TypeError:
            raise ValueError(
                f"training data must be a path, an iterable of paths or an iterable of str, got {type(data).__name__}"
            ) from None
        for index, item in enumerate(items):
            if isinstance(item, str):
                feeder.add_text(item)
            elif isinstance(item, os.PathLike):
                feeder.add_file(item)
            else:
                raise ValueError(
                    f"training data item {index} is {type(item).__name__}: expected str (a document) "
                    "or a PathLike (a file)"
                )
    feeder.flush()


def train(
    data: TrainingData,
    vocab_size: int,
    *,
    pattern: str = "gpt2",
    special_tokens: Sequence[str] = (),
    min_frequency: int = 1,
    max_token_length: Optional[int] = None,
    doc_sep: Optional[str] = None,
    num_threads: Optional[int] = None,
    progress: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer, exactly the naive algorithm of DESIGN.md §3.

    data: a path (str or PathLike) to one file; an iterable of PathLike (files); or an iterable of str
    (documents). A file is one document unless `doc_sep` splits it (str documents are split too).
    vocab_size counts 256 bytes + merges + special tokens; special tokens get the ids after the last merge.
    Stops early (with a warning) when no pair occurs at least `min_frequency` times.
    """
    special_tokens = _check_special_tokens(special_tokens)
    vocab_size = _positive_int("vocab_size", vocab_size, 0)
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(
            f"vocab_size {vocab_size} is too small: it must be at least 256 (bytes) + "
            f"{len(special_tokens)} (special tokens) = {256 + len(special_tokens)}"
        )
    pattern = canonical_pattern(pattern)
    min_frequency = _positive_int("min_frequency", min_frequency, 1)
    if max_token_length is not None:
        max_token_length = _positive_int("max_token_length", max_token_length, 1)
    if doc_sep is not None and (not isinstance(doc_sep, str) or not doc_sep):
        raise ValueError(f"doc_sep must be a non-empty str or None, got {doc_sep!r}")
    threads = 0 if num_threads is None else _positive_int("num_threads", num_threads, 1)

    native = core()
    counter = native.ChunkCounter(pattern, threads)
    _feed(_Feeder(counter, doc_sep), data)
    if counter.total_bytes() == 0 or counter.num_chunks() == 0:
        raise ValueError("no text to train on (the training data is empty)")

    num_merges = vocab_size - 256 - len(special_tokens)
    merges = _run_merges(counter, num_merges, min_frequency, max_token_length, progress)
    if len(merges) < num_merges:
        warnings.warn(
            f"training stopped after {len(merges)} of {num_merges} merges: no pair occurs at least "
            f"min_frequency={min_frequency} times"
            + (f" within max_token_length={max_token_length}" if max_token_length is not None else "")
            + f"; the vocab has {256 + len(merges) + len(special_tokens)} tokens, not {vocab_size}",
            stacklevel=2,
        )

    tokens = {i: bytes([i]) for i in range(256)}
    for rank, (left, right) in enumerate(merges):
        tokens[256 + rank] = tokens[left] + tokens[right]
    first_special = 256 + len(merges)
    specials = {text: first_special + i for i, text in enumerate(special_tokens)}
    return Tokenizer.from_parts(tokens, merges, specials, pattern)


def _run_merges(
    counter: object, num_merges: int, min_frequency: int, max_token_length: Optional[int], progress: bool
) -> list[tuple[int, int]]:
    if not progress or num_merges == 0:
        return [tuple(m) for m in counter.train(num_merges, min_frequency, max_token_length, None)]
    from tqdm.auto import tqdm

    with tqdm(total=num_merges, desc="merges", unit="merge") as bar:

        def report(done: int) -> None:
            bar.update(done - bar.n)

        merges = counter.train(num_merges, min_frequency, max_token_length, report)
        bar.update(len(merges) - bar.n)
    return [tuple(m) for m in merges]
