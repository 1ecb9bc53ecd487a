"""HellaSwag (Zellers et al. 2019) zero-shot evaluation, scored the way the course report and build-nanogpt do.

Each example is a context and four candidate endings. Every (context, ending) pair is tokenized separately
into one row; a mask marks the ending's tokens. The model scores a row by the mean cross-entropy of the
ending tokens given everything before them, and the prediction is the ending with the lowest mean loss
("acc_norm": normalising by length keeps long endings from being penalised).

Shapes and torch.compile: the four rows of an example are right-padded to a common length rounded up to a
multiple of `pad_multiple` (64 by default, capped at the model's block_size). Causal attention means the
padding never influences the scored positions, and a compiled model sees only a handful of distinct
lengths (HellaSwag rows are under 200 GPT-2 tokens), so it compiles a few times in total rather than once
per example; `pad_multiple=block_size` gives a single shape at the cost of more computation.

Data: a local jsonl in HellaSwag's own format (one object per line with "ctx", "endings" (4 strings) and
"label"), or the official file downloaded from the rowanz/hellaswag GitHub repository (as build-nanogpt
does) into a cache folder.

Run standalone: python -m gpt.hellaswag --model gpt2|HF_DIR|CHECKPOINT_DIR --hellaswag PATH
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from bpe_fast.cliutil import ArgumentParser, UserError, positive_int, run_main
from bpe_fast.files import atomic_path

SPLITS = ("train", "val", "test")
URL_TEMPLATE = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
NUM_ENDINGS = 4
DEFAULT_PAD_MULTIPLE = 64
PROG = "python -m gpt.hellaswag"


class HellaSwagError(UserError, ValueError):
    """HellaSwag data that is missing, unreachable or malformed; the message names the file (and line)."""


# ------------------------------------------------------------------------------------------------ data


def default_cache_dir() -> Path:
    """$HELLASWAG_CACHE, else ~/.cache/bpe-fast/hellaswag."""
    env = os.environ.get("HELLASWAG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bpe-fast" / "hellaswag"


def download(split: str = "val", cache_dir: Optional[os.PathLike] = None) -> Path:
    """The official hellaswag_{split}.jsonl, downloaded once into `cache_dir` (atomically)."""
    if split not in SPLITS:
        raise HellaSwagError(f"unknown HellaSwag split {split!r}; expected one of {SPLITS}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"hellaswag_{split}.jsonl"
    if path.is_file():
        return path
    url = URL_TEMPLATE.format(split=split)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as temp_name, open(temp_name, "wb") as out:
            with urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise HellaSwagError(
            f"could not download HellaSwag {split} from {url} ({reason}); this machine may be offline: "
            f"pass --hellaswag PATH to a local hellaswag_{split}.jsonl instead"
        ) from e
    return path


def _check_example(row: Any, where: str, need_label: bool) -> dict:
    if not isinstance(row, dict):
        raise HellaSwagError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if not isinstance(row.get("ctx"), str):
        raise HellaSwagError(f"{where}: 'ctx' must be a string")
    endings = row.get("endings")
    if not (
        isinstance(endings, list) and len(endings) == NUM_ENDINGS and all(isinstance(e, str) for e in endings)
    ):
        raise HellaSwagError(f"{where}: 'endings' must be a list of {NUM_ENDINGS} strings")
    label = row.get("label")
    if label is None and not need_label:
        return row
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < NUM_ENDINGS:
        raise HellaSwagError(f"{where}: 'label' must be an int in 0..{NUM_ENDINGS - 1}, got {label!r}")
    return row


def load_examples(path: Optional[os.PathLike] = None, split: str = "val") -> list[dict]:
    """HellaSwag examples (dicts with at least "ctx", "endings", "label") from the jsonl at `path`, or,
    when no path is given, from the official `split` file (downloaded and cached; see `download`).
    Malformed rows raise ValueError naming the file and line. The test split has no labels."""
    if path is None:
        path = download(split)
    path = Path(path)
    if not path.is_file():
        raise HellaSwagError(f"{path}: no such HellaSwag file (a .jsonl in HellaSwag's format)")
    need_label = split != "test"
    examples = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise HellaSwagError(f"{where}: invalid JSON ({e.msg})") from e
            examples.append(_check_example(row, where, need_label))
    if not examples:
        raise HellaSwagError(f"{path}: no HellaSwag examples")
    return examples


# ------------------------------------------------------------------------------------------- rendering


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of text, treating special-token text as ordinary (bpe_fast / tiktoken encode_ordinary)."""
    if hasattr(tokenizer, "encode_ordinary"):
        return list(tokenizer.encode_ordinary(text))
    ids = tokenizer.encode(text)
    return list(getattr(ids, "ids", ids))  # a `tokenizers` Encoding carries .ids


def render_example(
    example: dict, tokenizer: Any, max_len: Optional[int] = None
) -> tuple[torch.Tensor, torch.Tensor, Optional[int]]:
    """(tokens (4, T) long, mask (4, T) long, label) for one example.

    Row i is context + " " + ending i (the ending is encoded with its leading space, as the words would
    appear in running text); mask is 1 on the ending's tokens. Rows are right-padded with 0 to the longest.
    With `max_len`, a row longer than that loses tokens from the start of its context (never the ending);
    an ending that does not fit with at least one context token is an error.
    """
    ctx = _encode(tokenizer, example["ctx"])
    rows, masks = [], []
    for i, ending in enumerate(example["endings"]):
        end = _encode(tokenizer, " " + ending)
        if not end:
            raise ValueError(f"example {example.get('ind', '?')}: ending {i} encodes to no tokens")
        row_ctx = ctx
        if max_len is not None and len(ctx) + len(end) > max_len:
            keep = max_len - len(end)
            if keep < 1:
                raise ValueError(
                    f"example {example.get('ind', '?')}: ending {i} has {len(end)} tokens, more than fits "
                    f"in {max_len} positions after a context token"
                )
            row_ctx = ctx[-keep:]
        if not row_ctx:
            raise ValueError(f"example {example.get('ind', '?')}: empty context")
        rows.append(row_ctx + end)
        masks.append([0] * len(row_ctx) + [1] * len(end))
    width = max(len(r) for r in rows)
    tokens = torch.zeros(NUM_ENDINGS, width, dtype=torch.long)
    mask = torch.zeros(NUM_ENDINGS, width, dtype=torch.long)
    for i, (row, m) in enumerate(zip(rows, masks)):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.long)
    return tokens, mask, example.get("label")


def padded_length(length: int, multiple: int, cap: Optional[int]) -> int:
    """length rounded up to a multiple of `multiple`, but never above `cap` (the model's block_size)."""
    rounded = -(-length // multiple) * multiple
    return min(rounded, cap) if cap is not None else rounded


# ------------------------------------------------------------------------------------------------ scoring


def ending_losses(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over each row's masked (ending) tokens, in float32: shape (rows,).

    Position t's logits predict token t+1, so the targets are tokens[:, 1:] and the mask shifts with them.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_tokens = tokens[:, 1:]
    shift_mask = mask[:, 1:].to(shift_logits.dtype)
    losses = F.cross_entropy(shift_logits.transpose(1, 2), shift_tokens, reduction="none")
    return (losses * shift_mask).sum(dim=1) / shift_mask.sum(dim=1)


def predict(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> int:
    """The index of the ending with the lowest mean ending loss (acc_norm's choice)."""
    return int(ending_losses(logits, tokens, mask).argmin().item())


def rank_indices(num_examples: int, rank: int = 0, world_size: int = 1) -> range:
    """The examples one rank scores: i % world_size == rank (all ranks together cover each once)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return range(rank, num_examples, world_size)


def _logits_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.logits


@torch.no_grad()
def evaluate(
    model: Any,
    examples: Any = None,
    tokenizer: Any = None,
    device: Any = "cpu",
    rank: int = 0,
    world_size: int = 1,
    autocast_dtype: Optional[torch.dtype] = None,
    limit: Optional[int] = None,
    pad_multiple: int = DEFAULT_PAD_MULTIPLE,
) -> tuple[int, int]:
    """(num_correct_norm, num_total) over this rank's share of `examples`; all-reduce both across ranks.

    `model`: a GPT, a torch.compile'd GPT, or anything called as model(tokens) returning (logits, loss)
    or an object with `.logits` (a transformers model). It should be in eval mode. `examples`: a list
    from `load_examples`, or a path (None: the official val split). `tokenizer`: anything with
    `encode_ordinary` or `encode` (default: GPT-2's, via gpt.tokenizer). `limit`: only the first N
    examples (before splitting across ranks). `autocast_dtype` (e.g. torch.bfloat16) runs the forward
    under torch.autocast on the device.
    """
    if examples is None or isinstance(examples, (str, os.PathLike)):
        examples = load_examples(examples)
    if tokenizer is None:
        from gpt.tokenizer import load_tokenizer

        tokenizer = load_tokenizer("gpt2")
    if limit is not None:
        examples = examples[:limit]
    device = torch.device(device)
    config = getattr(model, "config", None)
    block_size = getattr(config, "block_size", None) or getattr(config, "n_positions", None)
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )
    vocab = getattr(config, "real_vocab_size", None) or getattr(config, "vocab_size", None)
    correct = total = 0
    for i in rank_indices(len(examples), rank, world_size):
        tokens, mask, label = render_example(examples[i], tokenizer, max_len=block_size)
        if label is None:
            raise ValueError(f"example {i} has no label (the test split cannot be scored)")
        if vocab is not None and int(tokens.max()) >= vocab:
            raise ValueError(
                f"example {i}: the tokenizer produced id {int(tokens.max())} but the model's vocabulary has "
                f"{vocab} tokens (wrong --tokenizer?)"
            )
        width = padded_length(tokens.size(1), pad_multiple, block_size)
        tokens = F.pad(tokens, (0, width - tokens.size(1))).to(device)
        mask = F.pad(mask, (0, width - mask.size(1))).to(device)
        with autocast:
            logits = _logits_of(model(tokens))
        correct += int(predict(logits, tokens, mask) == label)
        total += 1
    return correct, total


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Zero-shot HellaSwag accuracy (acc_norm: lowest mean loss over the ending tokens).",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="a training checkpoint dir, a training output dir (its latest checkpoint), a transformers "
        "GPT-2 dir, or a hub name like 'gpt2' (needs network; a path that looks local never reaches it)",
    )
    parser.add_argument(
        "--hellaswag",
        default=None,
        help="a local HellaSwag jsonl; without it the official file is downloaded (needs network)",
    )
    parser.add_argument(
        "--split", default="val", choices=("train", "val"), help="split to download (default val)"
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="'gpt2' or a bpe-fast vocab.json (default: the checkpoint's tokenizer, else gpt2)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="autocast dtype for the forward pass (default float32: no autocast)",
    )
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N examples")
    parser.add_argument(
        "--pad-multiple",
        type=positive_int,
        default=DEFAULT_PAD_MULTIPLE,
        help="pad rows to a multiple of this length (fewer distinct shapes for --compile; default 64)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from gpt.checkpoint import load_model_for_inference, tokenizer_for

    examples = load_examples(args.hellaswag, split=args.split)
    model, meta = load_model_for_inference(args.model, device, allow_hub=True)
    tokenizer = tokenizer_for(meta, args.tokenizer)
    runner = torch.compile(model) if args.compile else model
    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    start = time.perf_counter()
    correct, total = evaluate(
        runner,
        examples,
        tokenizer,
        device=device,
        autocast_dtype=dtype,
        limit=args.limit,
        pad_multiple=args.pad_multiple,
    )
    elapsed = time.perf_counter() - start
    print(f"hellaswag acc_norm {correct}/{total} = {correct / total:.4f} ({elapsed:.1f} s)")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> None:
    """The command line: user errors as one line on stderr and exit status 2 (bpe_fast.cliutil)."""
    run_main(main, PROG, argv)


if __name__ == "__main__":
    cli()
