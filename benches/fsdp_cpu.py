"""Peak memory per rank of `gpt.train` on CPU (gloo) under DDP, FSDP and FSDP + activation checkpointing.

    python benches/fsdp_cpu.py                               # tiny-cpu, vocab 2048, 2 ranks, 10 steps
    python benches/fsdp_cpu.py --vocab-size 50304 --modes ddp fsdp

Each mode is one `torchrun --standalone --nproc_per_node N` launch of gpt.train itself (through
benches/gpu_scale.py's `train`, which records each rank's memory after the run) on the same random
shards: `--preset PRESET --vocab-size V --max-steps S`, no validation, samples or TensorBoard, and the
checkpoint gpt.train always writes at the last step (whole files under DDP, each rank's shards under
FSDP). fp32 (CPU).

Memory is the peak resident set of each rank (VmHWM from /proc/self/status), as it is and minus the
resident size once torch, its FSDP and DCP modules and gpt.train are imported (the baseline, the same for
every mode): what training added, i.e. the model, optimizer, activations and checkpoint writing, and also
the process group's buffers and threads (gloo), which do not depend on the model. Workers run with MALLOC_MMAP_THRESHOLD_=65536
(glibc): allocations of 64 KiB and more are mmap'd, so a freed tensor leaves the resident set at once
and the peak follows live tensors rather than what the allocator keeps cached. Every rank builds the
whole fp32 model before sharding it, so under FSDP the peak includes one full copy of the weights.
Prints a markdown table; exits 1 if a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = {"ddp": [], "fsdp": ["--fsdp"], "fsdp-ac": ["--fsdp", "--activation-checkpointing"]}
MIB = 2**20


def write_shards(folder: Path, vocab: int, tokens: int) -> None:
    import numpy as np

    sys.path.insert(0, str(REPO))
    from gpt.shards import write_shard

    rng = np.random.default_rng(0)
    write_shard(folder / "train_000001.bin", rng.integers(0, vocab, tokens), vocab_size=vocab)


def run_mode(mode: str, args, shards: Path, work: Path) -> list[dict]:
    """One gpt.train launch; returns each rank's record (gpu_scale.py train's rank{R}.json)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "python"), str(REPO)])}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    peak_dir = work / mode / "peak"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
        str(REPO / "benches" / "gpu_scale.py"), "train", "--peak-dir", str(peak_dir), "--",
        "--preset", args.preset, "--vocab-size", str(args.vocab_size), "--max-steps", str(args.steps),
        "--data", str(shards), "--out", str(work / mode / "out"), "--device", "cpu", "--threads",
        str(args.threads), "--val-every", "0", "--sample-every", "0", "--no-tensorboard", *MODES[mode],
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"{mode} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    print(
        f"{mode}: {[line for line in result.stdout.splitlines() if line.startswith('step')][-1]}",
        file=sys.stderr,
    )
    return [json.loads(p.read_text()) for p in sorted(peak_dir.glob("rank*.json"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="what to run")
    parser.add_argument("--preset", default="tiny-cpu", help="gpt.train preset (default tiny-cpu)")
    parser.add_argument("--vocab-size", type=int, default=2048, help="vocabulary of the random shards")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run (default 10)")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    args = parser.parse_args(argv)
    rows = [
        "| mode | ranks | peak RSS MiB per rank | peak above the baseline MiB per rank |",
        "|---|---:|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from benches.gpu_scale import cmd_train  # noqa: F401  (fails early if the driver is missing)

        tokens = (args.steps + 2) * 1024 * 1024  # more than any preset's steps read
        write_shards(work / "shards", args.vocab_size, min(tokens, 4_000_000))
        baseline = None
        for mode in args.modes:
            ranks = run_mode(mode, args, work / "shards", work)
            baseline = ranks[0]["baseline_rss_bytes"]

            peak = " / ".join(f"{r['peak_rss_bytes'] / MIB:.0f}" for r in ranks)
            added = " / ".join(f"{(r['peak_rss_bytes'] - r['baseline_rss_bytes']) / MIB:.0f}" for r in ranks)
            rows.append(f"| {mode} | {len(ranks)} | {peak} | {added} |")
    print("\n".join(rows))
    print(
        f"\nBaseline: the resident size after imports (rank 0: {baseline / MIB:.0f} MiB). {args.preset}, vocab "
        f"{args.vocab_size}, {args.steps} steps, fp32, gloo; ranks listed 0 / 1 / ..."
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
