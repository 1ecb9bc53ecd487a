"""Tiny randomly initialised causal LMs with GPT-2's tokenizer, for smoke tests and offline trials.

    python -m lora.tiny_model --arch gpt2 --out /tmp/tiny-gpt2

writes an HF model directory (config, safetensors weights, tokenizer files) that every lora/ tool
accepts as --model. The tokenizer is GPT-2's own (bpe_fast's bundled gpt2 files).
"""

from __future__ import annotations

from pathlib import Path

from bpe_fast.cliutil import ArgumentParser, UserError, positive_int, run_main
from bpe_fast.files import atomic_dir
from lora.config import SEED

PROG = "python -m lora.tiny_model"

GPT2_VOCAB_SIZE = 50257


def tiny_model(
    arch: str,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    context: int = 256,
    dropout: float = 0.0,
):
    """A tiny model of the given architecture ('gpt2' or 'llama') over GPT-2's vocabulary.

    Dropout defaults to 0 so that runs are exactly reproducible whatever the batch layout.
    """
    import torch

    torch.manual_seed(seed)
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=GPT2_VOCAB_SIZE,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            n_positions=context,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
        )
        return GPT2LMHeadModel(config)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=GPT2_VOCAB_SIZE,
            hidden_size=n_embd,
            intermediate_size=n_embd * 2 + 8,  # not a multiple of hidden, so in/out mix-ups show in counts
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            num_key_value_heads=1,  # grouped-query attention: k/v projections narrower than q
            max_position_embeddings=context,
            bos_token_id=GPT2_VOCAB_SIZE - 1,
            eos_token_id=GPT2_VOCAB_SIZE - 1,
            tie_word_embeddings=True,
            attention_dropout=dropout,
        )
        return LlamaForCausalLM(config)
    raise ValueError(f"unknown tiny architecture {arch!r}; expected 'gpt2' or 'llama'")


def write_tiny_model(out: Path, arch: str = "gpt2", seed: int = 0, **sizes) -> Path:
    """Write the tiny model plus GPT-2's tokenizer to the new folder `out` (complete, or not at all)."""
    from lora.modeling import bundled_gpt2_tokenizer

    out = Path(out)
    if out.exists():
        raise UserError(f"--out {out} already exists; choose a new folder")
    with atomic_dir(out) as staging:
        tiny_model(arch, seed=seed, **sizes).save_pretrained(staging)
        bundled_gpt2_tokenizer().save_pretrained(staging)
    return out


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--arch", choices=["gpt2", "llama"], default="gpt2", help="architecture (default gpt2)"
    )
    parser.add_argument("--out", required=True, type=Path, help="new directory to write the model into")
    parser.add_argument("--seed", type=SEED, default=0, help="initialisation seed (default 0)")
    parser.add_argument("--layers", type=positive_int, default=2, help="transformer blocks (default 2)")
    parser.add_argument("--width", type=positive_int, default=32, help="hidden size (default 32)")
    parser.add_argument("--heads", type=positive_int, default=2, help="attention heads (default 2)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.width % args.heads:
        parser.error(f"--width {args.width} must be a multiple of --heads {args.heads}")
    if args.out.exists():
        raise UserError(f"--out {args.out} already exists; choose a new folder")
    path = write_tiny_model(
        args.out, args.arch, args.seed, n_layer=args.layers, n_embd=args.width, n_head=args.heads
    )
    print(f"wrote {args.arch} tiny model to {path}")
    return 0


if __name__ == "__main__":
    run_main(main, PROG)
