"""Plot a training run's curves: `python -m gpt.plot OUT [-o loss.png]`.

Reads OUT/log.jsonl (written by gpt.train) and draws train and validation loss against the step, plus
HellaSwag accuracy and held-out perplexity in extra panels when the log has them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from bpe_fast.cliutil import ArgumentParser, UserError, run_main
from bpe_fast.files import atomic_path

PROG = "python -m gpt.plot"


def read_log(path: Path) -> list[dict]:
    """The records of a gpt.train log.jsonl. A last line without its newline is a write cut short (the
    run is still going, or was killed) and is left out; any other bad line is an error naming it."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path}:{number}: not a JSON line ({e}); is it a gpt.train log.jsonl?") from e
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise UserError(f"{path}:{number}: not a gpt.train log record (no integer 'step')")
        records.append(record)
    return records


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot(records: list[dict], out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    extra = [key for key in ("hellaswag", "ppl") if series(records, key)[0]]
    fig, axes = plt.subplots(1, 1 + len(extra), figsize=(6 * (1 + len(extra)), 4.5), squeeze=False)
    ax = axes[0][0]
    steps, loss = series(records, "loss")
    ax.plot(steps, loss, label="train loss", linewidth=0.8, alpha=0.8)
    val_steps, val = series(records, "val_loss")
    if val_steps:
        ax.plot(val_steps, val, "o-", label="val loss", markersize=3)
        ax.set_title(f"{title}: min val loss {min(val):.4f}")
    else:
        ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    labels = {"hellaswag": "HellaSwag acc_norm", "ppl": "held-out perplexity"}
    for ax, key in zip(axes[0][1:], extra):
        xs, ys = series(records, key)
        ax.plot(xs, ys, "o-", markersize=3, color="tab:green")
        ax.set_title(f"{labels[key]} (last {ys[-1]:.4g})")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    # Rendered to a temp file then renamed: a reader never sees half a PNG.
    out_png.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out_png, suffix=".png") as temp_name:
            fig.savefig(temp_name, dpi=120)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description="Plot loss curves from a gpt.train output folder.")
    parser.add_argument("out", help="the training output folder (holding log.jsonl), or a log.jsonl path")
    parser.add_argument("-o", "--output", help="PNG to write (default: OUT/loss.png)")
    args = parser.parse_args(argv)
    source = Path(args.out)
    log = source if source.is_file() else source / "log.jsonl"
    if not log.is_file():
        raise UserError(f"{log} does not exist (is {source} a gpt.train --out folder?)")
    records = read_log(log)
    if not any(r.get("loss") is not None for r in records):
        raise UserError(f"{log} has no logged steps yet: plot after a few training steps")
    out_png = Path(args.output) if args.output else log.parent / "loss.png"
    plot(records, out_png, log.parent.name)
    print(out_png)
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> None:
    """The command line: user errors as one line on stderr and exit status 2 (bpe_fast.cliutil)."""
    run_main(main, PROG, argv)


if __name__ == "__main__":
    cli()
