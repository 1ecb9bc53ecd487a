"""The `bpe-fast` command line (DESIGN.md §3 CLI): train, encode, decode, roundtrip, compare, inspect, export,
samples.

User errors (bad files, bad arguments, bad vocab files) print one line to stderr and exit with status 2;
`roundtrip` exits 1 when the round trip is not exact.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from . import __version__, samples
from .cliutil import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    USER_ERRORS,
    ArgumentParser,
    UserError,
    bounded,
    one_line,
)
from .files import atomic_write_bytes, atomic_write_text
from .gpt2_files import ENDOFTEXT
from .patterns import NAMES
from .tokenizer import MAX_TOKEN_ID, Tokenizer

# The course report's tables 1-2 compare these words (Chinese from its corpus, English from its title).
REPORT_WORDS = ["博士", "论文", "专家", "in", "OF", "China", "MANUAL"]
PROGRAM = "bpe-fast"

# Numeric options, checked while parsing (NaN, infinities, negatives and out-of-range values refused).
VOCAB_SIZE = bounded(int, minimum=256, maximum=MAX_TOKEN_ID + 1)
COUNT = bounded(int, minimum=1)
THREADS = bounded(int, minimum=1, maximum=4096)

# The library's own errors for bad input are ValueError (bad data, bad arguments) and OSError (files).
_REPORTED = (*USER_ERRORS, ValueError, OSError)

# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _input_file(path: str, what: str = "a text file") -> Path:
    """An existing, readable file given on the command line; one-line errors otherwise."""
    if not path:
        raise UserError(f"an empty path was given where {what} is expected")
    file = Path(path)
    if file.is_dir():
        raise UserError(f"{file}: is a directory, expected {what}")
    if not file.exists():
        raise UserError(f"{file}: no such file (expected {what})")
    return file


def _read_text(path: str) -> str:
    raw = _input_file(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: invalid UTF-8 at byte offset {err.start}") from None


def _check_output(output: str, inputs: Sequence[str]) -> None:
    """Refuses an output that would replace one of the inputs (or is a folder), before any work."""
    if not output:
        raise UserError("-o/--output is empty: name the file to write")
    out = Path(output)
    if out.is_dir():
        raise UserError(f"-o {output} is a directory: name a file to write")
    if not out.parent.is_dir():
        raise UserError(f"-o {output}: the folder {out.parent} does not exist")
    for given in inputs:
        if given and Path(given).exists() and out.exists() and os.path.samefile(out, given):
            raise UserError(f"-o {output} is the input {given}: write to another file")


def _load_tokenizer(spec: str, pattern: Optional[str]) -> Tokenizer:
    if spec == "gpt2":
        if pattern is not None:
            raise UserError("--pattern cannot be used with --tokenizer gpt2")
        return Tokenizer.gpt2()
    _input_file(spec, "a vocab file (--tokenizer takes a vocab file or 'gpt2')")
    return Tokenizer.from_file(spec, pattern=pattern)


def _unescape(value: str) -> str:
    # Lets `--doc-sep '\n\n'` mean two newlines, as one would write it in Python.
    try:
        return value.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
    except (UnicodeError, ValueError):
        raise UserError(f"--doc-sep {value!r}: not a valid escaped string (e.g. '\\n\\n')") from None


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
    file = _input_file(path, "an ids file (.npy or text)")
    if file.suffix == ".npy":
        try:
            ids = np.load(file, allow_pickle=False)
        except (ValueError, EOFError) as err:
            raise UserError(f"{file}: not a readable .npy file ({one_line(err)})") from None
        if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu":
            kind = ids.dtype if isinstance(ids, np.ndarray) else type(ids).__name__
            raise UserError(f"{file}: holds {kind} values, expected integer token ids")
        return ids.reshape(-1)
    text = _read_text(path)
    ids = []
    for position, word in enumerate(text.replace(",", " ").replace("[", " ").replace("]", " ").split()):
        if not word.isdigit() or len(word) > 10:
            raise UserError(f"{file}: item {position} ({word[:20]!r}) is not a token id (a decimal u32)")
        ids.append(int(word))
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


def special_tokens_for_training(special: Sequence[str], eot: bool) -> list[str]:
    """`--special` tokens in the order given, then `<|endoftext|>` (unless `--no-eot` or already given),
    so that by default its id is the vocab's last: what gpt.prepare separates documents with."""
    tokens = list(dict.fromkeys(special))
    if eot and ENDOFTEXT not in tokens:
        tokens.append(ENDOFTEXT)
    return tokens


# ----------------------------------------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    for name in args.files:
        _input_file(name)
    _check_output(args.output, args.files)
    doc_sep = _unescape(args.doc_sep) if args.doc_sep is not None else None
    if doc_sep == "":
        raise UserError("--doc-sep is empty: give the separator text, e.g. '\\n\\n', or leave it out")
    specials = special_tokens_for_training(args.special, eot=not args.no_eot)
    started = time.perf_counter()
    tok = train(
        [Path(name) for name in args.files],
        args.vocab,
        pattern=args.pattern,
        special_tokens=specials,
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
    if tok.special_tokens:
        shown = ", ".join(f"{text} = {token_id}" for text, token_id in tok.special_tokens.items())
        print(f"special tokens: {shown}")
    print(f"training time {elapsed:.2f} s, {merges / elapsed if elapsed > 0 else float('inf'):.0f} merges/s")
    total_bytes = total_tokens = 0
    for name in args.files:
        text = _read_text(name)
        documents = text.split(doc_sep) if doc_sep is not None else [text]
        total_bytes += sum(len(d.encode("utf-8")) for d in documents)
        total_tokens += sum(
            len(ids) for ids in tok.encode_ordinary_batch(documents, num_threads=args.threads)
        )
    if total_tokens:
        print(
            f"training data: {total_bytes} bytes -> {total_tokens} tokens, {total_bytes / total_tokens:.3f} bytes/token"
        )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    if args.output is not None:
        _check_output(args.output, [args.file, args.tokenizer])
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
    if args.output is not None:
        _check_output(args.output, [args.ids_file, args.tokenizer])
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
    text = _read_text(args.file)
    original = text.encode("utf-8")
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
    texts = [(name, _read_text(name)) for name in args.files]
    gpt2 = Tokenizer.gpt2()
    out = sys.stdout
    rows = [["file", "bytes", f"tokens ({args.tokenizer})", "tokens (gpt2)", "ratio"]]
    for name, text in texts:
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
    from .export import EXPORT_FORMATS, write_hf_tokenizer_dir

    to_folder = args.format == "hf" and not args.output.endswith(".json")
    if to_folder:
        if not args.output or Path(args.output).is_file():
            raise UserError(f"-o {args.output!r}: name a folder (or a .json file for tokenizer.json alone)")
    else:
        _check_output(args.output, [args.tokenizer])
    tok = _load_tokenizer(args.tokenizer, args.pattern)
    if to_folder:
        write_hf_tokenizer_dir(tok, args.output)
        print(f"wrote {args.output}/ (tokenizer.json, tokenizer_config.json, special_tokens_map.json)")
        return 0
    EXPORT_FORMATS[args.format](tok, args.output)
    print(f"wrote {args.output} ({args.format})")
    if args.format == "tiktoken":
        print(f"load it with pattern={tok.pattern!r} and special_tokens={tok.special_tokens!r}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    names = samples.FINETUNE if args.finetune else samples.CORPORA
    sources = [samples.path(name) for name in names]
    folder = sources[0].parent
    if args.output is None:
        print(folder)
        return 0
    licenses = [p for p in samples.license_files() if p.parent == folder]
    if not args.output:
        raise UserError("-o/--output is empty: name the folder to copy the samples into")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {args.output} is a file: name a folder to copy the samples into")
    # Files already there with the same bytes are left alone (re-running is fine); different ones are
    # someone's data and are never replaced.
    for source in sources + licenses:
        target = out / source.name
        if target.exists() and (not target.is_file() or target.read_bytes() != source.read_bytes()):
            raise UserError(
                f"{target} exists and is not the bundled {source.name}: move it away or choose another -o folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    copied = 0
    for source in sources + licenses:
        target = out / source.name
        if not target.exists():
            atomic_write_bytes(target, source.read_bytes())
            copied += 1
    print(f"{out}: {', '.join(p.name for p in sources)} and their licenses ({copied} files copied)")
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
    parser = ArgumentParser(
        prog=PROGRAM,
        description="Exact byte-level BPE: train, encode, decode, compare and export tokenizers.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="show the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a tokenizer on text files",
        description=f"Train a BPE vocab. It gets the special token {ENDOFTEXT} (the vocab's last id, "
        "within --vocab) unless --no-eot is given, so that gpt.prepare can separate documents with it.",
    )
    train.add_argument(
        "files", nargs="+", metavar="FILE", help="UTF-8 text files (each one document unless --doc-sep)"
    )
    train.add_argument(
        "--vocab",
        type=VOCAB_SIZE,
        required=True,
        metavar="N",
        help=f"vocab size: 256 bytes + merges + special tokens (256 to {MAX_TOKEN_ID + 1})",
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
        help=f"add a special token (repeatable), in this order before {ENDOFTEXT}",
    )
    train.add_argument(
        "--no-eot",
        action="store_true",
        help=f"do not add {ENDOFTEXT} (a vocab without it cannot make gpt.prepare shards)",
    )
    train.add_argument(
        "--doc-sep",
        default=None,
        metavar="S",
        help=r"document separator inside files (escapes allowed, e.g. '\n\n')",
    )
    train.add_argument(
        "--min-frequency",
        type=COUNT,
        default=1,
        metavar="K",
        help="stop when no pair occurs at least K times (an integer >= 1; default 1)",
    )
    train.add_argument(
        "--max-token-length",
        type=COUNT,
        default=None,
        metavar="L",
        help="never make tokens longer than L bytes (an integer >= 1; default: no limit)",
    )
    train.add_argument(
        "--threads",
        type=THREADS,
        default=None,
        metavar="N",
        help="worker threads (1-4096; default: all cores)",
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
        help="bare: the report's {id: hex} map; tiktoken: a rank file; hf: Hugging Face's tokenizer.json "
        "(custom regex patterns are refused: HF would split differently)",
    )
    export.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output file; for --format hf a name not ending in .json is a folder that "
        "transformers.AutoTokenizer.from_pretrained loads (tokenizer.json, tokenizer_config.json, "
        "special_tokens_map.json)",
    )
    export.set_defaults(handler=cmd_export)

    sample_files = commands.add_parser(
        "samples",
        help="where the bundled sample corpora are (or copy them out)",
        description="Print the folder of the bundled corpora (" + ", ".join(samples.CORPORA) + "), so that "
        "$(bpe-fast samples)/sanguo_yanyi.txt works from any directory; with -o, copy them and their "
        "licenses into a folder.",
    )
    sample_files.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="DIR",
        help="copy the samples and their licenses into DIR (made if missing; files already there with other "
        "contents are never replaced)",
    )
    sample_files.add_argument(
        "--finetune",
        action="store_true",
        help="the fine-tuning samples (" + ", ".join(samples.FINETUNE) + ") instead of the corpora",
    )
    sample_files.set_defaults(handler=cmd_samples)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 roundtrip differs, 2 user error). Argument errors
    exit with status 2 while parsing (SystemExit), before any work."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except _REPORTED as err:
        print(f"{PROGRAM} {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
