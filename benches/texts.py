"""The texts of the side-by-side encode benchmark: equal, unseen slices of each kind of text.

Every timed call gets text that no tokenizer has seen in its process: for each text kind the corpus yields
``runs + 1`` disjoint slices, the first for the warm-up and the others to be timed once each. A slice takes
an equal share of every source file of its kind, from a different part of each file (slice k starts at
k/n of the file), so each slice has the same mix and none repeats another.

Kinds (see docs/BENCHMARKS.md for the sources):

* ``prose``: English prose (Shakespeare and Milton from Gutenberg, the King James Bible);
* ``docs``: technical documentation (the PostgreSQL 15 manual);
* ``code``: real source code (the Python standard library's own ``.py`` files, present wherever Python is);
* ``zh``: Chinese (宋词 and 三国演义);
* ``multi``: Japanese, Korean, Russian and Arabic (the Debian handbook translations). Hindi is not in the
  shared data, so it is not part of the mix.

Batches: ``docs4k`` are ~4 KB documents and ``chat`` ~100-byte strings, both cut from all the kinds above
at line (or word) ends and shuffled with a fixed seed; each batch is a disjoint part of the shuffled list.
Files are written once under the cache folder so that every worker process reads the same bytes.
"""

from __future__ import annotations

import json
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from benches import corpus

# Single-call kinds, in report order.
SINGLE_KINDS = ("prose", "docs", "code", "zh", "multi")
BATCH_KINDS = ("docs4k", "chat")
KIND_TITLES = {
    "prose": "English prose",
    "docs": "technical docs",
    "code": "code",
    "zh": "Chinese",
    "multi": "ja/ko/ru/ar mix",
    "docs4k": "batch of ~4 KB docs",
    "chat": "batch of ~100 B strings",
}
SOURCES_NOTE = {
    "prose": "Shakespeare/Milton (Gutenberg) + King James Bible",
    "docs": "PostgreSQL 15 manual",
    "code": "Python standard library .py sources",
    "zh": "宋词 + 三国演义",
    "multi": "Debian handbook in ja, ko, ru, ar",
    "docs4k": "~4 KB pieces of all of the above, cut at line ends, shuffled",
    "chat": "~100-byte pieces of all of the above, cut at a space or line end, shuffled",
}
DOC_BYTES = 4096
CHAT_BYTES = 100
# Bytes of Python standard library source read for the code kind (its first files in sorted order).
CODE_SOURCE_BYTES = 40_000_000


class TextUnavailable(Exception):
    """A text kind's sources are missing on this machine (reported, never a traceback)."""


def _data_root() -> Path:
    root = corpus.data_dir()
    if root is None:
        raise TextUnavailable("benchmark corpora not found (set BPE_FAST_BENCH_DATA)")
    return root


def _files(folder: Path, names: Sequence[str]) -> List[Path]:
    found = [folder / name for name in names]
    missing = [str(path) for path in found if not path.is_file()]
    if missing:
        raise TextUnavailable(f"missing corpus file(s): {', '.join(missing)}")
    return found


def code_files() -> List[Path]:
    """The standard library's .py files (tests and vendored packages left out), sorted, ~40 MB."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chosen, total = [], 0
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib).parts
        if relative[0] in ("test", "site-packages", "idlelib", "lib2to3") or "tests" in relative:
            continue
        chosen.append(path)
        total += path.stat().st_size
        if total >= CODE_SOURCE_BYTES:
            break
    if not chosen:
        raise TextUnavailable(f"no Python sources under {stdlib}")
    return chosen


def source_files(kind: str) -> List[Path]:
    """The files a text kind is cut from (TextUnavailable when this machine lacks them)."""
    if kind == "code":
        return code_files()
    root = _data_root()
    if kind == "prose":
        return _files(root / "en", ["shakespeare_milton_gutenberg.txt", "kjv_bible.txt"])
    if kind == "docs":
        return _files(root / "en", ["postgresql15_docs.txt"])
    if kind == "zh":
        return _files(root / "zh", ["songci.txt", "sanguo_yanyi.txt"])
    if kind == "multi":
        return _files(
            root / "multi",
            [f"debian_handbook_{tag}.txt" for tag in ("ja-JP", "ko-KR", "ru-RU", "ar-MA")],
        )
    raise ValueError(f"unknown text kind {kind!r}")


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return data if data.endswith(b"\n") else data + b"\n"


def _code_corpus() -> bytes:
    # The code files are many and small: treat them as one source, so a slice is a run of whole files
    # rather than 1,000 fragments of a few bytes each.
    return b"".join(_read(path) for path in code_files())


def _sources(kind: str) -> List[bytes]:
    if kind == "code":
        return [_code_corpus()]
    return [_read(path) for path in source_files(kind)]


def _line_start(data: bytes, offset: int) -> int:
    """The start of the first whole line at or after ``offset``."""
    if offset <= 0:
        return 0
    cut = data.find(b"\n", offset - 1)
    return len(data) if cut < 0 else cut + 1


def cut_slices(sources: Sequence[bytes], count: int, size: int) -> List[bytes]:
    """``count`` disjoint slices of about ``size`` bytes, each an equal share of every source.

    Slice k takes, from each source, the whole lines starting at k/count of it, up to size/len(sources)
    bytes. Raises ValueError when a source is too small for ``count`` disjoint shares.
    """
    share = max(1, size // len(sources))
    slices: List[bytearray] = [bytearray() for _ in range(count)]
    for data in sources:
        if len(data) < share * count:
            raise ValueError(
                f"a source of {len(data)} bytes cannot give {count} disjoint slices of {share} bytes; "
                "use smaller slices or fewer runs"
            )
        for k in range(count):
            start = _line_start(data, len(data) * k // count)
            piece = corpus._trim_to_line(data[start:], share)
            slices[k] += piece
    return [bytes(piece) for piece in slices]


@dataclass(frozen=True)
class SliceSet:
    """One text kind's warm-up slice and timed slices, as files (UTF-8)."""

    kind: str
    warmup: Path
    timed: Tuple[Path, ...]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "warmup": str(self.warmup), "timed": [str(p) for p in self.timed]}


def single_slices(kind: str, runs: int, slice_bytes: int, folder: Optional[Path] = None) -> SliceSet:
    """The warm-up slice and ``runs`` timed slices of one kind, written once under ``folder``."""
    folder = folder or corpus.cache_dir() / "slices"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{kind}_{slice_bytes}_{runs}_{index}.txt" for index in range(runs + 1)]
    if not all(path.exists() for path in paths):
        for path, data in zip(paths, cut_slices(_sources(kind), runs + 1, slice_bytes)):
            corpus._atomic_write_bytes(path, data)
    return SliceSet(kind, paths[0], tuple(paths[1:]))


def split_pieces(text: str, piece_bytes: int, at_lines: bool) -> List[str]:
    """Cuts text into pieces of about ``piece_bytes`` UTF-8 bytes, each ending at a line end (``at_lines``)
    or at the first space or line end after the size (text without spaces: at the size, on a character)."""
    pieces = []
    start = 0
    # Characters, not bytes, index str: estimate the span from the text's own bytes-per-character.
    ratio = max(1.0, len(text.encode("utf-8")) / max(1, len(text)))
    span = max(1, int(piece_bytes / ratio))
    while start < len(text):
        end = min(len(text), start + span)
        if end < len(text):
            stops = ("\n",) if at_lines else ("\n", " ")
            found = [text.find(stop, end) for stop in stops]
            found = [f for f in found if f >= 0 and f - end < span]
            if found:
                end = min(found) + 1
            elif at_lines:
                end = min(len(text), start + span)
        pieces.append(text[start:end])
        start = end
    return [piece for piece in pieces if piece.strip()]


def batch_items(kind: str, piece_bytes: int) -> List[str]:
    """All ~``piece_bytes`` documents (docs4k) or strings (chat) of every single-call kind, shuffled."""
    items: List[str] = []
    for source_kind in SINGLE_KINDS:
        try:
            sources = _sources(source_kind)
        except TextUnavailable:
            continue
        for data in sources:
            items.extend(split_pieces(data.decode("utf-8"), piece_bytes, at_lines=kind == "docs4k"))
    if not items:
        raise TextUnavailable("no corpus text for batches")
    random.Random(20260101).shuffle(items)
    return items


def batch_slices(kind: str, runs: int, batch_bytes: int, folder: Optional[Path] = None) -> SliceSet:
    """Warm-up batch and ``runs`` timed batches (JSON lists of str) of about ``batch_bytes`` each."""
    folder = folder or corpus.cache_dir() / "slices"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{kind}_{batch_bytes}_{runs}_{index}.json" for index in range(runs + 1)]
    if not all(path.exists() for path in paths):
        items = batch_items(kind, DOC_BYTES if kind == "docs4k" else CHAT_BYTES)
        batches: List[List[str]] = [[] for _ in paths]
        index = 0
        for batch in batches:
            size = 0
            while size < batch_bytes:
                if index >= len(items):
                    raise ValueError(
                        f"not enough {kind} text for {len(paths)} batches of {batch_bytes} bytes"
                    )
                batch.append(items[index])
                size += len(items[index].encode("utf-8"))
                index += 1
        for path, batch in zip(paths, batches):
            corpus._atomic_write_bytes(path, json.dumps(batch, ensure_ascii=False).encode("utf-8"))
    return SliceSet(kind, paths[0], tuple(paths[1:]))


def read_slice(path: Path):
    """A slice file's content: str (single-call kinds) or list of str (batches)."""
    text = Path(path).read_text(encoding="utf-8")
    return json.loads(text) if str(path).endswith(".json") else text


def slice_bytes(content) -> int:
    if isinstance(content, str):
        return len(content.encode("utf-8"))
    return sum(len(item.encode("utf-8")) for item in content)


def all_slices(runs: int, single_bytes: int, batch_bytes: int) -> Dict[str, object]:
    """{kind: SliceSet or the reason it is unavailable} for every kind."""
    found: Dict[str, object] = {}
    for kind in SINGLE_KINDS:
        try:
            found[kind] = single_slices(kind, runs, single_bytes)
        except (TextUnavailable, ValueError) as exc:
            found[kind] = str(exc)
    for kind in BATCH_KINDS:
        try:
            found[kind] = batch_slices(kind, runs, batch_bytes)
        except (TextUnavailable, ValueError) as exc:
            found[kind] = str(exc)
    return found
