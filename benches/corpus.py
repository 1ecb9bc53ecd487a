"""Benchmark inputs: the mixed docs-and-code corpus, per-language samples, short lines, pathological text.

Everything is built from the shared corpora (``/work/shared/data/corpora`` or ``$BPE_FAST_BENCH_DATA``),
which users of the repository do not have: callers check :func:`data_dir` and skip when it is ``None``.
Derived files are cached under ``$BPE_FAST_BENCH_CACHE`` (default: the system temp dir) so that a training
worker in a fresh subprocess reads exactly the bytes the parent measured against.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

MB = 1_000_000

DEFAULT_DATA_DIRS = (Path("/work/shared/data/corpora"),)
# Documents handed to trainers / batch encoders are blocks of whole lines of about this many bytes:
# big enough that per-call overhead does not dominate, small enough to spread over threads.
BLOCK_BYTES = 64 * 1024


def data_dir() -> Optional[Path]:
    """The corpora folder (holding en/ and zh/), or None when this machine has none."""
    override = os.environ.get("BPE_FAST_BENCH_DATA")
    candidates = [Path(override)] if override else list(DEFAULT_DATA_DIRS)
    for candidate in candidates:
        if (candidate / "en").is_dir() and (candidate / "zh").is_dir():
            return candidate
    return None


def cache_dir() -> Path:
    path = Path(os.environ.get("BPE_FAST_BENCH_CACHE", Path(tempfile.gettempdir()) / "bpe_fast_bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _require_data() -> Path:
    found = data_dir()
    if found is None:
        raise FileNotFoundError(
            "benchmark corpora not found: set BPE_FAST_BENCH_DATA to a folder holding en/*.txt and zh/*.txt"
        )
    return found


def source_files(language: str = "mixed") -> List[Path]:
    """The corpus files in a fixed order: en/*.txt then zh/*.txt (sorted by name)."""
    root = _require_data()
    languages = ["en", "zh"] if language == "mixed" else [language]
    files: List[Path] = []
    for lang in languages:
        files.extend(sorted((root / lang).glob("*.txt")))
    if not files:
        raise FileNotFoundError(f"no *.txt files under {root} for language {language!r}")
    return files


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _trim_to_line(data: bytes, size: int) -> bytes:
    """The first ``size`` bytes, shortened to end after a newline (so the cut is valid UTF-8)."""
    if len(data) <= size:
        return data
    cut = data.rfind(b"\n", 0, size)
    if cut <= 0:
        # No newline to cut at: back off to a UTF-8 character boundary instead.
        cut = size
        while cut > 0 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        return data[:cut]
    return data[: cut + 1]


def corpus_file(size_mb: float, language: str = "mixed") -> Path:
    """A file of about ``size_mb`` MB of the language's files: a proportional share of each (below their total
    size) or all of them repeated, trimmed at a line end.

    "mixed" is the issue's "mixed docs and code" corpus: English prose, Python and PostgreSQL docs, Chinese.
    """
    size = int(size_mb * MB)
    path = cache_dir() / f"{language}_v2_{size}.txt"
    if path.exists():
        return path
    sources = []
    for source in source_files(language):
        data = source.read_bytes()
        sources.append(data if data.endswith(b"\n") else data + b"\n")
    total = sum(len(data) for data in sources)
    if size < total:
        # Smaller than the corpora: the same share of every file, so that a 1 MB corpus has the same mix of
        # prose, docs, code and Chinese as a 32 MB one (otherwise "time vs size" would measure content).
        pieces = [_trim_to_line(data, max(1, len(data) * size // total)) for data in sources]
        whole = b"".join(pieces)
    else:
        whole = b"".join(sources)
        whole = whole * (size // len(whole) + 1)
    _atomic_write_bytes(path, _trim_to_line(whole, size))
    return path


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def iter_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """Streams a file as documents of whole lines of about ``block_bytes`` bytes (for iterator-fed trainers)."""
    with open(path, encoding="utf-8", newline="") as handle:
        pending: List[str] = []
        pending_size = 0
        for line in handle:
            pending.append(line)
            pending_size += len(line)
            if pending_size >= block_bytes:
                yield "".join(pending)
                pending = []
                pending_size = 0
        if pending:
            yield "".join(pending)


def split_blocks(text: str, block_chars: int = BLOCK_BYTES) -> List[str]:
    """The same blocking as :func:`iter_blocks`, for text already in memory (cut after a newline)."""
    blocks = []
    start = 0
    while start < len(text):
        end = text.find("\n", min(start + block_chars, len(text)) - 1)
        end = len(text) if end < 0 else end + 1
        blocks.append(text[start:end])
        start = end
    return blocks


def short_lines(total: int = 42_000, min_bytes: int = 30, max_bytes: int = 80) -> List[str]:
    """``total`` corpus lines of ``min_bytes``-``max_bytes`` UTF-8 bytes (mean about 50), en and zh mixed.

    Models the "many short strings" workload (chat messages, titles, dataset rows).
    """
    chosen = [
        line
        for source in source_files("mixed")
        for line in read_text(source).splitlines(keepends=True)
        if min_bytes <= len(line.encode("utf-8")) <= max_bytes
    ]
    if not chosen:
        raise ValueError("corpus has no lines of the requested length")
    # Fixed seed: every run, and every peer, gets the same lines in the same order.
    random.Random(20240520).shuffle(chosen)
    while len(chosen) < total:
        chosen = chosen + chosen
    return chosen[:total]


def pathological_texts(size: int) -> dict:
    """Inputs that make naive BPE implementations quadratic, each ``size`` bytes long.

    One giant pre-tokenizer chunk each (the GPT-2 regex keeps a run of one letter, of spaces, of one
    punctuation mark, or a long word, together), which is where per-chunk O(n^2) merging shows.
    """
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return {
        "one_char": "a" * size,
        "spaces": " " * size,
        "carets": "^" * size,
        "one_word": "".join(rng.choice(letters) for _ in range(size)),
    }
