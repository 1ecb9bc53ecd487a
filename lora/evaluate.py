"""Compare a base model with LoRA adapters the way the course report's tables 6 and 7 do.

    python -m lora.evaluate --adapters runs/imdb runs/alpaca --names "IMDB FT" "Alpaca IFT" --out eval.md

Table 6: the report's 10 fixed prompts (3 movie, 3 general, 4 instruction with the shared preamble;
data/finetune/eval_prompts.json), one generation per model column (base first). Table 7: held-out loss
per labelled token on N rows of each data set, per model. The rows are the first N of the same seeded
shuffle lora.finetune holds out, so with the same --seed and N <= its --eval-samples they were never
trained on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lora import data as lora_data
from lora import modeling
from lora.adapters import base_model_for, check_adapter_dir
from lora.inference import generate, heldout_loss
from lora.precision import PRECISIONS, resolve_device, resolve_precision
from lora.resources import load_eval_prompts

BASE_COLUMN = "Foundation model"
_INSTRUCTION_PARTS = re.compile(
    r"^Instruction:\s*(?P<instruction>.*?)\s*Input:\s*(?P<input>.*?)\s*Response:\s*$", re.S
)


def evaluation_prompts(instruction_format: str) -> List[Dict[str, str]]:
    """Rows of (category, label shown in the table, text given to the model).

    instruction_format 'report' feeds the instruction prompts exactly as the report did (preamble +
    'Instruction: ... Input: ... Response:' on one line); 'alpaca' rewrites them into the Alpaca template
    lora.finetune trains with.
    """
    prompts = load_eval_prompts()
    rows = [{"category": c, "label": p, "text": p} for c in ("movie", "general") for p in prompts[c]]
    preamble = str(prompts["instruction_preamble"])
    for prompt in prompts["instruction"]:
        if instruction_format == "report":
            text = f"{preamble} {prompt}"
        elif instruction_format == "alpaca":
            parts = _INSTRUCTION_PARTS.match(prompt)
            if parts is None:
                raise ValueError(
                    f"eval_prompts.json: instruction prompt not in 'Instruction: .. Input: .. Response:' form: {prompt!r}"
                )
            text = lora_data.alpaca_prompt(parts["instruction"], parts["input"])
        else:
            raise ValueError(
                f"unknown instruction format {instruction_format!r}; expected 'report' or 'alpaca'"
            )
        rows.append({"category": "instruction", "label": prompt, "text": text})
    return rows


def _cell(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> List[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def evaluate(
    model_name: Optional[str],
    adapters: Sequence[Path],
    names: Optional[Sequence[str]] = None,
    tokenizer_name: Optional[str] = None,
    loss_datasets: Sequence[str] = ("alpaca-sample", "imdb-sample"),
    loss_samples: int = 32,
    seed: int = 0,
    max_length: int = 512,
    max_new_tokens: int = 40,
    sample: bool = False,
    instruction_format: str = "report",
    precision: str = "fp32",
    device_name: str = "auto",
    log=print,
) -> Dict[str, object]:
    """Generations (table 6) and held-out losses (table 7) for the base model and each adapter."""
    from peft import PeftModel

    adapters = [check_adapter_dir(Path(a)) for a in adapters]
    if names and len(names) != len(adapters):
        raise ValueError(f"--names gives {len(names)} names for {len(adapters)} adapters")
    columns = [BASE_COLUMN] + list(names or [a.name for a in adapters])
    if len(set(columns)) != len(columns):
        raise ValueError(f"column names must differ: {columns}")
    if model_name is None:
        if not adapters:
            raise ValueError("--model is required when no --adapters are given")
        model_name, tokenizer_name = base_model_for(adapters[0], None, tokenizer_name)
    for adapter in adapters[1:]:
        recorded, _ = base_model_for(adapter, None, None)
        if recorded != model_name:
            log(f"notice: {adapter} was trained on {recorded}, evaluated here on {model_name}")
    device = resolve_device(device_name)
    precision = resolve_precision(precision, device, log)
    log(f"loading {model_name} ...")
    base, tokenizer = modeling.load_model_and_tokenizer(model_name, tokenizer_name)
    model = base
    adapter_names = [f"adapter{i}" for i in range(len(adapters))]
    if adapters:
        model = PeftModel.from_pretrained(base, str(adapters[0]), adapter_name=adapter_names[0])
        for adapter, adapter_name in zip(adapters[1:], adapter_names[1:]):
            model.load_adapter(str(adapter), adapter_name=adapter_name)
    model = model.to(device).eval()
    context = modeling.context_length(base)
    if context is not None:
        max_length = min(max_length, context)

    prompts = evaluation_prompts(instruction_format)
    losses: Dict[str, Dict[str, float]] = {}
    encoded_sets = {}
    for dataset in loss_datasets:
        rows, source = lora_data.load_rows(dataset, log)
        _, held_out = lora_data.split_rows(rows, min(loss_samples, len(rows) - 1), None, seed)
        examples, _ = lora_data.encode_rows(tokenizer, held_out, "auto", max_length, source)
        encoded_sets[dataset] = examples
    pad_id = lora_data.pad_token_id(tokenizer)

    generations: Dict[str, List[str]] = {}
    for column, adapter_name in zip(columns, [None] + adapter_names):
        log(f"evaluating {column} ...")

        def run_column():
            texts = generate(
                model, tokenizer, [p["text"] for p in prompts], device, max_new_tokens, sample, seed
            )
            column_losses = {
                dataset: heldout_loss(model, examples, pad_id, device, precision)
                for dataset, examples in encoded_sets.items()
            }
            return texts, column_losses

        if adapter_name is None and adapters:
            with model.disable_adapter():
                generations[column], column_losses = run_column()
        else:
            if adapter_name is not None:
                model.set_adapter(adapter_name)
            generations[column], column_losses = run_column()
        for dataset, value in column_losses.items():
            losses.setdefault(dataset, {})[column] = value
    return {
        "model": model_name,
        "adapters": [str(a) for a in adapters],
        "columns": columns,
        "prompts": prompts,
        "generations": generations,
        "heldout_loss": losses,
        "loss_samples": {dataset: len(examples) for dataset, examples in encoded_sets.items()},
        "settings": {
            "max_new_tokens": max_new_tokens,
            "sample": sample,
            "seed": seed,
            "instruction_format": instruction_format,
            "max_length": max_length,
        },
    }


def render_markdown(result: Dict[str, object]) -> str:
    columns = result["columns"]
    decoding = "sampled (seed {seed})" if result["settings"]["sample"] else "greedy"
    lines = [
        f"# LoRA evaluation of `{result['model']}`",
        "",
        f"## Generations ({decoding.format(**result['settings'])}, "
        f"{result['settings']['max_new_tokens']} new tokens; instruction prompts carry the shared preamble)",
        "",
    ]
    rows = [
        [prompt["label"]] + [result["generations"][c][i] for c in columns]
        for i, prompt in enumerate(result["prompts"])
    ]
    lines += markdown_table(["Prompt"] + columns, rows)
    if result["heldout_loss"]:
        lines += ["", "## Held-out loss per labelled token", ""]
        rows = [
            [f"{dataset} ({result['loss_samples'][dataset]} rows)"] + [f"{values[c]:.4f}" for c in columns]
            for dataset, values in result["heldout_loss"].items()
        ]
        lines += markdown_table(["Data set"] + columns, rows)
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lora.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", help="base model (hub id, directory, .gguf, smollm2); default: the first adapter's"
    )
    parser.add_argument(
        "--tokenizer", help="tokenizer if the model has none ('gpt2-bundled' = the repo's GPT-2 files)"
    )
    parser.add_argument(
        "--adapters", nargs="*", default=[], type=Path, help="adapter folders (lora.finetune outputs)"
    )
    parser.add_argument("--names", nargs="*", help="column names for the adapters (default: folder names)")
    parser.add_argument(
        "--loss-datasets",
        nargs="*",
        default=["alpaca-sample", "imdb-sample"],
        help="data sets for held-out loss (names as lora.finetune --data); none skips the table",
    )
    parser.add_argument(
        "--loss-samples", type=int, default=32, help="held-out rows per data set (default 32)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="split seed (as lora.finetune --seed) and sampling seed"
    )
    parser.add_argument(
        "--max-length", type=int, default=512, help="tokens per loss sample, capped at the context"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=40, help="tokens generated per prompt (default 40)"
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="seeded sampling (temperature 0.8, top-p 0.95) instead of greedy",
    )
    parser.add_argument(
        "--instruction-format",
        choices=["report", "alpaca"],
        default="report",
        help="instruction prompts as the report wrote them, or in the Alpaca training template",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="autocast precision (default fp32)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument(
        "--out", type=Path, help="write the Markdown here (and the raw results beside it as .json)"
    )
    args = parser.parse_args(argv)
    if args.loss_samples < 1 or args.max_new_tokens < 1 or args.max_length < 2:
        parser.error("--loss-samples and --max-new-tokens must be >= 1, --max-length >= 2")
    result = evaluate(
        args.model,
        args.adapters,
        args.names,
        args.tokenizer,
        args.loss_datasets,
        args.loss_samples,
        args.seed,
        args.max_length,
        args.max_new_tokens,
        args.sample,
        args.instruction_format,
        args.precision,
        args.device,
    )
    markdown = render_markdown(result)
    print(markdown)
    if args.out:
        _write_atomic(args.out, markdown)
        _write_atomic(args.out.with_suffix(".json"), json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
