"""Driver of benches/gpu_scale.sh: the environment line, synthetic shards, one training run with its peak
memory per rank, and the summary (JSON + markdown) of all runs.

    python benches/gpu_scale.py env [--allow-cpu]
    python benches/gpu_scale.py shards DIR --train-tokens N
    torchrun --standalone --nproc_per_node 1 benches/gpu_scale.py train --peak-dir D -- <gpt.train args>
    python benches/gpu_scale.py summary WORK --modes plain fsdp [--out DIR] [--skip 5]

`train` runs gpt.train in this process (so it works with any flags gpt.train accepts, --fsdp included
once the trainer has it) and then writes this rank's peak memory to D/rank{R}.json: on CUDA
torch.cuda.max_memory_allocated / max_memory_reserved, on CPU the process's VmHWM (peak resident set)
and VmRSS at the end, with the resident size before gpt.train started (baseline_rss_bytes).
`summary` reads WORK/MODE/log.jsonl, WORK/MODE/peak/rank*.json and WORK/MODE/status for every mode and
prints, per mode, median tokens/s, MFU and step time (after --skip warm-up steps), peak memory and the
loss; with --out it also writes gpu_scale.json and gpu_scale.md there. It exits 1 when a mode failed, a
loss is non-finite or no mode's loss fell.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 2**30


def cmd_env(args) -> int:
    import torch

    line = f"python {sys.version.split()[0]} | torch {torch.__version__} | CUDA {torch.version.cuda}"
    print(line, flush=True)
    if not torch.cuda.is_available():
        if args.allow_cpu:
            print("no CUDA device: dry run on CPU", flush=True)
            return 0
        print("FAIL: torch.cuda.is_available() is False (DRY_RUN=1 runs on CPU)", flush=True)
        return 1
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        print(f"GPU {index}: {props.name} | {props.total_memory / GIB:.1f} GiB", flush=True)
    return 0


def cmd_shards(args) -> int:
    from benches.gpu_check import GPT2_VOCAB, synthetic_stream
    from gpt.shards import write_shard

    out = Path(args.dir)
    write_shard(out / "val_000000.bin", synthetic_stream(args.val_tokens, seed=0), vocab_size=GPT2_VOCAB)
    write_shard(out / "train_000001.bin", synthetic_stream(args.train_tokens, seed=1), vocab_size=GPT2_VOCAB)
    print(
        f"wrote {args.train_tokens:,} train + {args.val_tokens:,} val synthetic tokens to {out}", flush=True
    )
    return 0


def _status_bytes(field: str) -> int | None:
    """A size line of /proc/self/status (VmHWM: peak resident set, VmRSS: resident now), in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _held_rss_bytes() -> int | None:
    """The resident size once glibc has handed back the free memory it keeps (malloc_trim)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _status_bytes("VmRSS")


def peak_memory() -> dict:
    """This process's peak memory: the CUDA allocator's on a GPU, the resident set's on CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        device = torch.cuda.current_device()
        return {
            "device": torch.cuda.get_device_name(device),
            "max_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "max_reserved_bytes": torch.cuda.max_memory_reserved(device),
        }
    return {"device": "cpu", "peak_rss_bytes": _status_bytes("VmHWM"), "end_rss_bytes": _held_rss_bytes()}


def cmd_train(args) -> int:
    import os

    import torch.distributed.checkpoint  # noqa: F401  (what --fsdp imports, in the baseline for every mode)
    import torch.distributed.fsdp  # noqa: F401

    import gpt.train
    from bpe_fast.files import atomic_write_json

    baseline = _status_bytes("VmRSS")  # torch, FSDP/DCP and gpt.train imported, nothing built yet
    status = gpt.train.main(args.train_args)
    rank = int(os.environ.get("RANK", "0"))
    record = {"rank": rank, "status": status, "baseline_rss_bytes": baseline, **peak_memory()}
    Path(args.peak_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.peak_dir) / f"rank{rank}.json", record)
    return status


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_mode(folder: Path, skip: int) -> dict:
    """One mode's numbers from its folder (log.jsonl, peak/rank*.json, status)."""
    status_file = folder / "status"
    summary: dict = {"status": int(status_file.read_text().strip()) if status_file.is_file() else None}
    log = folder / "log.jsonl"
    records = []
    if log.is_file():
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r and "error" not in r]
    summary["steps"] = len(steps)
    summary["errors"] = sum(1 for r in records if "error" in r)
    if steps:
        timed = [r for r in steps if r["step"] >= skip] or steps
        summary.update(
            tokens_per_sec=_median(r["tokens_per_sec"] for r in timed),
            step_ms=_median(r["dt_ms"] for r in timed),
            mfu=_median(r.get("mfu") for r in timed),
            loss_first=steps[0]["loss"],
            loss_last=steps[-1]["loss"],
            losses=[r["loss"] for r in steps],
        )
    peaks = [json.loads(p.read_text()) for p in sorted((folder / "peak").glob("rank*.json"))]
    if peaks:
        summary["device"] = peaks[0]["device"]
        for key in ("max_allocated_bytes", "max_reserved_bytes", "peak_rss_bytes"):
            values = [p[key] for p in peaks if p.get(key) is not None]
            if values:
                summary[key.replace("_bytes", "_gib")] = max(values) / GIB
    return summary


def problems_of(summaries: dict[str, dict]) -> list[str]:
    problems = []
    for mode, s in summaries.items():
        if s["status"] != 0:
            problems.append(f"{mode}: exit status {s['status']}")
        if not s["steps"]:
            problems.append(f"{mode}: no training steps logged")
            continue
        if s["errors"] or not all(math.isfinite(x) for x in s["losses"]):
            problems.append(f"{mode}: non-finite loss")
    falling = [s for s in summaries.values() if s["steps"] and s["loss_last"] < s["loss_first"] - 0.5]
    if not falling:
        problems.append("no mode's loss fell by 0.5 nats")
    return problems


def markdown(summaries: dict[str, dict]) -> str:
    def fmt(value, pattern):
        return "n/a" if value is None else pattern.format(value)

    lines = [
        "| mode | status | steps | tokens/s | step ms | MFU | peak allocated GiB | peak reserved GiB | "
        "peak RSS GiB | loss first -> last |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, s in summaries.items():
        loss = "n/a" if not s["steps"] else f"{s['loss_first']:.3f} -> {s['loss_last']:.3f}"
        lines.append(
            f"| {mode} | {s['status']} | {s['steps']} | {fmt(s.get('tokens_per_sec'), '{:,.0f}')} | "
            f"{fmt(s.get('step_ms'), '{:.0f}')} | {fmt(s.get('mfu') and 100 * s['mfu'], '{:.1f}%')} | "
            f"{fmt(s.get('max_allocated_gib'), '{:.2f}')} | {fmt(s.get('max_reserved_gib'), '{:.2f}')} | "
            f"{fmt(s.get('peak_rss_gib'), '{:.2f}')} | {loss} |"
        )
    return "\n".join(lines) + "\n"


def cmd_summary(args) -> int:
    work = Path(args.work)
    summaries = {mode: summarize_mode(work / mode, args.skip) for mode in args.modes}
    plain = summaries.get("plain")
    if plain and plain["steps"]:
        for mode, s in summaries.items():
            if mode != "plain" and s["steps"]:
                pairs = list(zip(plain["losses"], s["losses"]))
                s["loss_max_abs_diff_vs_plain"] = max(abs(a - b) for a, b in pairs)
    problems = problems_of(summaries)
    table = markdown(summaries)
    print(table, end="")
    for mode, s in summaries.items():
        if "loss_max_abs_diff_vs_plain" in s:
            print(
                f"{mode}: largest loss difference from plain, step by step: {s['loss_max_abs_diff_vs_plain']:.4f}"
            )
    for problem in problems:
        print(f"FAIL: {problem}")
    print("gpu scale check: " + ("FAILED" if problems else "OK"), flush=True)
    if args.out:
        from bpe_fast.files import atomic_write_json, atomic_write_text

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "gpu_scale.json", {"modes": summaries, "problems": problems})
        atomic_write_text(out / "gpu_scale.md", table)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="print Python/torch/CUDA/GPU; fail without CUDA unless --allow-cpu")
    env.add_argument("--allow-cpu", action="store_true", help="a CPU-only machine is fine (dry run)")
    shards = sub.add_parser(
        "shards", help="synthetic learnable GPT-2-vocabulary shards (benches/gpu_check.py)"
    )
    shards.add_argument("dir", help="output folder")
    shards.add_argument("--train-tokens", type=int, required=True, help="train tokens")
    shards.add_argument("--val-tokens", type=int, default=1_000_000, help="val tokens")
    train = sub.add_parser("train", help="gpt.train in this process, then this rank's peak memory")
    train.add_argument("--peak-dir", required=True, help="folder for rank{R}.json")
    train.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then gpt.train's arguments")
    summary = sub.add_parser("summary", help="table and verdict over the modes' runs")
    summary.add_argument("work", help="folder holding one subfolder per mode")
    summary.add_argument("--modes", nargs="+", required=True, help="mode subfolders, in table order")
    summary.add_argument("--skip", type=int, default=5, help="leave the first N steps out of the timings")
    summary.add_argument("--out", help="also write gpu_scale.json and gpu_scale.md here")
    args = parser.parse_args(argv)
    if args.command == "train" and args.train_args[:1] == ["--"]:
        args.train_args = args.train_args[1:]
    return {"env": cmd_env, "shards": cmd_shards, "train": cmd_train, "summary": cmd_summary}[args.command](
        args
    )


if __name__ == "__main__":
    sys.exit(main())
