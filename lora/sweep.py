"""A grid of LoRA fine-tunes over r, alpha and target modules (the course report's sections 3.4-3.6).

    python -m lora.sweep --model smollm2 --data alpaca-sample --r 1 4 16 --alpha 1 \\
        --target-modules attention mlp --max-samples 256 --out sweeps/alpaca

or with a YAML file holding the same keys (lists for the swept ones; CLI flags win over it):

    r: [1, 4, 16]
    alpha: [1]
    target_modules: [attention, mlp, "q_proj,v_proj"]
    model: smollm2
    data: alpaca-sample
    lr: 0.03

Runs go one after another in this process (the base model is loaded once) into OUT/runs/<name>/, each
a complete lora.finetune output. Started again, the sweep skips the runs whose run.json says complete
(their settings must equal the requested ones) and resumes an interrupted run from its saved state.
Then OUT/results.md, OUT/results.csv and one PNG of loss curves per swept dimension
(OUT/loss_by_<dim>.png: a curve per value, a panel per setting of the other dimensions). OUT carries a
lora.sweep marker: a sweep never writes into a non-empty folder that another tool made.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from bpe_fast.cliutil import ArgumentParser, UserError, positive_float, positive_int, run_main
from bpe_fast.files import OverwriteRefused, atomic_path, atomic_write_text, marker_tool, write_marker
from lora import config as lora_config
from lora.adapters import read_run_summary
from lora.config import FIELDS, FinetuneConfig
from lora.run_folder import TrainingInterrupted, prepare_run_folder
from lora.sources import resolve_model_source, resolve_tokenizer_source

PROG = "python -m lora.sweep"
TOOL = "lora.sweep"
SWEPT = ("r", "alpha", "target_modules")
EXIT_TERMINATED = 143
# Keys a --config file may hold: the settings a sweep passes to every run, the swept lists, the preset.
YAML_KEYS = {name for name, f in FIELDS.items() if f.metadata["group"] != "output"} | {"preset"}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Grid of LoRA fine-tunes over r x alpha x target modules, with a results table and loss plots.",
        epilog="Every lora.finetune training flag applies to all runs of the grid. Presets: "
        + lora_config.preset_help(),
    )
    parser.add_argument(
        "--config", type=Path, help="YAML file with r / alpha / target_modules lists and finetune settings"
    )
    lora_config.add_preset_flag(parser)
    lora_config.add_config_flags(parser, lora_config.SHARED_GROUPS)
    parser.add_argument("--r", type=positive_int, nargs="+", help="ranks to try (default: 8)")
    parser.add_argument("--alpha", type=positive_float, nargs="+", help="alphas to try (default: 16)")
    parser.add_argument(
        "--target-modules",
        nargs="+",
        help="target settings to try, one per value: a group "
        "(attention, mlp, all-linear) or comma-joined names (q_proj,v_proj). Default: attention",
    )
    parser.add_argument("--out", required=True, type=Path, help="sweep folder (runs/, results.md/.csv, PNGs)")
    return parser


def load_yaml_config(path: Path) -> Dict[str, object]:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise UserError(f"--config {path}: cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise UserError(f"--config {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise UserError(f"--config {path}: expected a mapping of settings")
    return lora_config.check_keys(config, str(path), allowed=YAML_KEYS)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def grid_from_args(args: argparse.Namespace) -> Tuple[FinetuneConfig, Dict[str, list]]:
    """(settings shared by every run, the swept values per dimension): the preset, then the YAML
    file, then the flags; every value checked as lora.finetune checks it."""
    given = dict(vars(args))
    config_file = given.pop("config", None)
    yaml_values = load_yaml_config(config_file) if config_file else {}
    preset = given.pop("preset", None) or yaml_values.pop("preset", None)
    swept = {key: given.pop(key, None) for key in SWEPT}
    given.pop("out", None)
    values = {key: value for key, value in yaml_values.items() if key not in SWEPT}
    values.update(given)
    try:
        base = lora_config.config_from_values(values, preset)
    except UserError as error:
        source = f" (from the flags or --config {config_file})" if config_file else ""
        raise UserError(f"{error}{source}") from None
    if base.model is None:
        raise UserError("--model is required (on the command line or in the --config file)")
    grid: Dict[str, list] = {}
    for key in SWEPT:
        chosen = swept[key] if swept[key] is not None else yaml_values.get(key)
        if chosen is None:  # not swept: the single value lora.finetune would use
            chosen = ",".join(base.target_modules) if key == "target_modules" else getattr(base, key)
        grid[key] = _as_list(chosen)
    grid["target_modules"] = [
        ",".join(v) if isinstance(v, (list, tuple)) else v for v in grid["target_modules"]
    ]
    for key in SWEPT:  # each swept value passes the same check as the flag of one run
        grid[key] = [getattr(dataclasses.replace(base, **{key: value}), key) for value in grid[key]]
    grid["target_modules"] = [",".join(value) for value in grid["target_modules"]]
    for key, values in grid.items():
        if len(set(values)) != len(values):
            raise UserError(f"--{key.replace('_', '-')} lists a value twice: {values}")
    return base, grid


def run_name(r: int, alpha: float, targets: str) -> str:
    safe_targets = targets.replace(",", "+").replace("/", "_").replace(" ", "")
    return f"r{r}-alpha{alpha:g}-{safe_targets}"


def finished_summary(run_dir: Path, config: FinetuneConfig) -> Optional[Dict[str, object]]:
    """The run's summary if it completed with these settings; None if it must (re)run."""
    summary = read_run_summary(run_dir) if run_dir.is_dir() else None
    if (
        not summary
        or summary.get("status") != "complete"
        or not (run_dir / "adapter_model.safetensors").is_file()
    ):
        return None
    recorded = lora_config.computed_settings(summary.get("settings", {}))
    wanted = lora_config.computed_settings(config.to_dict())
    differing = sorted(key for key in set(recorded) | set(wanted) if recorded.get(key) != wanted.get(key))
    if differing:
        raise UserError(
            f"{run_dir} finished with different settings ({', '.join(differing)}); use another --out or delete it"
        )
    return summary


def check_sweep_folder(out: Path) -> None:
    """A sweep writes only into a new or empty folder, or one an earlier lora.sweep made."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and marker_tool(out) != TOOL:
        raise OverwriteRefused(
            f"--out {out} is not empty and was not made by {TOOL}: choose a new folder (a sweep started "
            "again in its own folder continues it)"
        )


def run_sweep(args: argparse.Namespace, log=print, progress: bool = True) -> List[Dict[str, object]]:
    base, grid = grid_from_args(args)
    out: Path = args.out
    check_sweep_folder(out)
    resolve_model_source(base.model)
    resolve_tokenizer_source(base.tokenizer)
    from lora import modeling, training

    (out / "runs").mkdir(parents=True, exist_ok=True)
    write_marker(out, TOOL)
    combos = list(itertools.product(grid["r"], grid["alpha"], grid["target_modules"]))
    model = tokenizer = None
    rows: List[Dict[str, object]] = []
    for index, (r, alpha, targets) in enumerate(combos, 1):
        name = run_name(r, alpha, targets)
        run_config = dataclasses.replace(
            base,
            r=r,
            alpha=alpha,
            target_modules=[targets],
            out=str(out / "runs" / name),
            logdir=None,
            overwrite=True,
            resume=True,
        )
        summary = finished_summary(out / "runs" / name, run_config)
        if summary is not None:
            log(f"[{index}/{len(combos)}] {name}: finished earlier, skipped")
        else:
            if model is None:
                log(f"loading {base.model} ...")
                model, tokenizer = modeling.load_model_and_tokenizer(base.model, base.tokenizer)
                # Check every target setting before spending time on the first run.
                for value in grid["target_modules"]:
                    modeling.resolve_target_modules(model, [value])
            folder = prepare_run_folder(run_config, log, say_fresh_start=False)
            resuming = f" (resuming at step {folder.resume_step})" if folder.resume_step is not None else ""
            log(f"[{index}/{len(combos)}] {name}: training{resuming}")
            summary = training.finetune_model(
                run_config, model, tokenizer, log=log, progress=progress, folder=folder
            )[2]
        rows.append({"name": name, "r": r, "alpha": alpha, "target_modules": targets, "summary": summary})
    write_results(out, rows, grid)
    return rows


# ------------------------------------------------------------------------------------------------ results


def _number(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cell(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip()


def _probe(summary: Dict[str, object], name: str) -> str:
    return str(summary.get("probes", {}).get(name, {}).get("generation", ""))


def write_results(out: Path, rows: Sequence[Dict[str, object]], grid: Dict[str, list]) -> None:
    header = [
        "run",
        "r",
        "alpha",
        "target_modules",
        "trainable_params",
        "final_train_loss",
        "heldout_loss_before",
        "heldout_loss_after",
        "train_seconds",
        "steps",
        "probe_plain",
        "probe_instruction",
    ]
    table = []
    for row in rows:
        summary = row["summary"]
        table.append(
            [
                row["name"],
                row["r"],
                f"{row['alpha']:g}",
                row["target_modules"],
                summary["trainable_params"],
                _number(summary["final_train_loss"], 4),
                _number(summary["heldout_loss_before"], 4),
                _number(summary["heldout_loss_after"], 4),
                _number(summary["train_seconds"], 1),
                summary["steps"],
                _probe(summary, "plain"),
                _probe(summary, "instruction"),
            ]
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(table)
    atomic_write_text(out / "results.csv", buffer.getvalue())

    # The report reads IMDB runs by the plain probe and Alpaca runs by the instruction probe.
    data_format = rows[0]["summary"].get("data_format", "alpaca") if rows else "alpaca"
    probe_column = 11 if data_format == "alpaca" else 10
    probe_title = "instruction probe" if probe_column == 11 else "plain probe"
    md_header = header[:10] + [f"generation ({probe_title})"]
    lines = [f"# LoRA sweep: {len(rows)} runs", ""]
    if rows:
        first = rows[0]["summary"]
        lines += [
            f"Model `{first['settings']['model']}`, data {first['data_source']}; swept: "
            + ", ".join(f"{key} = {values}" for key, values in grid.items()),
            "",
        ]
    lines.append("| " + " | ".join(md_header) + " |")
    lines.append("|" + "---|" * len(md_header))
    for values in table:
        lines.append("| " + " | ".join(_cell(v) for v in values[:10] + [values[probe_column]]) + " |")
    figures = plot_loss_curves(out, rows, grid)
    if figures:
        lines += ["", "Loss curves: " + ", ".join(f"[{path.name}]({path.name})" for path in figures)]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")


def plot_loss_curves(out: Path, rows: Sequence[Dict[str, object]], grid: Dict[str, list]) -> List[Path]:
    """One PNG per swept dimension: a curve per value; one panel per setting of the other dimensions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dimensions = [key for key in SWEPT if len(grid[key]) > 1] or ["r"]
    written = []
    for dimension in dimensions:
        others = [key for key in SWEPT if key != dimension]
        panels = sorted({tuple(row[key] for key in others) for row in rows}, key=str)
        columns = min(3, len(panels))
        rows_of_panels = (len(panels) + columns - 1) // columns
        figure, axes = plt.subplots(
            rows_of_panels, columns, figsize=(5.5 * columns, 3.8 * rows_of_panels), squeeze=False
        )
        for panel_index, panel in enumerate(panels):
            axis = axes[panel_index // columns][panel_index % columns]
            for row in rows:
                if tuple(row[key] for key in others) != panel:
                    continue
                history = row["summary"].get("history", [])
                axis.plot(
                    [h["step"] for h in history],
                    [h["loss"] for h in history],
                    label=f"{dimension}={row[dimension]}",
                )
            axis.set_title(", ".join(f"{key}={value}" for key, value in zip(others, panel)), fontsize=9)
            axis.set_xlabel("optimizer step")
            axis.set_ylabel("train loss")
            axis.legend(fontsize=8)
        for extra in range(len(panels), rows_of_panels * columns):
            axes[extra // columns][extra % columns].axis("off")
        figure.suptitle(f"LoRA train loss by {dimension}")
        figure.tight_layout()
        path = out / f"loss_by_{dimension}.png"
        try:
            with atomic_path(path, suffix=".png") as temporary:
                figure.savefig(temporary, format="png", dpi=100)
        finally:
            plt.close(figure)
        written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = run_sweep(args)
    except TrainingInterrupted:
        return EXIT_TERMINATED  # the run said where its state is; the same command continues the sweep
    print(f"{len(rows)} runs; results in {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    run_main(main, PROG)
