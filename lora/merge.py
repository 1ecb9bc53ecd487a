"""Merge a LoRA adapter into its base model and save a plain model directory (no peft needed to load).

    python -m lora.merge --adapter runs/smollm2-quick --out models/smollm2-quick-merged

The base model is taken from the adapter's run.json (written by lora.finetune) unless --model is given.
The output holds the merged weights (safetensors), the tokenizer, merge_check.json and the marker that
lets --overwrite replace it later; it appears only when complete (bpe_fast.files.atomic_dir). The
adapter is loaded with every tensor checked (a missing or misshapen tensor is an error that names it).

Unless --no-check, the merge is checked against the adapter model (lora.merge_check) and one verdict is
printed, e.g. "merge OK: max |merged - adapter| logits difference 5.4e-05 in float32, within the
float32 tolerance 2.2e-04"; a failed check saves nothing and exits with status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

from bpe_fast.cliutil import ArgumentParser, run_main
from bpe_fast.files import atomic_dir, atomic_write_json, check_overwrite, write_marker
from lora.adapters import base_model_for, check_adapter_dir
from lora.records import json_safe
from lora.sources import local_path, resolve_model_source, resolve_tokenizer_source

PROG = "python -m lora.merge"
TOOL = "lora.merge"
EXIT_CHECK_FAILED = 1


class MergeCheckFailed(Exception):
    """The merged model does not compute what the adapter model does; nothing was saved."""


def plan_merge(adapter_dir: Path, out: Path, model: Optional[str], tokenizer: Optional[str], overwrite: bool):
    """The base model and tokenizer to use, after the cheap checks (paths, sources, --out)."""
    adapter_dir = check_adapter_dir(adapter_dir)
    model, tokenizer = base_model_for(adapter_dir, model, tokenizer)
    resolve_model_source(model)
    resolve_tokenizer_source(tokenizer)
    inputs = [adapter_dir] + [p for p in (local_path(model), local_path(tokenizer)) if p is not None]
    check_overwrite(out, TOOL, overwrite, inputs)
    return model, tokenizer


def merge_adapter(
    adapter_dir: Path,
    out: Path,
    model: Optional[str] = None,
    tokenizer: Optional[str] = None,
    overwrite: bool = False,
    log=print,
    check: bool = True,
) -> Path:
    """Merge and save to `out` (plus merge_check.json when `check`); raises MergeCheckFailed, saving
    nothing, when the check finds the merge wrong or the saved folder not reloading to the same logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from lora import merge_check, modeling
    from lora.adapters import load_adapter

    out = Path(out)
    model_name, tokenizer_name = plan_merge(Path(adapter_dir), out, model, tokenizer, overwrite)
    log(f"loading base {model_name} and adapter {adapter_dir} ...")
    base, tok = modeling.load_model_and_tokenizer(model_name, tokenizer_name)
    peft_model = load_adapter(base, Path(adapter_dir))
    report = None
    if check:
        inputs = merge_check.check_texts(tok, base)
        merged, report = merge_check.merge_and_check(peft_model, inputs)
        log(merge_check.format_report(report))
    else:
        merged = merge_check.merge_lora_layers(peft_model)
    with atomic_dir(out) as staging:
        merged.save_pretrained(str(staging))
        tok.save_pretrained(str(staging))
        if report is not None:
            reloaded = AutoModelForCausalLM.from_pretrained(str(staging), dtype=torch.float32)
            report["saved_logits_equal"] = all(
                torch.equal(x, y)
                for x, y in zip(
                    merge_check.probe_logits(reloaded, inputs), merge_check.probe_logits(merged, inputs)
                )
            )
            del reloaded
            atomic_write_json(staging / "merge_check.json", json_safe(report), indent=2)
            verdict = merge_check.verdict(report)
            if merge_check.problems(report):
                raise MergeCheckFailed(verdict + "; nothing was saved")
            log(verdict)
        write_marker(staging, TOOL)
    log(f"saved merged model to {out}")
    return out


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Merge a LoRA adapter into its base model (float64 merge arithmetic) and check the result.",
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
        "--tokenizer", help="tokenizer, if the base model has none ('gpt2-bundled' = bpe_fast's GPT-2 files)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder for the merged model and tokenizer"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if an earlier lora.merge made it (never an input, nor any other folder)",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip comparing merged and adapter logits (float64 and float32) and the reload of the output",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    plan_merge(args.adapter, args.out, args.model, args.tokenizer, args.overwrite)  # before the slow imports
    try:
        merge_adapter(
            args.adapter, args.out, args.model, args.tokenizer, args.overwrite, check=not args.no_check
        )
    except MergeCheckFailed as failure:
        print(f"{PROG}: {failure}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return 0


if __name__ == "__main__":
    run_main(main, PROG)
