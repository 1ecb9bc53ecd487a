"""Documents for `gpt.prepare`: local .txt/.jsonl/.parquet files or a Hugging Face dataset, streamed.

One job: turn inputs into an ordered stream of `Record`s (one per input record: a document's text, or
the reason it is skipped), with a `Position` a restart can resume from, split between workers.

Definitions the rest of the pipeline relies on:
- A *record* is one unit of input: a .txt file (or one `doc_sep`-separated block of it), a .jsonl line,
  a parquet row, a dataset row. Records are numbered in input order; bad ones are records too (they
  keep their number, so positions stay stable) but carry `skip` instead of `text`.
- Bad records never stop the job. Reasons (the manifest's "skipped" keys):
  empty (zero-length text, or a blank jsonl line), too_large (text over max_doc_bytes UTF-8 bytes; a
  .txt block or a jsonl line that long is never held whole in memory), invalid_utf8 (bytes that are not
  UTF-8), invalid_unicode (lone surrogates, e.g. from a JSON "\\ud800" escape), json_error (a jsonl line
  that is not JSON or not an object), missing_field (no text field), not_text (field is not a string).
- Worker split (`worker`, `num_workers`): with at least as many files as workers, worker i takes files
  i, i+n, i+2n, ... (sorted input order); otherwise (one big file, a dataset stream) it takes the
  records whose record number is i modulo n. Either way the parts are disjoint and cover everything.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from bpe_fast.cliutil import UserError

SKIP_REASONS = (
    "empty",
    "too_large",
    "invalid_utf8",
    "invalid_unicode",
    "json_error",
    "missing_field",
    "not_text",
)
FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".parquet": "parquet"}
_READ_BLOCK = 1 << 20
_TOO_LARGE = object()  # a raw unit that was too long to keep: its bytes were dropped while reading


@dataclass(frozen=True)
class Position:
    """Where a record sits in the input; a restart at this position re-reads this record first."""

    file_index: int = 0  # index into the part's file list (0 for a dataset stream)
    record_in_file: int = 0  # records before it in that file, all workers' records counted
    record_index: int = 0  # records before it over the inputs this worker reads
    part_record: int = 0  # records of this worker's part before it

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Position:
        return cls(
            **{key: int(data[key]) for key in ("file_index", "record_in_file", "record_index", "part_record")}
        )


@dataclass
class Record:
    position: Position
    text: Optional[str]  # the document, or None when skipped
    skip: Optional[str]  # one of SKIP_REASONS when skipped
    where: str  # "file:line" / "file@byte" / "dataset#row", for log messages
    nbytes: int  # input bytes consumed since the previous record (for the progress bar)


def expand_files(patterns: Sequence[str]) -> list[Path]:
    """Files named by the patterns, in the order given; each glob's matches sorted. Repeats are dropped."""
    files, seen = [], set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise UserError(f"--files {pattern!r} matches no file; check the path and quote the glob")
        else:
            matches = [pattern]
        for match in matches:
            path = Path(os.path.normpath(match))
            if not path.is_file():
                what = "a folder; give the files in it, e.g. 'DIR/*.txt'" if path.is_dir() else "no such file"
                raise UserError(f"--files {match!r}: {what}")
            if path not in seen:
                seen.add(path)
                files.append(path)
    if not files:
        raise UserError("no input files given: pass --files GLOB")
    return files


def _text_record(text, max_doc_bytes: int) -> tuple[Optional[str], Optional[str]]:
    """Validates a field value: (text, None) for a usable document, else (None, reason)."""
    if not isinstance(text, str):
        return None, "not_text"
    if not text:
        return None, "empty"
    if len(text) > max_doc_bytes:  # every character is at least one UTF-8 byte
        return None, "too_large"
    try:
        # The Rust core takes UTF-8: a lone surrogate would fail the whole batch there.
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None, "invalid_unicode"
    if size > max_doc_bytes:
        return None, "too_large"
    return text, None


def _bytes_record(raw, max_doc_bytes: int) -> tuple[Optional[str], Optional[str]]:
    if raw is _TOO_LARGE:
        return None, "too_large"
    if not raw:
        return None, "empty"
    if len(raw) > max_doc_bytes:
        return None, "too_large"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "invalid_utf8"


class FileSource:
    """Records of local files: .txt (whole file, or `doc_sep` blocks), .jsonl, .parquet."""

    def __init__(
        self,
        files: Sequence[Path],
        text_field: str = "text",
        doc_sep: Optional[str] = None,
        max_doc_bytes: int = 256 << 20,
        worker: int = 0,
        num_workers: int = 1,
        input_format: str = "auto",
    ):
        if not 0 <= worker < num_workers:
            raise UserError(f"--worker {worker} must be in 0..{num_workers - 1}")
        if doc_sep == "":
            raise UserError("--doc-sep must not be empty")
        files = [Path(f) for f in files]
        self.formats = {}
        for path in files:
            fmt = input_format if input_format != "auto" else FORMATS.get(path.suffix.lower())
            if fmt not in FORMATS.values():
                raise UserError(
                    f"{path}: unknown input format (supported: .txt, .jsonl, .parquet; or give --input-format)"
                )
            self.formats[path] = fmt
        self.all_files = files
        self.by_file = len(files) >= num_workers
        self.files = files[worker::num_workers] if self.by_file else files
        self.worker, self.num_workers = worker, num_workers
        self.text_field, self.doc_sep, self.max_doc_bytes = text_field, doc_sep, max_doc_bytes
        self.end_position: Optional[Position] = None

    def describe(self) -> dict:
        """Everything that determines the records (a restart refuses to continue if it changed)."""
        return {
            "kind": "files",
            "files": [
                {"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
                for p in self.files
            ],
            "text_field": self.text_field,
            "doc_sep": self.doc_sep,
            "max_doc_bytes": self.max_doc_bytes,
            "worker": self.worker,
            "num_workers": self.num_workers,
            "split_by": "file" if self.by_file else "record",
        }

    def total_bytes(self) -> Optional[int]:
        total = sum(p.stat().st_size for p in self.files)
        return total if self.by_file else total // self.num_workers

    def bytes_before(self, position: Position) -> int:
        done = sum(p.stat().st_size for p in self.files[: position.file_index])
        return done if self.by_file else done // self.num_workers

    def _mine(self, record_index: int) -> bool:
        return self.by_file or record_index % self.num_workers == self.worker

    def count_part_records(self) -> int:
        """Records of this worker's part (reads the inputs once, without decoding documents)."""
        count = record_index = 0
        for file_index in range(len(self.files)):
            for _ in self._units(file_index, 0):
                count += self._mine(record_index)
                record_index += 1
        return count

    def records(self, start: Position = Position()) -> Iterator[Record]:
        record_index, part_record, pending_bytes = start.record_index, start.part_record, 0
        for file_index in range(start.file_index, len(self.files)):
            path = self.files[file_index]
            record_in_file = start.record_in_file if file_index == start.file_index else 0
            for unit, where, nbytes in self._units(file_index, record_in_file):
                position = Position(file_index, record_in_file, record_index, part_record)
                record_in_file += 1
                record_index += 1
                pending_bytes += nbytes
                if not self._mine(position.record_index):
                    continue
                part_record += 1
                text, skip = self._parse(path, unit)
                yield Record(position, text, skip, where, pending_bytes)
                pending_bytes = 0
        self.end_position = Position(len(self.files), 0, record_index, part_record)

    def _parse(self, path: Path, unit) -> tuple[Optional[str], Optional[str]]:
        fmt = self.formats[path]
        if fmt == "txt":
            return _bytes_record(unit, self.max_doc_bytes)
        if fmt == "jsonl":
            if unit is _TOO_LARGE:
                return None, "too_large"
            if not unit.strip():
                return None, "empty"
            try:
                line = unit.decode("utf-8")
            except UnicodeDecodeError:
                return None, "invalid_utf8"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                return None, "json_error"
            if not isinstance(obj, dict):
                return None, "json_error"
            if self.text_field not in obj:
                return None, "missing_field"
            return _text_record(obj[self.text_field], self.max_doc_bytes)
        if unit is _MISSING_COLUMN:
            return None, "missing_field"
        if isinstance(unit, bytes):  # a binary parquet column
            return _bytes_record(unit, self.max_doc_bytes)
        return _text_record(unit, self.max_doc_bytes)

    def _units(self, file_index: int, skip: int) -> Iterator[tuple[object, str, int]]:
        """Raw units of one file after the first `skip`: (bytes | value | marker, where, input bytes)."""
        path = self.files[file_index]
        fmt = self.formats[path]
        if fmt == "parquet":
            yield from _parquet_units(path, self.text_field, skip)
            return
        if fmt == "jsonl":
            units = _jsonl_units(path, self.max_doc_bytes)
        elif self.doc_sep is None:
            units = _whole_file_unit(path, self.max_doc_bytes)
        else:
            units = _separated_units(path, self.doc_sep.encode("utf-8"), self.max_doc_bytes)
        for i, unit in enumerate(units):
            if i >= skip:
                yield unit


def _whole_file_unit(path: Path, max_doc_bytes: int) -> Iterator[tuple[object, str, int]]:
    size = path.stat().st_size
    if size > max_doc_bytes:  # never read a file we are going to skip
        yield _TOO_LARGE, str(path), size
        return
    yield path.read_bytes(), str(path), size


def _separated_units(path: Path, sep: bytes, max_doc_bytes: int) -> Iterator[tuple[object, str, int]]:
    """Blocks between separators, streamed: memory stays within max_doc_bytes + a read block.

    Splitting UTF-8 bytes on the UTF-8 separator gives exactly the text split (UTF-8 is self-synchronizing).
    """
    buf = bytearray()
    buf_offset = 0  # file offset of buf[0]
    search_from = 0
    dropping = False  # inside a block already reported too large: discard until the next separator
    with open(path, "rb") as f:
        while True:
            block = f.read(_READ_BLOCK)
            buf += block
            start = 0
            while True:
                end = buf.find(sep, search_from)
                if end < 0:
                    break
                where = f"{path}@{buf_offset + start}"
                unit = _TOO_LARGE if dropping else bytes(buf[start:end])
                yield unit, where, end - start + len(sep)
                dropping = False
                start = search_from = end + len(sep)
            if not block:
                # The last block, as str.split gives it: empty after a trailing separator or for an
                # empty file (then skipped as "empty").
                unit = _TOO_LARGE if dropping else bytes(buf[start:])
                yield unit, f"{path}@{buf_offset + start}", len(buf) - start
                return
            del buf[:start]
            buf_offset += start
            if len(buf) > max_doc_bytes + len(sep):
                # Keep only what could still be the start of a separator.
                keep = len(sep) - 1
                buf_offset += len(buf) - keep
                del buf[: len(buf) - keep]
                dropping = True
            search_from = max(0, len(buf) - len(sep) + 1) if block else 0


def _jsonl_units(path: Path, max_doc_bytes: int) -> Iterator[tuple[object, str, int]]:
    # A JSON string may take up to 6 bytes per text byte (\u00XX escapes): a longer line cannot hold a
    # small enough text, so it is dropped while reading instead of being held in memory.
    max_line = 6 * max_doc_bytes + 4096
    with open(path, "rb") as f:
        line_number = 0
        while True:
            line = f.readline(max_line + 1)
            if not line:
                return
            line_number += 1
            nbytes = len(line)
            if len(line) > max_line and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = f.readline(_READ_BLOCK)
                    nbytes += len(line)
                yield _TOO_LARGE, f"{path}:{line_number}", nbytes
            else:
                yield line, f"{path}:{line_number}", nbytes


_MISSING_COLUMN = object()


def _hf_offline() -> Optional[str]:
    """The HF offline variable that is set to a true value, if any."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def _parquet_units(path: Path, text_field: str, skip: int) -> Iterator[tuple[object, str, int]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    rows = parquet.metadata.num_rows
    size = path.stat().st_size
    has_column = text_field in parquet.schema_arrow.names
    row = 0
    for group in range(parquet.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        if row + group_rows <= skip:  # whole row group before the restart point: not even read
            row += group_rows
            continue
        if not has_column:
            values = [_MISSING_COLUMN] * group_rows
        else:
            values = parquet.read_row_group(group, columns=[text_field]).column(0).to_pylist()
        for value in values:
            if row >= skip:
                # progress: the file's bytes spread evenly over its rows
                yield value, f"{path}#row{row}", size * (row + 1) // rows - size * row // rows
            row += 1


class HubSource:
    """Rows of a Hugging Face dataset streamed with `datasets.load_dataset(..., streaming=True)`.

    `dataset` is a hub name (e.g. HuggingFaceFW/fineweb-edu with name="sample-10BT") or a local
    folder/builder `datasets` understands. Worker split: by data file (`IterableDataset.shard`, so a
    worker downloads only its files) when the dataset has at least num_workers files, else by row
    number modulo num_workers.
    """

    def __init__(
        self,
        dataset: str,
        name: Optional[str] = None,
        split: str = "train",
        text_field: str = "text",
        max_doc_bytes: int = 256 << 20,
        worker: int = 0,
        num_workers: int = 1,
    ):
        if not 0 <= worker < num_workers:
            raise UserError(f"--worker {worker} must be in 0..{num_workers - 1}")
        self.dataset, self.name, self.split = dataset, name, split
        self.text_field, self.max_doc_bytes = text_field, max_doc_bytes
        self.worker, self.num_workers = worker, num_workers
        self.end_position: Optional[Position] = None
        self._stream = None

    def describe(self) -> dict:
        return {
            "kind": "dataset",
            "dataset": self.dataset,
            "name": self.name,
            "split": self.split,
            "text_field": self.text_field,
            "max_doc_bytes": self.max_doc_bytes,
            "worker": self.worker,
            "num_workers": self.num_workers,
            "split_by": "file" if self._by_file() else "record",
        }

    def _by_file(self) -> bool:
        return self.num_workers > 1 and getattr(self.open(), "n_shards", 0) >= self.num_workers

    def _part(self):
        """This worker's rows: its data files when split by file, else the whole stream (filtered later)."""
        stream = self.open()
        return stream.shard(num_shards=self.num_workers, index=self.worker) if self._by_file() else stream

    def _mine(self, row: int) -> bool:
        return self._by_file() or row % self.num_workers == self.worker

    def open(self):
        """Connects to the dataset now (the CLI calls it first, so an offline run fails before any work).

        A name that looks like a local path never reaches the network: if it does not exist, that is
        the error. In HF offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) a hub name is refused at
        once, without waiting for `datasets` to import and give up."""
        if self._stream is not None:
            return self._stream
        # Hub names are NAME or OWNER/NAME; anything else (./x, /x, ~/x, a/b/c, an existing path) is local.
        name = self.dataset
        looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()
        if looks_local and not Path(self.dataset).expanduser().exists():
            raise UserError(f"--dataset {self.dataset!r}: no such local folder (a hub name is OWNER/NAME)")
        offline = _hf_offline()
        if offline and not looks_local:
            raise UserError(
                f"--dataset {self.dataset!r} streams from the Hugging Face hub, but {offline} is set (no "
                "network): download the files elsewhere and pass them with --files (jsonl/parquet)"
            )
        try:
            import datasets
        except ImportError as e:
            raise UserError("--dataset needs the `datasets` package: pip install datasets") from e
        try:
            self._stream = datasets.load_dataset(
                self.dataset, name=self.name, split=self.split, streaming=True
            )
        except Exception as e:  # datasets raises many kinds (ConnectionError, FileNotFoundError, ...)
            first_line = (str(e).strip().splitlines() or [""])[0][:300]
            raise UserError(
                f"cannot open dataset {self.dataset!r} (name={self.name!r}, split={self.split!r}): streaming "
                "from the Hugging Face hub needs network access; offline, download the files elsewhere and "
                f"pass them with --files (jsonl/parquet) [{type(e).__name__}: {first_line}]"
            ) from e
        return self._stream

    def _split_info(self):
        info = getattr(self.open(), "info", None)
        splits = getattr(info, "splits", None) or {}
        return splits.get(self.split) if hasattr(splits, "get") else None

    def total_bytes(self) -> Optional[int]:
        split_info = self._split_info()
        num_bytes = getattr(split_info, "num_bytes", None)
        return num_bytes // self.num_workers if num_bytes else None

    def bytes_before(self, position: Position) -> int:
        return 0

    def count_part_records(self) -> int:
        split_info = self._split_info()
        rows = getattr(split_info, "num_examples", None)
        if rows and not self._by_file():
            return len(range(self.worker, rows, self.num_workers))
        return sum(1 for row, _ in enumerate(self._part()) if self._mine(row))

    def records(self, start: Position = Position()) -> Iterator[Record]:
        stream = self._part()
        if start.record_in_file:
            stream = stream.skip(start.record_in_file)
        row, part_record = start.record_in_file, start.part_record
        by_file = self._by_file()
        for example in stream:
            position = Position(0, row, row, part_record)
            row += 1
            if not by_file and position.record_index % self.num_workers != self.worker:
                continue
            part_record += 1
            if not isinstance(example, dict) or self.text_field not in example:
                text, skip = None, "missing_field"
            else:
                text, skip = _text_record(example[self.text_field], self.max_doc_bytes)
            nbytes = len(text.encode("utf-8")) if text is not None else 0
            yield Record(position, text, skip, f"{self.dataset}#{position.record_index}", nbytes)
        self.end_position = Position(1, 0, row, part_record)
