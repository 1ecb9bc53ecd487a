"""Exports a training checkpoint as a transformers GPT2LMHeadModel directory.

    python -m gpt.export --checkpoint out/run/ckpt_0019073 --out gpt2-ours
    python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('gpt2-ours')"

The directory holds config.json and model.safetensors with the real (unpadded) vocabulary and tied
embeddings (GPT.save_hf). When the checkpoint's tokenizer is GPT-2's, a matching tokenizer.json and
tokenizer_config.json are written too, so AutoTokenizer.from_pretrained(dir) works; for a bpe-fast vocab,
`bpe-fast export --format hf` writes the tokenizer.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from bpe_fast.files import atomic_write_text

EOT_TEXT = "<|endoftext|>"
GPT2_EOT_ID = 50256


def bundled_gpt2_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) shipped in the bpe_fast package (python/bpe_fast/gpt2 in the repo)."""
    spec = importlib.util.find_spec("bpe_fast")  # locates the package without importing the extension
    candidates = [Path(p) / "gpt2" for p in (spec.submodule_search_locations or [])] if spec else []
    candidates.append(Path(__file__).resolve().parent.parent / "python" / "bpe_fast" / "gpt2")
    for folder in candidates:
        if (folder / "encoder.json").is_file() and (folder / "vocab.bpe").is_file():
            return folder / "encoder.json", folder / "vocab.bpe"
    raise FileNotFoundError(f"GPT-2 tokenizer files not found in {[str(c) for c in candidates]}")


def write_gpt2_tokenizer(out_dir: os.PathLike, model_max_length: int = 1024) -> None:
    """tokenizer.json (byte-level BPE from GPT-2's encoder.json + vocab.bpe, with <|endoftext|> = 50256)
    and tokenizer_config.json, so transformers' AutoTokenizer loads GPT-2's tokenizer from `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    encoder, merges = bundled_gpt2_files()
    tokenizer = Tokenizer(models.BPE.from_file(str(encoder), str(merges)))
    # ByteLevel's default regex is GPT-2's pre-tokenizer; no prefix space, as GPT-2 encodes.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([EOT_TEXT])
    if tokenizer.token_to_id(EOT_TEXT) != GPT2_EOT_ID:
        raise ValueError(f"{encoder}: {EOT_TEXT} is not id {GPT2_EOT_ID}; not GPT-2's encoder.json")
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "tokenizer.json", tokenizer.to_str())
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": EOT_TEXT,
        "eos_token": EOT_TEXT,
        "unk_token": EOT_TEXT,
        "add_prefix_space": False,
        "model_max_length": model_max_length,
    }
    atomic_write_text(out_dir / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")


def export(checkpoint: os.PathLike, out_dir: os.PathLike, tokenizer: Optional[str] = None) -> Path:
    """Writes the HF directory for `checkpoint` (a checkpoint dir or a training output dir: its latest);
    `tokenizer` overrides the checkpoint's recorded tokenizer spec. Returns out_dir."""
    from gpt.sample import load_model_for_inference, tokenizer_spec_from_meta

    path = Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    model, meta = load_model_for_inference(str(path), device="cpu")
    if not meta:
        raise ValueError(f"{path}: not a training checkpoint (a transformers directory needs no export)")
    spec = tokenizer or tokenizer_spec_from_meta(meta) or "gpt2"
    is_gpt2 = spec == "gpt2"
    eos = None
    if is_gpt2:
        if model.config.real_vocab_size != GPT2_EOT_ID + 1:
            raise ValueError(
                f"{path}: tokenizer gpt2 has {GPT2_EOT_ID + 1} tokens but the model's real vocabulary is "
                f"{model.config.real_vocab_size}; pass --tokenizer with the vocab it was trained with"
            )
        eos = GPT2_EOT_ID
    else:
        from gpt.tokenizer import load_tokenizer

        try:
            eos = load_tokenizer(spec).special_tokens.get(EOT_TEXT)
        except (ImportError, OSError, ValueError) as e:
            print(
                f"note: tokenizer {spec!r} not loadable ({e}); config.json gets no eos_token_id",
                file=sys.stderr,
            )
    out = model.save_hf(out_dir, eos_token_id=eos)
    if is_gpt2:
        write_gpt2_tokenizer(out, model_max_length=model.config.block_size)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gpt.export",
        description="Write a training checkpoint as a transformers GPT2LMHeadModel directory "
        "(config.json + model.safetensors, unpadded vocabulary, tied embeddings).",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint dir (ckpt_NNNNNNN) or a training output dir (its latest)",
    )
    parser.add_argument(
        "--out", required=True, help="output directory (created; existing files are replaced)"
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="'gpt2' or a bpe-fast vocab.json (default: the checkpoint's); for gpt2 a tokenizer.json is written too",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    out = export(args.checkpoint, args.out, args.tokenizer)
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
