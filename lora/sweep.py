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
a complete lora.finetune output. A run whose run.json says complete is skipped on restart (its settings
must equal the requested ones). Then OUT/results.md, OUT/results.csv and one PNG of loss curves per
swept dimension (OUT/loss_by_<dim>.png: a curve per value, a panel per setting of the other dimensions).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from lora import finetune, modeling
from lora.adapters import read_run_summary

SWEPT = ("r", "alpha", "target_modules")
# Settings that do not change what a run computes, so they may differ between a finished run and a restart.
_NOT_COMPARED = {"out", "logdir", "overwrite", "device"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lora.sweep",
        description="Grid of LoRA fine-tunes over r x alpha x target modules, with a results table and loss plots.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every lora.finetune training flag applies to all runs of the grid.",
    )
    parser.add_argument(
        "--config", type=Path, help="YAML file with r / alpha / target_modules lists and finetune settings"
    )
    finetune.add_training_flags(parser)
    parser.add_argument("--r", type=int, nargs="+", help="ranks to try (default: 8)")
    parser.add_argument("--alpha", type=float, nargs="+", help="alphas to try (default: 16)")
    parser.add_argument(
        "--target-modules",
        nargs="+",
        help="target settings to try, one per value: a group "
        "(attention, mlp, all-linear) or comma-joined names (q_proj,v_proj). Default: attention",
    )
    parser.add_argument("--out", required=True, type=Path, help="sweep folder (runs/, results.md/.csv, PNGs)")
    # --model is required by the shared flags; a YAML file may supply it instead.
    for action in parser._actions:
        if action.dest == "model":
            action.required = False
    return parser


def load_yaml_config(path: Path) -> Dict[str, object]:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    config = {str(key).replace("-", "_"): value for key, value in config.items()}
    known = set(finetune.DEFAULTS) | {"model", "preset"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    return config


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def grid_from_args(args: argparse.Namespace) -> Tuple[Dict[str, object], Dict[str, list]]:
    """(settings shared by every run, the swept values per dimension)."""
    config = load_yaml_config(args.config) if args.config else {}
    for key, value in config.items():
        if key not in SWEPT and getattr(args, key, None) is None:
            setattr(args, key, value)
    if not args.model:
        raise ValueError("--model is required (on the command line or in the --config file)")
    # Resolve shared settings as lora.finetune would (flags, then preset, then defaults).
    swept_cli = {"r": args.r, "alpha": args.alpha, "target_modules": args.target_modules}
    probe = argparse.Namespace(**vars(args))
    probe.r, probe.alpha, probe.target_modules = None, None, None
    base = finetune.resolve_settings(probe)
    grid: Dict[str, list] = {}
    for key in SWEPT:
        values = swept_cli[key] if swept_cli[key] is not None else config.get(key)
        if values is None:  # not swept: the single value lora.finetune would use
            values = ",".join(base[key]) if key == "target_modules" else base[key]
        grid[key] = _as_list(values)
    grid["r"] = [int(value) for value in grid["r"]]
    grid["alpha"] = [float(value) for value in grid["alpha"]]
    grid["target_modules"] = [
        ",".join(v) if isinstance(v, (list, tuple)) else str(v) for v in grid["target_modules"]
    ]
    for key, values in grid.items():
        if len(set(values)) != len(values):
            raise ValueError(f"--{key.replace('_', '-')} lists a value twice: {values}")
    return base, grid


def run_name(r: int, alpha: float, targets: str) -> str:
    safe_targets = targets.replace(",", "+").replace("/", "_").replace(" ", "")
    return f"r{r}-alpha{alpha:g}-{safe_targets}"


def _comparable(settings: Dict[str, object]) -> Dict[str, object]:
    return {key: value for key, value in settings.items() if key not in _NOT_COMPARED}


def finished_summary(run_dir: Path, settings: Dict[str, object]) -> Optional[Dict[str, object]]:
    """The run's summary if it completed with these settings; None if it must (re)run."""
    summary = read_run_summary(run_dir) if run_dir.is_dir() else None
    if (
        not summary
        or summary.get("status") != "complete"
        or not (run_dir / "adapter_model.safetensors").is_file()
    ):
        return None
    recorded = _comparable(summary.get("settings", {}))
    wanted = json.loads(json.dumps(_comparable(settings)))  # normalise tuples etc. as run.json stores them
    differing = sorted(key for key in set(recorded) | set(wanted) if recorded.get(key) != wanted.get(key))
    if differing:
        raise ValueError(
            f"{run_dir} finished with different settings ({', '.join(differing)}); use another --out or delete it"
        )
    return summary


def run_sweep(args: argparse.Namespace, log=print, progress: bool = True) -> List[Dict[str, object]]:
    base_settings, grid = grid_from_args(args)
    out: Path = args.out
    (out / "runs").mkdir(parents=True, exist_ok=True)
    combos = list(itertools.product(grid["r"], grid["alpha"], grid["target_modules"]))
    model = tokenizer = None
    rows: List[Dict[str, object]] = []
    for index, (r, alpha, targets) in enumerate(combos, 1):
        name = run_name(r, alpha, targets)
        settings = dict(
            base_settings,
            r=r,
            alpha=alpha,
            target_modules=[targets],
            out=str(out / "runs" / name),
            logdir=None,
            overwrite=True,
        )
        summary = finished_summary(out / "runs" / name, settings)
        if summary is not None:
            log(f"[{index}/{len(combos)}] {name}: finished earlier, skipped")
        else:
            if model is None:
                log(f"loading {base_settings['model']} ...")
                model, tokenizer = modeling.load_model_and_tokenizer(
                    str(base_settings["model"]), base_settings["tokenizer"]
                )
                # Check every target setting before spending time on the first run.
                for value in grid["target_modules"]:
                    modeling.resolve_target_modules(model, [value])
            log(f"[{index}/{len(combos)}] {name}: training")
            summary = finetune.run_finetune(settings, model, tokenizer, log=log, progress=progress)
        rows.append({"name": name, "r": r, "alpha": alpha, "target_modules": targets, "summary": summary})
    write_results(out, rows, grid)
    return rows


# ------------------------------------------------------------------------------------------------ results


def _write_text_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


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
                f"{summary['final_train_loss']:.4f}",
                f"{summary['heldout_loss_before']:.4f}",
                f"{summary['heldout_loss_after']:.4f}",
                f"{summary['train_seconds']:.1f}",
                summary["steps"],
                _probe(summary, "plain"),
                _probe(summary, "instruction"),
            ]
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(table)
    _write_text_atomic(out / "results.csv", buffer.getvalue())

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
    _write_text_atomic(out / "results.md", "\n".join(lines) + "\n")


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
        temporary = path.with_name(f".{path.name}.tmp")
        figure.savefig(temporary, format="png", dpi=100)
        plt.close(figure)
        os.replace(temporary, path)
        written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    rows = run_sweep(args)
    print(f"{len(rows)} runs; results in {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
