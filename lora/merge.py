"""Merge a LoRA adapter into its base model and save a plain model directory (no peft needed to load).

    python -m lora.merge --adapter runs/smollm2-alpaca --out models/smollm2-alpaca-merged

The base model is taken from the adapter's run.json (written by lora.finetune) unless --model is given.
The output holds the merged weights (save_pretrained) and the tokenizer; it is written to a temporary
folder and renamed when complete.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

from lora import modeling
from lora.adapters import base_model_for


def merge_adapter(
    adapter_dir: Path,
    out: Path,
    model: Optional[str] = None,
    tokenizer: Optional[str] = None,
    overwrite: bool = False,
    log=print,
) -> Path:
    from peft import PeftModel

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    model_name, tokenizer_name = base_model_for(Path(adapter_dir), model, tokenizer)
    log(f"loading base {model_name} and adapter {adapter_dir} ...")
    base, tok = modeling.load_model_and_tokenizer(model_name, tokenizer_name)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        merged.save_pretrained(str(staging))
        tok.save_pretrained(str(staging))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"saved merged model to {out}")
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lora.merge", description="Merge a LoRA adapter into its base model."
    )
    parser.add_argument(
        "--adapter",
        required=True,
        type=Path,
        help="adapter folder written by lora.finetune (or any peft LoRA adapter)",
    )
    parser.add_argument(
        "--model",
        help="base model (hub id, directory, .gguf, smollm2); default: the one in the adapter's run.json",
    )
    parser.add_argument(
        "--tokenizer", help="tokenizer, if the base model has none ('gpt2-bundled' = the repo's GPT-2 files)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder for the merged model and tokenizer"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = parser.parse_args(argv)
    merge_adapter(args.adapter, args.out, args.model, args.tokenizer, args.overwrite)


if __name__ == "__main__":
    main()
