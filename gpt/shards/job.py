"""The shard job: a source of documents + a tokenizer -> a finished shard folder (`prepare`).

One job: decide what this run does with the output folder (start, resume, keep a finished one, refuse
another job's), run the read -> encode -> write loop, and write the manifest only when every shard is
complete and the folder holds a train split.

Speed: a reader thread streams documents into batches (a bounded queue: memory does not grow with the
corpus); the main thread encodes each batch in bpe_fast's Rust core on all cores with the GIL released.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Union

from bpe_fast.cliutil import UserError
from bpe_fast.files import MARKER_NAME, OverwriteRefused, marker_tool, remove_stale_temps_in, write_marker
from gpt.tokenizer import EOT_TEXT

from .encoder import BatchEncoder, eot_token_id
from .format import token_dtype
from .manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    load_manifest,
    tokenizer_entry,
    write_manifest,
)
from .sources import FileSource, HubSource, Position, Record
from .split import DEFAULT_VAL_FRACTION, ValSplit, document_key, exact_threshold, fixed_threshold
from .writer import PROGRESS_NAME, Batch, Cursor, Progress, ShardStreamWriter

log = logging.getLogger("gpt.prepare")

TOOL = "gpt.prepare"  # the --overwrite marker's tool name
DEFAULT_SHARD_SIZE = 100_000_000
DEFAULT_MAX_DOC_BYTES = 256 << 20
# Text per encoding batch: enough documents to keep every thread busy, small enough that the few
# batches in flight (queued text, its copy in Rust, the ids) stay a small part of memory.
BATCH_BYTES_PER_THREAD = 512 << 10
MIN_BATCH_BYTES = 2 << 20
SHARD_NAME = re.compile(r"(val|train)_\d{6}\.bin")
_LOG_FIRST_SKIPS = 5  # bad records logged one by one per reason; the rest are counted (and logged at debug)

Source = Union[FileSource, HubSource]


def default_batch_bytes(threads: Optional[int]) -> int:
    return max(MIN_BATCH_BYTES, BATCH_BYTES_PER_THREAD * (threads or os.cpu_count() or 1))


def _is_ours(name: str) -> bool:
    return name in (MANIFEST_NAME, PROGRESS_NAME, MARKER_NAME) or bool(SHARD_NAME.fullmatch(name))


def _our_files(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if _is_ours(p.name))


# ------------------------------------------------------------------------------------------ reading


def _split_of(record: Record, val: ValSplit) -> str:
    return "val" if val.is_val(record.text) else "train"


def _read_batches(
    records: Iterator[Record], batch_bytes: int, val: ValSplit, cursors: dict[str, Cursor]
) -> Iterator[Batch]:
    """Groups records into batches of about `batch_bytes` of text, leaving out what a split already
    wrote before a restart (its records before its cursor)."""

    def fresh():
        return Batch([], [], [], [], Position(), 0)

    batch, size, last = fresh(), 0, None
    for record in records:
        split = _split_of(record, val)  # bad records count with train
        last = record.position
        batch.input_bytes += record.nbytes
        if record.position.record_index < cursors[split].position.record_index:
            continue  # written (or counted) before the restart
        if record.skip is not None:
            batch.skips.append((record.position, record.skip, record.where))
            continue
        batch.texts.append(record.text)
        batch.positions.append(record.position)
        batch.splits.append(split)
        size += len(record.text)
        if size >= batch_bytes:
            batch.next_position = _after(last)
            yield batch
            batch, size = fresh(), 0
    if last is not None and (batch.texts or batch.skips or batch.input_bytes):
        batch.next_position = _after(last)
        yield batch


def _after(position: Position) -> Position:
    """The position of the record after `position` (the file's next record; past its end = next file)."""
    return Position(
        position.file_index, position.record_in_file + 1, position.record_index + 1, position.part_record + 1
    )


class _Reader(threading.Thread):
    """Reads batches into a bounded queue so reading overlaps encoding; errors are passed through."""

    _END = object()

    def __init__(self, batches: Iterator[Batch], depth: int = 2):
        super().__init__(name="gpt.prepare reader", daemon=True)
        self.batches, self.queue, self.stopped = batches, queue.Queue(maxsize=depth), threading.Event()

    def run(self) -> None:
        try:
            for batch in self.batches:
                if not self._put(batch):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the main thread, which raises it
            self._put(e)

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


# ------------------------------------------------------------------------------------------ the folder


def _load_progress(out_dir: Path) -> Optional[Progress]:
    path = out_dir / PROGRESS_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable progress file ({e}); start over with --overwrite") from e
    return Progress.from_json(data, str(path))


def _same_job(recorded: dict, config: dict) -> bool:
    # The val threshold is computed from the input; everything else must match as given.
    def strip(c):
        return {**c, "val": {k: v for k, v in c.get("val", {}).items() if k != "threshold"}}

    return strip(recorded) == strip(config)


def _verify_listed(out_dir: Path, progress: Progress) -> None:
    from .format import ShardError, read_header

    for shard in progress.shards:
        try:
            _, count = read_header(out_dir / shard["file"])
        except ShardError as e:
            raise UserError(f"cannot resume: {e}; start over with --overwrite") from e
        if count != shard["tokens"]:
            raise UserError(
                f"cannot resume: {out_dir / shard['file']} has {count} tokens, progress says {shard['tokens']}; "
                "start over with --overwrite"
            )


def _remove_unlisted(out_dir: Path, progress: Progress) -> None:
    """Drops shards the progress file does not list (written after its last update, before a kill)."""
    listed = {shard["file"] for shard in progress.shards}
    for path in _our_files(out_dir):
        if SHARD_NAME.fullmatch(path.name) and path.name not in listed:
            path.unlink()


def _clear(out_dir: Path) -> None:
    """--overwrite: removes a previous gpt.prepare output, and nothing that gpt.prepare did not make."""
    ours = _our_files(out_dir)
    if not ours:
        return
    made_by_us = marker_tool(out_dir) == TOOL or (
        # Folders from before the marker: a manifest or progress file of this tool says the same.
        marker_tool(out_dir) is None and any(p.name in (MANIFEST_NAME, PROGRESS_NAME) for p in ours)
    )
    if not made_by_us:
        raise OverwriteRefused(
            f"--out {out_dir} holds shards that gpt.prepare did not write (no {MARKER_NAME} marker of "
            "gpt.prepare, no manifest), so --overwrite will not delete them: choose another --out"
        )
    for path in ours:
        path.unlink()


def _undo(out_dir: Path, progress: Progress, created: bool) -> None:
    """Removes what this job wrote, after it found it has nothing to train on (nothing stays half-made)."""
    for name in [s["file"] for s in progress.shards] + [PROGRESS_NAME, MARKER_NAME]:
        (out_dir / name).unlink(missing_ok=True)
    if created:
        try:
            out_dir.rmdir()
        except OSError:
            pass


def _skips_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) or "none"


def _choose_val(source: Source, fraction: float, where: str) -> dict:
    """The val rule for a fresh job (see gpt.shards.split); local inputs are read once for it."""
    if isinstance(source, HubSource) or fraction == 0:
        # A stream is not read twice; without a val split there is nothing to choose (an input with no
        # document is then found at the end).
        return {"fraction": fraction, "rule": config_rule(source), "threshold": fixed_threshold(fraction)}
    log.debug("reading the input once to choose the validation documents")
    keys, skipped = [], {}
    for record in source.records():
        if record.text is None:
            skipped[record.skip] = skipped.get(record.skip, 0) + 1
        else:
            keys.append(document_key(record.text))
    if not keys:
        hint = " (check --text-field)" if "missing_field" in skipped or "not_text" in skipped else ""
        raise UserError(
            f"{where}: no document to tokenize: {sum(skipped.values())} records, all skipped "
            f"({_skips_text(skipped)}){hint}"
        )
    return {"fraction": fraction, "rule": "exact", "threshold": exact_threshold(keys, fraction, where)}


def config_rule(source: Source) -> str:
    return "fixed" if isinstance(source, HubSource) else "exact"


# ------------------------------------------------------------------------------------------ the job


def prepare(
    source: Source,
    tokenizer,
    out_dir: Union[str, os.PathLike],
    *,
    tokenizer_spec: str,
    shard_size: int = DEFAULT_SHARD_SIZE,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    eot_token: str = EOT_TEXT,
    threads: Optional[int] = None,
    batch_bytes: Optional[int] = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    """Tokenizes `source` into shards in `out_dir` (resuming a previous run there); returns the manifest.

    `val_fraction` (0 <= f < 1) of the documents, chosen by a hash of their text, form the val split;
    0 = no val split. `tokenizer_spec` is "gpt2" or the vocab file's path (recorded relative to `out_dir`).
    """
    out_dir = Path(out_dir)
    batch_bytes = batch_bytes or default_batch_bytes(threads)
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    vocab_size = int(tokenizer.vocab_size)
    eot_id = eot_token_id(tokenizer, eot_token, f"--tokenizer {tokenizer_spec}")
    tokenizer_info = tokenizer_entry(tokenizer_spec, out_dir, vocab_size, eot_id)
    config = {
        "source": source.describe(),
        "tokenizer": tokenizer_info,
        "eot_token": eot_token,
        "shard_size": shard_size,
        "val": {"fraction": val_fraction, "rule": config_rule(source)},
    }
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder: choose another --out")
    remove_stale_temps_in(out_dir, _is_ours)  # what killed runs of this job left
    if overwrite:
        _clear(out_dir)
    manifest = load_manifest(out_dir)
    progress = _load_progress(out_dir)
    created = False
    if manifest is not None and progress is None:
        recorded = manifest.get("source", {}).get("job")
        if isinstance(recorded, dict) and _same_job(recorded, config):
            log.info("%s is already complete (%d tokens); nothing to do", out_dir, manifest["num_tokens"])
            return manifest
        raise UserError(
            f"--out {out_dir} holds shards of another job (its manifest.json differs): pass --overwrite to "
            "replace them, or choose another --out"
        )
    if progress is not None:
        if not _same_job(progress.config, config):
            raise UserError(
                f"{out_dir / PROGRESS_NAME} belongs to a job with other settings or inputs: run that command "
                "again to resume it, or pass --overwrite / choose another --out"
            )
        config = progress.config  # keeps the val threshold of the first run
        _verify_listed(out_dir, progress)
        _remove_unlisted(out_dir, progress)
        log.info(
            "resuming %s: %d shards (%d tokens) done, continuing at input record %d",
            out_dir, len(progress.shards), progress.num_tokens, progress.resume_position.record_index,
        )  # fmt: skip
    else:
        # Our own marker alone: a run killed before its first progress file; it starts afresh.
        stray = [p.name for p in _our_files(out_dir) if p.name != MARKER_NAME or marker_tool(out_dir) != TOOL]
        if stray:
            raise UserError(
                f"--out {out_dir} already holds {', '.join(stray[:3])}: pass --overwrite to replace them, "
                "or choose another --out"
            )
        config["val"] = _choose_val(
            source, val_fraction, "--files" if isinstance(source, FileSource) else "--dataset"
        )
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        write_marker(out_dir, TOOL)
        progress = Progress(config=config)

    writer = ShardStreamWriter(out_dir, progress, vocab_size, shard_size)
    if not progress.done_reading:
        writer.save()  # a progress file from the start: a killed first shard still resumes cleanly
        val = ValSplit(config["val"]["threshold"])
        _run(source, tokenizer, eot_id, threads, batch_bytes, writer, progress, val, show_progress)

    splits = {s["split"] for s in progress.shards}
    if "train" not in splits:
        what = "no tokens at all" if not progress.shards else "only val shards"
        _undo(out_dir, progress, created)
        raise UserError(
            f"{out_dir}: the input gave {what} ({progress.num_documents} documents; skipped: "
            f"{_skips_text(progress.skipped)}), nothing to train on; check --files/--dataset and --text-field"
        )
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tokenizer": config["tokenizer"],
        "dtype": "uint16" if token_dtype(vocab_size).itemsize == 2 else "uint32",
        "shard_size": shard_size,
        "shards": progress.shards,
        "num_tokens": progress.num_tokens,
        "num_documents": progress.num_documents,
        "source": {**source.describe(), "val": config["val"], "job": config},
        "skipped": progress.skipped,
    }
    write_manifest(out_dir, manifest)
    (out_dir / PROGRESS_NAME).unlink(missing_ok=True)
    counts = {split: sum(1 for s in progress.shards if s["split"] == split) for split in ("val", "train")}
    log.info(
        "%s: %d documents, %d tokens in %d val + %d train shards; skipped %s",
        out_dir, progress.num_documents, progress.num_tokens, counts["val"], counts["train"],
        _skips_text(progress.skipped),
    )  # fmt: skip
    return manifest


def _run(source, tokenizer, eot_id, threads, batch_bytes, writer, progress, val, show_progress) -> None:
    from tqdm import tqdm

    encoder = BatchEncoder(tokenizer, eot_id, threads)
    start_at = progress.resume_position
    reader = _Reader(_read_batches(source.records(start_at), batch_bytes, val, progress.cursors))
    total = source.total_bytes()
    bar = tqdm(
        total=total,
        initial=min(source.bytes_before(start_at), total or 0),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="prepare",
        disable=not show_progress,
        dynamic_ncols=True,
    )
    skip_logged: dict[str, int] = {}
    start, documents, tokens = time.perf_counter(), 0, 0
    reader.start()
    try:
        for batch in reader:
            for _, reason, where in batch.skips:
                skip_logged[reason] = skip_logged.get(reason, 0) + 1
                level = logging.WARNING if skip_logged[reason] <= _LOG_FIRST_SKIPS else logging.DEBUG
                log.log(level, "skipping %s: %s", where, reason)
                if skip_logged[reason] == _LOG_FIRST_SKIPS:
                    log.warning(
                        "further %r records are counted in the manifest without a log line each", reason
                    )
            ids, offsets = encoder(batch.texts)
            writer.add(batch, ids, offsets)
            documents, tokens = documents + len(batch.texts), tokens + int(ids.size)
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(
                f"{documents / elapsed:,.0f} docs/s, {tokens / elapsed / 1e6:,.2f}M tok/s", refresh=False
            )
            bar.update(batch.input_bytes)
        end = source.end_position
        if end is None:
            raise RuntimeError("the source stopped without reporting its end position")
        writer.finish(end)
    finally:
        reader.stopped.set()
        bar.close()


__all__ = [
    "DEFAULT_MAX_DOC_BYTES",
    "DEFAULT_SHARD_SIZE",
    "SHARD_NAME",
    "TOOL",
    "default_batch_bytes",
    "prepare",
]
