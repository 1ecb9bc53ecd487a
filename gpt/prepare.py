"""Corpora or FineWeb-Edu -> llm.c token shards with bpe_fast (`python -m gpt.prepare --help`).

    python -m gpt.prepare --files 'data/corpora/*.txt' --doc-sep '\\n\\n' --tokenizer gpt2 --out runs/shards
    python -m gpt.prepare --dataset HuggingFaceFW/fineweb-edu --name sample-10BT --tokenizer gpt2 --out edu10B

Output (DESIGN.md section 5): `{split}_{index:06d}.bin` shards whose concatenation by index is the token
stream (every document preceded by <|endoftext|>, documents straddle shards), `manifest.json` (see
gpt/manifest.py) when done, and `progress.json` while running. Shard 0 is `val` (as build-nanogpt),
or with `--val-fraction F` the first F of this part's records are `val` (their last shard is short).

Speed: a reader thread streams documents into batches (a bounded queue: memory does not grow with the
corpus); the main thread encodes each batch in bpe_fast's Rust core on all cores with the GIL released.

Restart: run the same command again. Completed shards are kept; the job continues where the last
completed shard ended and produces byte-identical shards. A finished folder is left as it is.

Many processes or machines: give each `--worker i --num-workers n` (same --out, e.g. a shared disk);
worker i writes OUT/worker_{i:04d}/ with its own manifest. Then merge:

    for i in 0 1 2 3; do python -m gpt.prepare --files 'edu/*.parquet' --tokenizer gpt2 --out edu \\
        --worker $i --num-workers 4 & done; wait
    python -m gpt.prepare merge-manifests edu/worker_* --out edu

With the default validation split only worker 0 writes a val shard.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Union

from gpt.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    load_manifest,
    merge_manifests,
    tokenizer_sha256,
    write_manifest,
)
from gpt.prepare_encoder import EOT_TEXT, BatchEncoder, eot_token_id, tokenizer_vocab_size
from gpt.prepare_sources import FileSource, HubSource, Position, Record, expand_files
from gpt.prepare_writer import PROGRESS_NAME, Batch, Progress, ShardStreamWriter
from gpt.shards import ShardError, read_header, token_dtype

log = logging.getLogger("gpt.prepare")

DEFAULT_SHARD_SIZE = 100_000_000
# Text per encoding batch: enough documents to keep every thread busy, small enough that the few
# batches in flight (queued text, its copy in Rust, the ids) stay a small part of memory.
BATCH_BYTES_PER_THREAD = 512 << 10
MIN_BATCH_BYTES = 2 << 20


def default_batch_bytes(threads: Optional[int]) -> int:
    return max(MIN_BATCH_BYTES, BATCH_BYTES_PER_THREAD * (threads or os.cpu_count() or 1))


DEFAULT_MAX_DOC_BYTES = 256 << 20
_SHARD_NAME = re.compile(r"(val|train)_\d{6}\.bin")
_LOG_FIRST_SKIPS = 5  # bad records logged one by one per reason; the rest are counted (and logged at debug)

Source = Union[FileSource, HubSource]


class PrepareError(RuntimeError):
    """A job that cannot start or continue as asked (the message says why and what to do)."""


def load_tokenizer(spec: str):
    """bpe_fast's GPT-2 (`"gpt2"`) or a bpe_fast vocab file."""
    try:
        import bpe_fast
    except ImportError as e:
        raise PrepareError("gpt.prepare needs bpe_fast: pip install . (or maturin develop --release)") from e
    if spec == "gpt2":
        return bpe_fast.Tokenizer.gpt2()
    if not Path(spec).is_file():
        raise FileNotFoundError(f"--tokenizer {spec!r}: not 'gpt2' and not an existing vocab file")
    return bpe_fast.load(spec)


def _read_batches(records: Iterator[Record], batch_bytes: int, val_records: Optional[int]) -> Iterator[Batch]:
    """Groups records into batches of about `batch_bytes` of text; a batch never mixes val and train."""
    texts, positions, skips, size, input_bytes = [], [], [], 0, 0
    split = last = None
    for record in records:
        record_split = (
            None if val_records is None else ("val" if record.position.part_record < val_records else "train")
        )
        if (texts or skips) and record_split != split:
            yield Batch(texts, positions, skips, _after(last), split, input_bytes)
            texts, positions, skips, size, input_bytes = [], [], [], 0, 0
        split, last = record_split, record.position
        input_bytes += record.nbytes
        if record.skip is not None:
            skips.append((len(texts), record.skip, record.where))
            continue
        texts.append(record.text)
        positions.append(record.position)
        size += len(record.text)
        if size >= batch_bytes:
            yield Batch(texts, positions, skips, _after(last), split, input_bytes)
            texts, positions, skips, size, input_bytes = [], [], [], 0, 0
    if texts or skips:
        yield Batch(texts, positions, skips, _after(last), split, input_bytes)


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


def _job_config(source: Source, tokenizer_info: dict, shard_size: int, val: dict) -> dict:
    return {"source": source.describe(), "tokenizer": tokenizer_info, "shard_size": shard_size, "val": val}


def _our_files(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    names = (MANIFEST_NAME, PROGRESS_NAME)
    return sorted(
        p
        for p in out_dir.iterdir()
        if p.name in names
        or _SHARD_NAME.fullmatch(p.name)
        or (p.name.startswith(".") and p.name.endswith(".tmp"))
    )


def _remove_unlisted(out_dir: Path, progress: Progress) -> None:
    """Drops temp files and shards the progress file does not list (written after its last update)."""
    listed = {shard["file"] for shard in progress.shards}
    for path in _our_files(out_dir):
        if path.name.endswith(".tmp") or (_SHARD_NAME.fullmatch(path.name) and path.name not in listed):
            path.unlink()


def _verify_listed(out_dir: Path, progress: Progress) -> None:
    for shard in progress.shards:
        try:
            _, count = read_header(out_dir / shard["file"])
        except ShardError as e:
            raise PrepareError(f"cannot resume: {e}; start over with --overwrite") from e
        if count != shard["tokens"]:
            raise PrepareError(
                f"cannot resume: {out_dir / shard['file']} has {count} tokens, progress says {shard['tokens']}; "
                "start over with --overwrite"
            )


def _load_progress(out_dir: Path) -> Optional[Progress]:
    import json

    path = out_dir / PROGRESS_NAME
    if not path.exists():
        return None
    try:
        return Progress.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, json.JSONDecodeError) as e:
        raise PrepareError(f"{path}: unreadable progress file ({e}); start over with --overwrite") from e


def _same_job(recorded: dict, config: dict) -> bool:
    # The val record count is computed from the input; everything else must match as given.
    strip = lambda c: {**c, "val": {k: v for k, v in c["val"].items() if k != "records"}}  # noqa: E731
    return strip(recorded) == strip(config)


def prepare(
    source: Source,
    tokenizer,
    out_dir: Union[str, os.PathLike],
    *,
    tokenizer_spec: str,
    tokenizer_sha256_hex: Optional[str] = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    val_fraction: Optional[float] = None,
    eot_token: str = EOT_TEXT,
    threads: Optional[int] = None,
    batch_bytes: Optional[int] = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    """Tokenizes `source` into shards in `out_dir` (resuming a previous run there); returns the manifest.

    `val_fraction`: None = shard 0 is val (worker 0 only); 0 = no val; 0 < f <= 1 = the first
    round(f * records) records of this part are val (at least one).
    """
    out_dir = Path(out_dir)
    batch_bytes = batch_bytes or default_batch_bytes(threads)
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    if val_fraction is not None and not 0 <= val_fraction <= 1:
        raise ValueError(f"--val-fraction must be in [0, 1], got {val_fraction}")
    vocab_size = tokenizer_vocab_size(tokenizer)
    eot_id = eot_token_id(tokenizer, eot_token, repr(tokenizer_spec))
    if tokenizer_sha256_hex is None:
        tokenizer_sha256_hex = tokenizer_sha256(tokenizer_spec)
    tokenizer_info = {
        "spec": str(tokenizer_spec),
        "sha256": tokenizer_sha256_hex,
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "eot_token": eot_token,
    }
    if val_fraction is None:
        val = {"mode": "first_shard" if source.worker == 0 else "none"}
    elif val_fraction == 0:
        val = {"mode": "none"}
    else:
        val = {"mode": "fraction", "fraction": val_fraction}
    config = _job_config(source, tokenizer_info, shard_size, val)

    if overwrite:
        for path in _our_files(out_dir):
            path.unlink()
    manifest = load_manifest(out_dir)
    progress = _load_progress(out_dir)
    if manifest is not None and progress is None:
        recorded = manifest.get("source", {}).get("job")
        if isinstance(recorded, dict) and "val" in recorded and _same_job(recorded, config):
            log.info("%s is already complete (%d tokens); nothing to do", out_dir, manifest["num_tokens"])
            return manifest
        raise PrepareError(
            f"{out_dir} holds shards of another job (manifest.json differs); use --overwrite or another --out"
        )
    if progress is not None:
        if not _same_job(progress.config, config):
            raise PrepareError(
                f"{out_dir}/{PROGRESS_NAME} belongs to a job with other settings or inputs; "
                "run the same command to resume it, or use --overwrite / another --out"
            )
        config = progress.config  # keeps the val record count of the first run
        _verify_listed(out_dir, progress)
        _remove_unlisted(out_dir, progress)
        log.info(
            "resuming %s: %d shards (%d tokens) done, continuing at input record %d",
            out_dir, len(progress.shards), progress.num_tokens, progress.position.record_index,
        )  # fmt: skip
    else:
        stray = [p.name for p in _our_files(out_dir)]
        if stray:
            raise PrepareError(f"{out_dir} already holds {stray[:3]}; use --overwrite or another --out")
        if val["mode"] == "fraction":
            log.info("counting the input's records for --val-fraction (one extra pass over the input)")
            part_records = source.count_part_records()
            val["records"] = max(1, round(val_fraction * part_records)) if part_records else 0
        progress = Progress(config=config)
        out_dir.mkdir(parents=True, exist_ok=True)

    val_records = config["val"].get("records") if config["val"]["mode"] == "fraction" else None
    writer = ShardStreamWriter(
        out_dir, progress, vocab_size, shard_size, first_shard_is_val=config["val"]["mode"] == "first_shard"
    )
    if not progress.done_reading:
        writer.save()  # a progress file from the start: a killed first shard still resumes cleanly
        _run(source, tokenizer, eot_id, threads, batch_bytes, writer, progress, val_records, show_progress)

    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tokenizer": {k: tokenizer_info[k] for k in ("spec", "sha256", "vocab_size", "eot_id")},
        "dtype": "uint16" if token_dtype(vocab_size).itemsize == 2 else "uint32",
        "shard_size": shard_size,
        "shards": progress.shards,
        "num_tokens": progress.num_tokens,
        "num_documents": progress.num_documents,
        "source": {**source.describe(), "val": config["val"], "job": config},
        "skipped": dict(sorted(progress.skipped.items())),
    }
    write_manifest(out_dir, manifest)
    (out_dir / PROGRESS_NAME).unlink(missing_ok=True)
    splits = {s["split"] for s in progress.shards}
    if "train" not in splits:
        log.warning(
            "%s has no train shard: all %d tokens fit the val split; use a smaller --shard-size or --val-fraction",
            out_dir, progress.num_tokens,
        )  # fmt: skip
    log.info(
        "%s: %d documents, %d tokens in %d shards; skipped %s",
        out_dir, progress.num_documents, progress.num_tokens, len(progress.shards), progress.skipped or "none",
    )  # fmt: skip
    return manifest


def _run(
    source, tokenizer, eot_id, threads, batch_bytes, writer, progress, val_records, show_progress
) -> None:
    from tqdm import tqdm

    encoder = BatchEncoder(tokenizer, eot_id, threads)
    if not encoder.fast:
        log.warning(
            "the tokenizer has no bpe_fast core encode_batch_to_buffer: encoding through Python lists (slow)"
        )
    reader = _Reader(_read_batches(source.records(progress.position), batch_bytes, val_records))
    total = source.total_bytes()
    bar = tqdm(
        total=total,
        initial=min(source.bytes_before(progress.position), total or 0),
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
            ids, ends = encoder(batch.texts)
            writer.add(batch, ids, ends)
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


def _unescape(text: str) -> str:
    """Turns the two-character escapes \\n \\t \\r \\\\ typed on a command line into the characters."""
    return re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


def _positive_int(text: str) -> int:
    value = int(float(text)) if re.fullmatch(r"\d+(\.\d+)?e\d+", text) else int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpt.prepare",
        description="Tokenize corpora (local files or a Hugging Face dataset) into llm.c token shards with bpe_fast. "
        "`python -m gpt.prepare merge-manifests PART_DIR... --out DIR` combines --worker parts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    inputs = parser.add_argument_group("input (one of --files / --dataset)")
    inputs.add_argument(
        "--files", action="extend", nargs="+", metavar="GLOB",
        help="local inputs: paths or quoted globs, several per flag and repeatable (files are taken in the order "
        "given; each glob's matches sorted; '**' recurses). .txt = one document per file (or per "
        "--doc-sep block), .jsonl = one JSON object per line, .parquet = one row per document",
    )  # fmt: skip
    inputs.add_argument("--dataset", help="Hugging Face dataset streamed with datasets.load_dataset(streaming=True), "
                        "e.g. HuggingFaceFW/fineweb-edu (needs network; offline use --files)")  # fmt: skip
    inputs.add_argument("--name", help="dataset config, e.g. sample-10BT")
    inputs.add_argument("--split", default="train", help="dataset split to read (default: train)")
    inputs.add_argument("--text-field", default="text", help="field/column holding the text in jsonl/parquet/dataset "
                        "records (default: text)")  # fmt: skip
    inputs.add_argument(
        "--doc-sep", help="split .txt files into documents at this separator (e.g. '\\n\\n'; \\n \\t \\r \\\\ are "
        "understood); default: each .txt file is one document",
    )  # fmt: skip
    inputs.add_argument("--input-format", choices=["auto", "txt", "jsonl", "parquet"], default="auto",
                        help="format of --files (default: from the extension)")  # fmt: skip
    inputs.add_argument("--max-doc-bytes", type=_positive_int, default=DEFAULT_MAX_DOC_BYTES,
                        help=f"skip (and count as too_large) documents over this many UTF-8 bytes "
                        f"(default: {DEFAULT_MAX_DOC_BYTES})")  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--tokenizer", default="gpt2", help="'gpt2' (bpe_fast's GPT-2) or a bpe_fast vocab.json "
                     "(default: gpt2)")  # fmt: skip
    out.add_argument("--eot-token", default=EOT_TEXT, help=f"special token put before every document "
                     f"(default: {EOT_TEXT})")  # fmt: skip
    out.add_argument(
        "--out", required=True, help="output folder (with --num-workers > 1: OUT/worker_{i:04d})"
    )
    out.add_argument("--shard-size", type=_positive_int, default=DEFAULT_SHARD_SIZE,
                     help=f"tokens per shard (default: {DEFAULT_SHARD_SIZE:_}; 1e8 and 100_000_000 are understood)")  # fmt: skip
    out.add_argument("--val-fraction", type=float, help="put the first FRACTION of the records in the val split "
                     "(0 = no val); default: shard 0 is val, as build-nanogpt")  # fmt: skip
    out.add_argument("--overwrite", action="store_true", help="delete this job's earlier shards/manifest in --out "
                     "and start over (default: resume an unfinished run, keep a finished one)")  # fmt: skip
    run = parser.add_argument_group("execution")
    run.add_argument("--threads", type=int, default=0, help="encoding threads (default 0: all cores); output is "
                     "identical for any value")  # fmt: skip
    run.add_argument("--batch-bytes", type=_positive_int,
                     help=f"text per encoding batch (default: {BATCH_BYTES_PER_THREAD >> 10} KiB per thread, at least "
                     f"{MIN_BATCH_BYTES >> 20} MiB); memory ~ a few batches + one shard of tokens")  # fmt: skip
    run.add_argument(
        "--worker", type=int, default=0, help="this process's part, 0..num_workers-1 (default: 0)"
    )
    run.add_argument("--num-workers", type=int, default=1, help="how many parts the job is split into: by file when "
                     "there are at least that many files, else by record number modulo (default: 1)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    return parser


def build_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpt.prepare merge-manifests",
        description="Combine finished --worker parts into one shard folder: shards are renumbered (hard links, "
        "copies across filesystems) part after part and one manifest.json sums the counts.",
    )
    parser.add_argument(
        "parts", nargs="+", metavar="PART_DIR", help="folders written by --worker i --num-workers n"
    )
    parser.add_argument(
        "--out", required=True, help="folder for the merged shards + manifest.json (no shards in it yet)"
    )
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    merging = bool(argv) and argv[0] in ("merge-manifests", "merge")
    args = (build_merge_parser() if merging else build_parser()).parse_args(argv[1:] if merging else argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(name)s: %(message)s")
    try:
        if merging:
            merged = merge_manifests(args.parts, args.out)
            print(f"merged {len(args.parts)} parts into {args.out}: {merged['num_tokens']} tokens, "
                  f"{len(merged['shards'])} shards")  # fmt: skip
            return 0
        if bool(args.files) == bool(args.dataset):
            raise SystemExit("give exactly one of --files GLOB or --dataset NAME")
        if args.num_workers < 1 or not 0 <= args.worker < args.num_workers:
            raise SystemExit(
                f"--worker must be in 0..--num-workers-1, got {args.worker} of {args.num_workers}"
            )
        doc_sep = _unescape(args.doc_sep) if args.doc_sep is not None else None
        if args.files:
            source = FileSource(
                expand_files(args.files), text_field=args.text_field, doc_sep=doc_sep,
                max_doc_bytes=args.max_doc_bytes, worker=args.worker, num_workers=args.num_workers,
                input_format=args.input_format,
            )  # fmt: skip
        else:
            source = HubSource(
                args.dataset, name=args.name, split=args.split, text_field=args.text_field,
                max_doc_bytes=args.max_doc_bytes, worker=args.worker, num_workers=args.num_workers,
            )  # fmt: skip
            source.open()
        out_dir = Path(args.out)
        if args.num_workers > 1:
            out_dir = out_dir / f"worker_{args.worker:04d}"
        tokenizer = load_tokenizer(args.tokenizer)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            prepare(
                source, tokenizer, out_dir, tokenizer_spec=args.tokenizer, shard_size=args.shard_size,
                val_fraction=args.val_fraction, eot_token=args.eot_token, threads=args.threads or None,
                batch_bytes=args.batch_bytes, overwrite=args.overwrite, show_progress=not args.no_progress,
            )  # fmt: skip
        return 0
    except (PrepareError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed shards are kept; run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
