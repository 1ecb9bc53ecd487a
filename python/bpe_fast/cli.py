"""The `bpe-fast` command line (DESIGN.md §3 CLI): train, encode, decode, roundtrip, compare, inspect, export.

User errors (bad files, bad arguments, bad vocab files) print one line to stderr and exit with status 2;
`roundtrip` exits 1 when the round trip is not exact.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from . import __version__
from .files import atomic_write_bytes, atomic_write_text
from .patterns import NAMES
from .tokenizer import Tokenizer

# The course report's tables 1-2 compare these words (Chinese from its corpus, English from its title).
REPORT_WORDS = ["博士", "论文", "专家", "in", "OF", "China", "MANUAL"]
PROGRAM = "bpe-fast"


class UserError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _read_text(path: str) -> str:
    file = Path(path)
    if file.is_dir():
        raise UserError(f"{file}: is a directory, expected a text file")
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{file}: invalid UTF-8 at byte offset {err.start}") from None


def _load_tokenizer(spec: str, pattern: Optional[str]) -> Tokenizer:
    if spec == "gpt2":
        if pattern is not None:
            raise UserError("--pattern cannot be used with --tokenizer gpt2")
        return Tokenizer.gpt2()
    if not Path(spec).exists():
        raise UserError(f"{spec}: no such vocab file (--tokenizer takes a vocab file or 'gpt2')")
    return Tokenizer.from_file(spec, pattern=pattern)


def _unescape(value: str) -> str:
    # Lets `--doc-sep '\n\n'` mean two newlines, as one would write it in Python.
    return value.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


def _special_policy(args: argparse.Namespace) -> dict:
    if args.allow_special:
        return {"allowed_special": "all"}
    if args.ordinary:
        return {"disallowed_special": ()}
    return {}


def _token_text(value: bytes) -> str:
    """A token shown as text when it is valid UTF-8, otherwise as a bytes literal (like the report)."""
    try:
        return repr(value.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(value)


def _ids_dtype(tok: Tokenizer) -> np.dtype:
    return np.dtype(np.uint16) if tok.vocab_size <= 2**16 else np.dtype(np.uint32)


def _read_ids(path: str) -> list[int] | np.ndarray:
    file = Path(path)
    if file.is_dir():
        raise UserError(f"{file}: is a directory, expected an ids file (.npy or text)")
    if file.suffix == ".npy":
        try:
            ids = np.load(file, allow_pickle=False)
        except ValueError as err:
            raise UserError(f"{file}: not a readable .npy file ({err})") from None
        if ids.dtype.kind not in "iu":
            raise UserError(f"{file}: holds {ids.dtype} values, expected integer token ids")
        return ids.reshape(-1)
    text = _read_text(path)
    ids = []
    for position, word in enumerate(text.replace(",", " ").replace("[", " ").replace("]", " ").split()):
        try:
            ids.append(int(word))
        except ValueError:
            raise UserError(f"{file}: item {position} ({word!r}) is not an integer token id") from None
    return ids


def _print_table(rows: list[list[str]], out) -> None:
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        cells = [cell + " " * (width - _width(cell)) for cell, width in zip(row, widths)]
        print("  ".join(cells).rstrip(), file=out)
        if index == 0:
            print("  ".join("-" * width for width in widths), file=out)


def _width(text: str) -> int:
    # CJK characters take two terminal columns; count them so tables line up.
    return sum(2 if "\u2e80" <= char <= "\u9fff" or "\uff00" <= char <= "\uffef" else 1 for char in text)


# ----------------------------------------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    for name in args.files:
        if not Path(name).is_file():
            raise UserError(f"{name}: no such file")
    doc_sep = _unescape(args.doc_sep) if args.doc_sep is not None else None
    started = time.perf_counter()
    tok = train(
        [Path(name) for name in args.files],
        args.vocab,
        pattern=args.pattern,
        special_tokens=args.special,
        min_frequency=args.min_frequency,
        max_token_length=args.max_token_length,
        doc_sep=doc_sep,
        num_threads=args.threads,
        progress=not args.no_progress,
    )
    elapsed = time.perf_counter() - started
    tok.save(args.output)
    merges = len(tok.merges)
    print(f"wrote {args.output}: vocab_size {tok.vocab_size}, {merges} merges, pattern {tok.pattern!r}")
    print(f"training time {elapsed:.2f} s, {merges / elapsed if elapsed > 0 else float('inf'):.0f} merges/s")
    total_bytes = total_tokens = 0
    for name in args.files:
        text = _read_text(name)
        documents = text.split(doc_sep) if doc_sep is not None else [text]
        total_bytes += sum(len(d.encode("utf-8")) for d in documents)
        total_tokens += sum(len(ids) for ids in tok.encode_batch(documents, disallowed_special=()))
    if total_tokens:
        print(
            f"training data: {total_bytes} bytes -> {total_tokens} tokens, {total_bytes / total_tokens:.3f} bytes/token"
        )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    tok = _load_tokenizer(args.tokenizer, args.pattern)
    text = _read_text(args.file)
    ids = tok.encode_to_numpy(text, **_special_policy(args))
    if args.output is None:
        sys.stdout.write(" ".join(map(str, ids.tolist())) + "\n")
        return 0
    if args.output.endswith(".npy"):
        buffer = io.BytesIO()
        np.save(buffer, ids.astype(_ids_dtype(tok)), allow_pickle=False)
        atomic_write_bytes(args.output, buffer.getvalue())
    else:
        atomic_write_text(args.output, " ".join(map(str, ids.tolist())) + "\n")
    print(
        f"{args.file}: {len(text.encode('utf-8'))} bytes -> {len(ids)} tokens -> {args.output}",
        file=sys.stderr,
    )
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    tok = _load_tokenizer(args.tokenizer, args.pattern)
    data = tok.decode_bytes(_read_ids(args.ids_file))
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        atomic_write_bytes(args.output, data)
    return 0


def cmd_roundtrip(args: argparse.Namespace) -> int:
    tok = _load_tokenizer(args.tokenizer, args.pattern)
    original = Path(args.file).read_bytes() if Path(args.file).is_file() else None
    text = _read_text(args.file)
    assert original is not None
    ids = tok.encode_ordinary(text)
    restored = tok.decode_bytes(ids)
    if restored == original:
        print(f"identical ({len(original)} bytes, {len(ids)} tokens)")
        return 0
    offset = next(
        (i for i, (a, b) in enumerate(zip(original, restored)) if a != b), min(len(original), len(restored))
    )
    print(
        f"differs at byte offset {offset} (original {len(original)} bytes, decoded {len(restored)} bytes)",
    )
    return 1


def cmd_compare(args: argparse.Namespace) -> int:
    tok = _load_tokenizer(args.tokenizer, args.pattern)
    gpt2 = Tokenizer.gpt2()
    out = sys.stdout
    rows = [["file", "bytes", f"tokens ({args.tokenizer})", "tokens (gpt2)", "ratio"]]
    for name in args.files:
        text = _read_text(name)
        ours = len(tok.encode_ordinary(text))
        theirs = len(gpt2.encode_ordinary(text))
        ratio = f"{ours / theirs:.3f}" if theirs else "-"
        rows.append([name, str(len(text.encode("utf-8"))), str(ours), str(theirs), ratio])
    print("Token counts (ratio = ours / gpt2):", file=out)
    _print_table(rows, out)
    print(file=out)
    rows = [["word", "gpt2 ids", f"{args.tokenizer} ids", f"{args.tokenizer} tokens"]]
    for word in args.words:
        ours_ids = tok.encode_ordinary(word)
        shown = ", ".join(_token_text(tok.token_bytes(i)) for i in ours_ids)
        rows.append([word, str(gpt2.encode_ordinary(word)), str(ours_ids), f"[{shown}]"])
    print("Word splits:", file=out)
    _print_table(rows, out)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    tok = _load_tokenizer(args.tokenizer, args.pattern)
    ids = tok.encode(args.text, **_special_policy(args))
    rows = [["#", "id", "hex", "token"]]
    for index, token_id in enumerate(ids):
        value = tok.token_bytes(token_id)
        rows.append([str(index), str(token_id), value.hex(), _token_text(value)])
    print(f"{len(args.text.encode('utf-8'))} bytes -> {len(ids)} tokens ({tok!r})")
    _print_table(rows, sys.stdout)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import EXPORT_FORMATS

    tok = _load_tokenizer(args.tokenizer, args.pattern)
    EXPORT_FORMATS[args.format](tok, args.output)
    print(f"wrote {args.output} ({args.format})")
    if args.format == "tiktoken":
        print(f"load it with pattern={tok.pattern!r} and special_tokens={tok.special_tokens!r}")
    return 0


# ----------------------------------------------------------------------------------------------------
# argument parsing
# ----------------------------------------------------------------------------------------------------


def _add_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tokenizer",
        "-t",
        required=True,
        metavar="T",
        help="a vocab file (hex JSON v1 or a bare {id: hex} map) or 'gpt2'",
    )
    parser.add_argument(
        "--pattern",
        default=None,
        metavar="P",
        help="pre-tokenization pattern to use instead of the file's (a bare map has none and defaults to 'raw')",
    )


def _add_special_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--allow-special",
        action="store_true",
        help="encode special-token text (e.g. <|endoftext|>) as the special token (default: refuse, like tiktoken)",
    )
    group.add_argument(
        "--ordinary", action="store_true", help="encode special-token text as ordinary text (default: refuse)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Exact byte-level BPE: train, encode, decode, compare and export tokenizers.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="show the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a tokenizer on text files", description="Train a BPE vocab."
    )
    train.add_argument(
        "files", nargs="+", metavar="FILE", help="UTF-8 text files (each one document unless --doc-sep)"
    )
    train.add_argument(
        "--vocab", type=int, required=True, metavar="N", help="vocab size: 256 bytes + merges + specials"
    )
    train.add_argument(
        "--pattern",
        default="gpt2",
        metavar="P",
        help=f"pre-tokenizer: {', '.join(NAMES)} or a regex (default gpt2)",
    )
    train.add_argument(
        "--special",
        action="append",
        default=[],
        metavar="TOK",
        help="add a special token (repeatable), e.g. '<|endoftext|>'",
    )
    train.add_argument(
        "--doc-sep",
        default=None,
        metavar="S",
        help=r"document separator inside files (escapes allowed, e.g. '\n\n')",
    )
    train.add_argument(
        "--min-frequency",
        type=int,
        default=1,
        metavar="K",
        help="stop when no pair occurs at least K times (default 1)",
    )
    train.add_argument(
        "--max-token-length",
        type=int,
        default=None,
        metavar="L",
        help="never make tokens longer than L bytes",
    )
    train.add_argument(
        "--threads", type=int, default=None, metavar="N", help="worker threads (default: all cores)"
    )
    train.add_argument(
        "-o", "--output", default="vocab.json", metavar="OUT", help="output vocab file (default vocab.json)"
    )
    train.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    train.set_defaults(handler=cmd_train)

    encode = commands.add_parser(
        "encode", help="encode a text file to token ids", description="Encode a text file."
    )
    _add_tokenizer_arguments(encode)
    encode.add_argument("file", metavar="FILE", help="UTF-8 text file")
    encode.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="OUT",
        help="ids.npy (numpy) or any other name (text); default stdout",
    )
    _add_special_arguments(encode)
    encode.set_defaults(handler=cmd_encode)

    decode = commands.add_parser("decode", help="decode token ids to text", description="Decode token ids.")
    _add_tokenizer_arguments(decode)
    decode.add_argument(
        "ids_file", metavar="IDS_FILE", help="a .npy array or a text file of ids (spaces/commas)"
    )
    decode.add_argument(
        "-o", "--output", default=None, metavar="OUT", help="output file (exact bytes); default stdout"
    )
    decode.set_defaults(handler=cmd_decode)

    roundtrip = commands.add_parser(
        "roundtrip",
        help="check decode(encode(file)) == file",
        description="Encode then decode a file and compare bytes.",
    )
    _add_tokenizer_arguments(roundtrip)
    roundtrip.add_argument("file", metavar="FILE", help="UTF-8 text file")
    roundtrip.set_defaults(handler=cmd_roundtrip)

    compare = commands.add_parser(
        "compare",
        help="token counts and word splits vs GPT-2",
        description="The course report's tables: token counts per file and per-word splits, vs GPT-2.",
    )
    _add_tokenizer_arguments(compare)
    compare.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files to count tokens of")
    compare.add_argument(
        "--words",
        nargs="+",
        default=REPORT_WORDS,
        metavar="W",
        help=f"words to show splits of (default: {' '.join(REPORT_WORDS)})",
    )
    compare.set_defaults(handler=cmd_compare)

    inspect = commands.add_parser(
        "inspect", help="show the tokens of a text", description="Show tokens of TEXT."
    )
    _add_tokenizer_arguments(inspect)
    inspect.add_argument("text", metavar="TEXT", help="the text to tokenize")
    _add_special_arguments(inspect)
    inspect.set_defaults(handler=cmd_inspect)

    export = commands.add_parser("export", help="export a tokenizer", description="Export to another format.")
    _add_tokenizer_arguments(export)
    export.add_argument(
        "--format",
        required=True,
        choices=["bare", "tiktoken", "hf"],
        help="bare: the report's {id: hex} map; tiktoken: a rank file; hf: a tokenizer.json",
    )
    export.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    export.set_defaults(handler=cmd_export)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 roundtrip differs, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (UserError, ValueError, OSError, ImportError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in message:
            message = f"{err.filename}: {message}"
        print(f"{PROGRAM} {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
