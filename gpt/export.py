"""Exports a training checkpoint as a transformers directory: model and tokenizer.

    python -m gpt.export --checkpoint out/run/ckpt_0019073 --out gpt2-ours
    python -c "from transformers import AutoModelForCausalLM, AutoTokenizer; \
        AutoTokenizer.from_pretrained('gpt2-ours'); AutoModelForCausalLM.from_pretrained('gpt2-ours')"

The folder holds config.json and model.safetensors (GPT.save_hf: the real, unpadded vocabulary, tied
embeddings) and the tokenizer the model was trained with, GPT-2's or any bpe-fast vocab:
tokenizer.json (bpe_fast.export.save_hf: the same ids as bpe_fast) and tokenizer_config.json. The
tokenizer class is PreTrainedTokenizerFast, which runs tokenizer.json as written; transformers'
GPT2Tokenizer would replace the pre-tokenizer with GPT-2's regex and encode other patterns differently.

The folder is written whole under a temp name and renamed into place; an existing --out is replaced only
with --overwrite and only if gpt.export made it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from bpe_fast.cliutil import ArgumentParser, UserError, run_main
from bpe_fast.files import atomic_dir, check_overwrite, write_marker
from gpt.checkpoint import (
    META_FILE,
    CheckpointError,
    find_checkpoint,
    load_model,
    tokenizer_for,
    tokenizer_spec_from_meta,
)
from gpt.tokenizer import EOT_TEXT

PROG = "python -m gpt.export"
TOOL = "gpt.export"


def write_hf_tokenizer(tokenizer: Any, out_dir: os.PathLike, model_max_length: int) -> None:
    """tokenizer.json and tokenizer_config.json for `tokenizer` (a bpe_fast.Tokenizer), so that
    AutoTokenizer.from_pretrained(out_dir) encodes exactly as it does."""
    from bpe_fast.export import save_hf

    out_dir = Path(out_dir)
    save_hf(tokenizer, out_dir / "tokenizer.json")
    config: dict = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length}
    if EOT_TEXT in tokenizer.special_tokens:
        config.update(bos_token=EOT_TEXT, eos_token=EOT_TEXT)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def export(
    checkpoint: os.PathLike,
    out_dir: os.PathLike,
    tokenizer: Optional[str] = None,
    with_tokenizer: bool = True,
    overwrite: bool = False,
) -> Path:
    """Writes the transformers folder for `checkpoint` (a checkpoint dir, or a training output dir: its
    latest); `tokenizer` overrides the checkpoint's recorded tokenizer. Returns out_dir."""
    path, out = Path(checkpoint), Path(out_dir)
    check_overwrite(out, TOOL, overwrite, inputs=[path])
    if (path / "config.json").is_file() and not (path / META_FILE).is_file():
        raise CheckpointError(f"{path}: not a training checkpoint (a transformers folder needs no export)")
    model, meta = load_model(find_checkpoint(path))
    tok = None
    eos = None
    if with_tokenizer:
        tok = tokenizer_for(meta, tokenizer)
        if tok.vocab_size != model.config.real_vocab_size:
            spec = tokenizer or tokenizer_spec_from_meta(meta) or "gpt2"
            raise UserError(
                f"tokenizer {spec} has {tok.vocab_size} tokens but the model's real vocabulary is "
                f"{model.config.real_vocab_size}: pass --tokenizer with the vocab it was trained with"
            )
        eos = tok.special_tokens.get(EOT_TEXT)
    with atomic_dir(out) as folder:
        model.save_hf(folder, eos_token_id=eos)
        if tok is not None:
            write_hf_tokenizer(tok, folder, model_max_length=model.config.block_size)
        write_marker(folder, TOOL)
    return out


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Write a training checkpoint as a transformers folder: GPT2LMHeadModel (config.json + "
        "model.safetensors, unpadded vocabulary, tied embeddings) and its tokenizer (tokenizer.json).",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint dir (ckpt_NNNNNNN) or a training output dir (its latest)",
    )
    parser.add_argument("--out", required=True, help="output folder (written whole, then renamed into place)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="'gpt2' or a bpe-fast vocab.json (default: the one the checkpoint records, else gpt2)",
    )
    parser.add_argument(
        "--no-tokenizer", action="store_true", help="write the model only (no tokenizer.json)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it is an earlier gpt.export output"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    out = export(
        args.checkpoint,
        args.out,
        args.tokenizer,
        with_tokenizer=not args.no_tokenizer,
        overwrite=args.overwrite,
    )
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))})")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> None:
    """The command line: user errors as one line on stderr and exit status 2 (bpe_fast.cliutil)."""
    run_main(main, PROG, argv)


if __name__ == "__main__":
    cli()
