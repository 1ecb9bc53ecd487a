"""Compare a base model with LoRA adapters the way the course report's tables 6 and 7 do.

    python -m lora.evaluate --adapters runs/imdb runs/alpaca --names "IMDB FT" "Alpaca IFT" --out eval.md

Table 6: the report's 10 fixed prompts (3 movie, 3 general, 4 instruction with the shared preamble;
bpe_fast's samples/finetune/eval_prompts.json), one generation per model column (base first). Table 7:
held-out loss per labelled token on N rows of each data set, per model. The rows are the first N of the
same seeded shuffle lora.finetune holds out, so they were never trained on: for a data set an adapter
was trained on (recognised by its rows' fingerprint in run.json), N is lowered to the rows that adapter
held out, with a notice, and a --seed other than the adapter's is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from bpe_fast.cliutil import ArgumentParser, UserError, positive_int, run_main
from bpe_fast.files import atomic_write_json, atomic_write_text
from lora import data as lora_data
from lora.adapters import base_model_for, check_adapter_dir, read_run_summary, recorded_base
from lora.config import MAX_LENGTH, PRECISIONS, SEED, device_name
from lora.records import json_safe
from lora.resources import load_eval_prompts
from lora.sources import resolve_model_source, resolve_tokenizer_source

PROG = "python -m lora.evaluate"
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


def heldout_rows_limit(
    dataset: str,
    rows: Sequence[dict],
    adapters: Sequence[Path],
    requested: int,
    seed: int,
    log: Callable[[str], None],
) -> int:
    """How many held-out rows of `dataset` may be scored: `requested`, lowered to what every adapter
    trained on these rows held out (and never more than all rows but one)."""
    fingerprint = lora_data.rows_fingerprint(rows)
    limit, reason = min(requested, len(rows) - 1), f"{dataset} has {len(rows)} rows"
    for adapter in adapters:
        summary = read_run_summary(adapter)
        if summary is None:
            log(f"notice: {adapter} has no run.json, so which {dataset} rows it trained on is unknown")
            continue
        settings = summary.get("settings", {})
        if summary.get("data_fingerprint", None) != fingerprint and not (
            "data_fingerprint" not in summary and settings.get("data") == dataset
        ):
            continue  # trained on other data: every row of this data set is unseen by it
        if settings.get("seed") != seed:
            raise UserError(
                f"{adapter} held out its {dataset} rows with --seed {settings.get('seed')}: pass --seed "
                f"{settings.get('seed')} so that the loss is measured on rows it never trained on"
            )
        held_out = int(settings.get("eval_samples", 0))
        if held_out < limit:
            limit, reason = (
                held_out,
                f"{adapter} held out only {held_out} rows of it (it trained on the rest)",
            )
    if limit < requested:
        log(f"notice: --loss-samples {requested} lowered to {limit} for {dataset}: {reason}")
    return limit


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
    progress: bool = True,
) -> Dict[str, object]:
    """Generations (table 6) and held-out losses (table 7) for the base model and each adapter."""
    adapters = [check_adapter_dir(Path(a)) for a in adapters]
    columns, model_name, tokenizer_name = plan_columns(model_name, adapters, names, tokenizer_name, log)
    for dataset in loss_datasets:
        lora_data.check_data_spec(dataset)

    from lora.precision import resolve_device, resolve_precision

    device = resolve_device(device_name)
    precision = resolve_precision(precision, device, log)
    model, tokenizer, context = load_columns(model_name, tokenizer_name, adapters, device, log)
    max_length = min(max_length, context) if context is not None else max_length
    prompts = evaluation_prompts(instruction_format)
    loss_sets = heldout_examples(loss_datasets, tokenizer, adapters, loss_samples, seed, max_length, log)
    scorer = ColumnScorer(
        model, tokenizer, prompts, loss_sets, device, precision, max_new_tokens, sample, seed
    )
    generations, losses = scorer.score(columns, with_adapters=bool(adapters), progress=progress)
    return {
        "model": model_name,
        "adapters": [str(a) for a in adapters],
        "columns": columns,
        "prompts": prompts,
        "generations": generations,
        "heldout_loss": losses,
        "loss_samples": {dataset: len(examples) for dataset, examples in loss_sets.items()},
        "settings": {
            "max_new_tokens": max_new_tokens,
            "sample": sample,
            "seed": seed,
            "instruction_format": instruction_format,
            "max_length": max_length,
        },
    }


def load_columns(model_name: str, tokenizer_name: Optional[str], adapters: Sequence[Path], device, log):
    """(the base model with every adapter loaded as adapter0, adapter1, ..., the tokenizer, the context)."""
    from lora import modeling
    from lora.adapters import load_adapter

    log(f"loading {model_name} ...")
    base, tokenizer = modeling.load_model_and_tokenizer(model_name, tokenizer_name)
    context = modeling.context_length(base)
    model = base
    for index, adapter in enumerate(adapters):
        model = load_adapter(model, adapter, adapter_name=f"adapter{index}")
    return model.to(device).eval(), tokenizer, context


def heldout_examples(datasets, tokenizer, adapters, requested: int, seed: int, max_length: int, log):
    """Per data set, the encoded held-out rows that no adapter trained on (see heldout_rows_limit)."""
    loss_sets = {}
    for dataset in datasets:
        rows, source = lora_data.load_rows(dataset, log)
        limit = heldout_rows_limit(dataset, rows, adapters, requested, seed, log)
        if limit < 1:
            log(f"notice: no held-out {dataset} rows to score; its loss row is left out")
            continue
        _, held_out = lora_data.split_rows(rows, limit, None, seed)
        loss_sets[dataset], _ = lora_data.encode_rows(tokenizer, held_out, "auto", max_length, source)
    return loss_sets


class ColumnScorer:
    """Runs the prompts and the loss sets through each column: the base model, then each adapter."""

    LOSS_BATCH = 8

    def __init__(self, model, tokenizer, prompts, loss_sets, device, precision, max_new_tokens, sample, seed):
        self.model, self.tokenizer, self.prompts, self.loss_sets = model, tokenizer, prompts, loss_sets
        self.device, self.precision = device, precision
        self.max_new_tokens, self.sample, self.seed = max_new_tokens, sample, seed
        self.pad_id = lora_data.pad_token_id(tokenizer)

    def score(self, columns: Sequence[str], with_adapters: bool, progress: bool):
        from tqdm.auto import tqdm

        batches = sum(-(-len(examples) // self.LOSS_BATCH) for examples in self.loss_sets.values())
        total = len(columns) * (len(self.prompts) + batches)
        generations: Dict[str, List[str]] = {}
        losses: Dict[str, Dict[str, float]] = {}
        with tqdm(total=total, desc="evaluate", disable=not progress) as bar:
            for index, column in enumerate(columns):
                bar.set_postfix_str(column)
                if index == 0 and with_adapters:
                    with self.model.disable_adapter():
                        generations[column], column_losses = self.one_column(bar)
                else:
                    if index > 0:
                        self.model.set_adapter(f"adapter{index - 1}")
                    generations[column], column_losses = self.one_column(bar)
                for dataset, value in column_losses.items():
                    losses.setdefault(dataset, {})[column] = value
        return generations, losses

    def one_column(self, bar):
        from lora.inference import generate, heldout_loss

        texts = generate(
            self.model,
            self.tokenizer,
            [p["text"] for p in self.prompts],
            self.device,
            self.max_new_tokens,
            self.sample,
            self.seed,
            on_prompt=lambda: bar.update(1),
        )
        column_losses = {
            dataset: heldout_loss(
                self.model,
                examples,
                self.pad_id,
                self.device,
                self.precision,
                batch_size=self.LOSS_BATCH,
                on_batch=lambda: bar.update(1),
            )
            for dataset, examples in self.loss_sets.items()
        }
        return texts, column_losses


def plan_columns(model_name, adapters: Sequence[Path], names, tokenizer_name, log):
    """(column names, base model, tokenizer) after the cheap checks: names, sources."""
    if names and len(names) != len(adapters):
        raise UserError(f"--names gives {len(names)} names for {len(adapters)} adapters")
    columns = [BASE_COLUMN] + list(names or [a.name for a in adapters])
    if len(set(columns)) != len(columns):
        raise UserError(f"column names must differ: {columns}; pass --names")
    if model_name is None:
        if not adapters:
            raise UserError("--model is required when no --adapters are given")
        model_name, tokenizer_name = base_model_for(adapters[0], None, tokenizer_name)
    for adapter in adapters:
        recorded, _ = recorded_base(adapter)
        if recorded is not None and recorded != model_name:
            log(f"notice: {adapter} was trained on {recorded}, evaluated here on {model_name}")
    resolve_model_source(model_name)
    resolve_tokenizer_source(tokenizer_name)
    return columns, model_name, tokenizer_name


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


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--model", help="base model (hub id, directory, .gguf, smollm2); default: the first adapter's")
    add("--tokenizer", help="tokenizer if the model has none ('gpt2-bundled' = bpe_fast's GPT-2 files)")
    add("--adapters", nargs="*", default=[], type=Path, help="adapter folders (lora.finetune outputs)")
    add("--names", nargs="*", help="column names for the adapters (default: folder names)")
    add(
        "--loss-datasets",
        nargs="*",
        default=["alpaca-sample", "imdb-sample"],
        help="data sets for held-out loss (names as lora.finetune --data); none skips the table",
    )
    add(
        "--loss-samples",
        type=positive_int,
        default=32,
        help="held-out rows per data set (default 32; lowered, with a notice, to the rows an adapter held out)",
    )
    add(
        "--seed",
        type=SEED,
        default=0,
        help="split seed (as lora.finetune --seed) and sampling seed (default 0)",
    )
    add(
        "--max-length",
        type=MAX_LENGTH,
        default=512,
        help="tokens per loss sample, capped at the context (default 512)",
    )
    add("--max-new-tokens", type=positive_int, default=40, help="tokens generated per prompt (default 40)")
    add(
        "--sample",
        action="store_true",
        help="seeded sampling (temperature 0.8, top-p 0.95) instead of greedy",
    )
    add(
        "--instruction-format",
        choices=["report", "alpaca"],
        default="report",
        help="instruction prompts as the report wrote them, or in the Alpaca training template",
    )
    add("--precision", choices=PRECISIONS, default="fp32", help="autocast precision (default fp32)")
    add("--device", type=device_name, default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    add("--out", type=Path, help="write the Markdown here (and the raw results beside it as .json)")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is not None and args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file name such as eval.md")
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
        progress=not args.no_progress,
    )
    markdown = render_markdown(result)
    print(markdown)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, markdown)
        atomic_write_json(args.out.with_suffix(".json"), json_safe(result), indent=2)
    return 0


if __name__ == "__main__":
    run_main(main, PROG)
