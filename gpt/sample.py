"""Text samples from a trained checkpoint or a transformers GPT-2 directory.

    python -m gpt.sample --checkpoint out/tiny-cpu/ckpt_0000300 --prompt "I'm a large language model,"
    python -m gpt.sample --hf exported_dir --num-samples 2 --max-new-tokens 64 --top-k 50 --seed 1

Sampling is top-k with temperature (GPT.generate); the same seed on the same device gives the same text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from bpe_fast.cliutil import (
    ArgumentParser,
    UserError,
    non_negative_float,
    non_negative_int,
    positive_int,
    run_main,
)
from gpt.checkpoint import load_model_for_inference, tokenizer_for
from gpt.config import SEED
from gpt.tokenizer import EOT_TEXT

PROG = "python -m gpt.sample"
DEFAULT_PROMPT = "I'm a large language model,"


class PromptError(UserError, ValueError):
    """A prompt the model cannot take (its tokens are outside the model's vocabulary, or it is empty
    and the tokenizer has no end-of-text token to start from)."""


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids; special-token text such as "<|endoftext|>" in the prompt becomes the special token, so
    a prompt can start a fresh document. An empty prompt is the end-of-text token alone."""
    specials = dict(getattr(tokenizer, "special_tokens", {}) or {})
    if not prompt:
        if EOT_TEXT not in specials:
            raise PromptError(
                f"empty prompt and the tokenizer has no {EOT_TEXT} token to start from: give a --prompt"
            )
        return [int(specials[EOT_TEXT])]
    if specials:
        return list(tokenizer.encode(prompt, allowed_special=set(specials)))
    return list(tokenizer.encode(prompt))


def sample(
    model: Any,
    tokenizer: Any,
    prompt: str = DEFAULT_PROMPT,
    num_samples: int = 4,
    max_new_tokens: int = 32,
    top_k: Optional[int] = 50,
    temperature: float = 1.0,
    seed: int = 42,
    device: Any = "cpu",
) -> list[str]:
    """`num_samples` continuations of `prompt` (each returned with its prompt), decoded to text.

    `model` is a GPT or a torch.compile'd GPT in eval mode on `device`. All samples are drawn in one batch
    from a torch.Generator seeded with `seed`."""
    from gpt.model import generate

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    ids = encode_prompt(tokenizer, prompt)
    vocab = model.config.real_vocab_size
    if max(ids) >= vocab:
        raise PromptError(
            f"prompt token id {max(ids)} is outside the model's vocabulary of {vocab} (wrong --tokenizer?)"
        )
    device = torch.device(device)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    return [tokenizer.decode(row.tolist()) for row in out]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Sample text from a GPT-2 checkpoint or a transformers GPT-2 dir.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint", help="a training checkpoint dir (ckpt_NNNNNNN) or a training output dir (its latest)"
    )
    source.add_argument(
        "--hf", help="a transformers GPT2LMHeadModel directory (e.g. from python -m gpt.export)"
    )
    parser.add_argument(
        "--prompt", default=DEFAULT_PROMPT, help=f"text to continue (default {DEFAULT_PROMPT!r})"
    )
    parser.add_argument("--num-samples", type=positive_int, default=4, help="how many samples (default 4)")
    parser.add_argument(
        "--max-new-tokens", type=non_negative_int, default=32, help="tokens generated per sample (default 32)"
    )
    parser.add_argument(
        "--top-k",
        type=non_negative_int,
        default=50,
        help="sample among the k most likely tokens; 0 means all (default 50)",
    )
    parser.add_argument(
        "--temperature",
        type=non_negative_float,
        default=1.0,
        help="logit temperature; 0 is greedy decoding (default 1.0)",
    )
    parser.add_argument("--seed", type=SEED, default=42, help="random seed of the sampler (default 42)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="'gpt2' or a bpe-fast vocab.json (default: the checkpoint's tokenizer, else gpt2)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.hf is not None and not (Path(args.hf) / "config.json").is_file():
        raise UserError(f"--hf {args.hf}: no config.json there (not a transformers model directory)")
    # Never a hub name: both flags name local folders, so a missing one fails here, offline.
    model, meta = load_model_for_inference(args.hf or args.checkpoint, device)
    tokenizer = tokenizer_for(meta, args.tokenizer)
    runner = torch.compile(model) if args.compile else model
    texts = sample(
        runner,
        tokenizer,
        prompt=args.prompt,
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        top_k=args.top_k or None,
        temperature=args.temperature,
        seed=args.seed,
        device=device,
    )
    for i, text in enumerate(texts):
        print(f"--- sample {i}\n{text}")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> None:
    """The command line: user errors as one line on stderr and exit status 2 (bpe_fast.cliutil)."""
    run_main(main, PROG, argv)


if __name__ == "__main__":
    cli()
