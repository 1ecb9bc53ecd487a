"""Corpora or FineWeb-Edu -> llm.c token shards with bpe_fast (`python -m gpt.prepare --help`).

    python -m gpt.prepare --files 'corpus/*.txt' --tokenizer gpt2 --out shards/
    python -m gpt.prepare --files book.txt --doc-sep '\\n\\n' --tokenizer vocab.json --out shards/
    python -m gpt.prepare --dataset HuggingFaceFW/fineweb-edu --name sample-10BT --tokenizer gpt2 --out edu10B

Output (DESIGN.md section 5): `val_NNNNNN.bin` and `train_NNNNNN.bin` shards (every document preceded
by <|endoftext|>; documents straddle shards of their split), `manifest.json` when done (see
gpt/shards/manifest.py), and `progress.json` while running.

Validation split: --val-fraction (default 1%) of the documents, chosen by a hash of their text: the
same on every run, whatever the file order, and duplicates never straddle train and val. Local files
are read once first so that even a few documents give at least one val and one train document.

Restart: run the same command again. Completed shards are kept; the job continues where they end and
produces byte-identical shards. A finished folder is left as it is.

Many processes or machines: give each `--worker i --num-workers n` (same --out, e.g. a shared disk);
worker i writes OUT/worker_{i:04d}/ with its own manifest. Then merge:

    for i in 0 1 2 3; do python -m gpt.prepare --files 'edu/*.parquet' --tokenizer gpt2 --out edu \\
        --worker $i --num-workers 4 & done; wait
    python -m gpt.prepare merge-manifests edu/worker_* --out edu
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Optional, Sequence

from bpe_fast.cliutil import (
    ArgumentParser,
    UserError,
    bounded,
    fraction,
    non_negative_int,
    positive_int,
    run_main,
)
from gpt.shards.job import (
    BATCH_BYTES_PER_THREAD,
    DEFAULT_MAX_DOC_BYTES,
    DEFAULT_SHARD_SIZE,
    MIN_BATCH_BYTES,
    prepare,
)
from gpt.shards.merge import merge_manifests
from gpt.shards.sources import FileSource, HubSource, expand_files
from gpt.shards.split import DEFAULT_VAL_FRACTION
from gpt.tokenizer import EOT_TEXT, load_tokenizer

PROG = "python -m gpt.prepare"


def _unescape(text: str) -> str:
    """Turns the two-character escapes \\n \\t \\r \\\\ typed on a command line into the characters."""
    return re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


def _count(text: str) -> int:
    """A positive count, also written 1e8 or 100_000_000."""
    cleaned = text.replace("_", "")
    if re.fullmatch(r"\d+(\.\d+)?[eE]\d+", cleaned):
        value = float(cleaned)
        if value != int(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        cleaned = str(int(value))
    return positive_int(cleaned)


_count.__name__ = "int"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Tokenize corpora (local files or a Hugging Face dataset) into llm.c token shards with bpe_fast. "
        f"`{PROG} merge-manifests PART_DIR... --out DIR` combines --worker parts.",
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
    inputs.add_argument("--max-doc-bytes", type=_count, default=DEFAULT_MAX_DOC_BYTES,
                        help=f"skip (and count as too_large) documents over this many UTF-8 bytes "
                        f"(default: {DEFAULT_MAX_DOC_BYTES})")  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--tokenizer", default="gpt2", help="'gpt2' (bpe_fast's GPT-2) or a bpe_fast vocab.json "
                     "(default: gpt2); the manifest records it relative to --out, with its sha256")  # fmt: skip
    out.add_argument("--eot-token", default=EOT_TEXT, help=f"special token put before every document "
                     f"(default: {EOT_TEXT})")  # fmt: skip
    out.add_argument(
        "--out", required=True, help="output folder (with --num-workers > 1: OUT/worker_{i:04d})"
    )
    out.add_argument("--shard-size", type=_count, default=DEFAULT_SHARD_SIZE,
                     help=f"tokens per shard (default: {DEFAULT_SHARD_SIZE:_}; 1e8 and 100_000_000 are understood)")  # fmt: skip
    out.add_argument("--val-fraction", type=fraction, default=DEFAULT_VAL_FRACTION,
                     help="share of the documents held out for validation, chosen by a hash of their text, in "
                     f"[0, 1); 0 = no val split (default: {DEFAULT_VAL_FRACTION})")  # fmt: skip
    out.add_argument("--overwrite", action="store_true", help="delete an earlier gpt.prepare output in --out and "
                     "start over (default: resume an unfinished run, keep a finished one)")  # fmt: skip
    run = parser.add_argument_group("execution")
    run.add_argument("--threads", type=non_negative_int, default=0, help="encoding threads (default 0: all cores); "
                     "output is identical for any value")  # fmt: skip
    run.add_argument("--batch-bytes", type=_count,
                     help=f"text per encoding batch (default: {BATCH_BYTES_PER_THREAD >> 10} KiB per thread, at least "
                     f"{MIN_BATCH_BYTES >> 20} MiB); memory ~ a few batches + one shard of tokens per split")  # fmt: skip
    run.add_argument(
        "--worker",
        type=non_negative_int,
        default=0,
        help="this process's part, 0..num_workers-1 (default: 0)",
    )
    run.add_argument("--num-workers", type=bounded(int, minimum=1), default=1, help="how many parts the job is split "
                     "into: by file when there are at least that many files, else by record number modulo "
                     "(default: 1)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    return parser


def build_merge_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=f"{PROG} merge-manifests",
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


def _source(args):
    doc_sep = _unescape(args.doc_sep) if args.doc_sep is not None else None
    if args.files:
        return FileSource(
            expand_files(args.files), text_field=args.text_field, doc_sep=doc_sep, max_doc_bytes=args.max_doc_bytes,
            worker=args.worker, num_workers=args.num_workers, input_format=args.input_format,
        )  # fmt: skip
    source = HubSource(
        args.dataset, name=args.name, split=args.split, text_field=args.text_field,
        max_doc_bytes=args.max_doc_bytes, worker=args.worker, num_workers=args.num_workers,
    )  # fmt: skip
    source.open()  # offline or a wrong name: fail before any other work
    return source


def main(argv: Optional[Sequence[str]] = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    merging = bool(argv) and argv[0] in ("merge-manifests", "merge")
    args = (build_merge_parser() if merging else build_parser()).parse_args(argv[1:] if merging else argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(name)s: %(message)s",
    )
    if merging:
        merged = merge_manifests(args.parts, args.out)
        print(f"merged {len(args.parts)} parts into {args.out}: {merged['num_tokens']} tokens, "
              f"{len(merged['shards'])} shards")  # fmt: skip
        return 0
    if bool(args.files) == bool(args.dataset):
        raise UserError("give exactly one of --files GLOB or --dataset NAME")
    if args.worker >= args.num_workers:
        raise UserError(f"--worker must be in 0..{args.num_workers - 1} (--num-workers {args.num_workers})")
    if args.tokenizer != "gpt2" and not Path(args.tokenizer).is_file():
        load_tokenizer(args.tokenizer)  # its one-line error, before reading any input
    source = _source(args)
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


if __name__ == "__main__":
    run_main(main, PROG)
