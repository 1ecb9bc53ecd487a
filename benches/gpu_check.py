"""Helper of benches/gpu_check.sh: synthetic learnable shards, and a summary/verdict of the run's log.

    python benches/gpu_check.py env
    python benches/gpu_check.py shards DIR [--train-tokens N]
    python benches/gpu_check.py summary OUT/log.jsonl

Needs only numpy and torch (no Rust extension, no network). The synthetic stream walks a fixed random
set of 1,000 GPT-2 ids: next = ids[(position + d) % 1000] with d uniform in 1..4, so the best possible
loss is ln 4 = 1.386 and a working trainer drops far below the initial ~10.9 within ~100 steps.
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

import numpy as np  # noqa: E402

GPT2_VOCAB = 50257
ALPHABET = 1000


def synthetic_stream(n: int, seed: int) -> np.ndarray:
    ids = np.random.default_rng(12345).choice(GPT2_VOCAB, ALPHABET, replace=False)
    steps = np.random.default_rng(seed).integers(1, 5, n)
    return ids[np.cumsum(steps) % ALPHABET]


def cmd_env(_args) -> int:
    import torch

    print(
        f"python {sys.version.split()[0]} | torch {torch.__version__} | CUDA {torch.version.cuda}", flush=True
    )
    if not torch.cuda.is_available():
        print("FAIL: torch.cuda.is_available() is False", flush=True)
        return 1
    props = torch.cuda.get_device_properties(0)
    print(f"GPU {props.name} | {props.total_memory / 2**30:.0f} GiB | bf16 {torch.cuda.is_bf16_supported()}")
    return 0


def cmd_shards(args) -> int:
    from gpt.shards import write_shard

    out = Path(args.dir)
    write_shard(out / "val_000000.bin", synthetic_stream(args.val_tokens, seed=0), vocab_size=GPT2_VOCAB)
    per_shard = -(-args.train_tokens // args.train_shards)
    for i in range(args.train_shards):
        write_shard(
            out / f"train_{i + 1:06d}.bin", synthetic_stream(per_shard, seed=i + 1), vocab_size=GPT2_VOCAB
        )
    print(f"wrote {args.train_shards} train shards x {per_shard:,} tokens + 1 val shard to {out}", flush=True)
    return 0


def cmd_summary(args) -> int:
    records = [json.loads(line) for line in Path(args.log).read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r and "error" not in r]
    if not steps:
        print("FAIL: no training steps logged", flush=True)
        return 1
    # The first steps include torch.compile and CUDA warm-up: timings come from the rest.
    timed = [r for r in steps if r["step"] >= args.skip] or steps
    tokens_per_sec = statistics.median(r["tokens_per_sec"] for r in timed)
    mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    first, last = steps[0]["loss"], steps[-1]["loss"]
    print(f"steps logged        {len(steps)} (timings from step {args.skip} on: {len(timed)} steps)")
    print(f"tokens/s (median)   {tokens_per_sec:,.0f}")
    print(f"step time (median)  {statistics.median(r['dt_ms'] for r in timed):.0f} ms")
    print(f"MFU (median)        {'n/a' if not mfus else f'{100 * statistics.median(mfus):.1f}%'}")
    print(f"train loss          {first:.4f} -> {last:.4f}")
    print(f"val loss            {' '.join(f'{s}:{v:.4f}' for s, v in val) or 'n/a'}")
    problems = []
    if any("error" in r for r in records):
        problems.append("a step reported a non-finite loss")
    if not all(math.isfinite(r["loss"]) for r in steps):
        problems.append("non-finite training loss")
    if not last < first - 2.0:
        problems.append(f"loss did not fall by 2 nats ({first:.3f} -> {last:.3f})")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("gpu check: " + ("FAILED" if problems else "OK"), flush=True)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env", help="print Python/torch/CUDA/GPU versions; fail without CUDA")
    shards = sub.add_parser("shards", help="write synthetic learnable uint16 shards")
    shards.add_argument("dir", help="output folder")
    shards.add_argument("--train-tokens", type=int, default=16_000_000, help="train tokens in total")
    shards.add_argument("--train-shards", type=int, default=2, help="number of train shards")
    shards.add_argument("--val-tokens", type=int, default=2_000_000, help="val tokens")
    summary = sub.add_parser("summary", help="print tokens/s, MFU and losses; exit 1 if the run looks wrong")
    summary.add_argument("log", help="the run's log.jsonl")
    summary.add_argument("--skip", type=int, default=10, help="ignore the first N steps for timings")
    args = parser.parse_args(argv)
    return {"env": cmd_env, "shards": cmd_shards, "summary": cmd_summary}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
