"""DDP and FSDP side by side on CPU (gloo): a minimal training loop, and its peak memory per rank.

    # one run: 2 ranks, 10 steps of the tiny-cpu shape, losses (and peak RSS per rank) as JSON
    torchrun --standalone --nproc_per_node 2 benches/fsdp_cpu.py worker --mode fsdp --out run.json
    # the peak-memory table: DDP, FSDP and FSDP + activation checkpointing, 2 ranks each
    python benches/fsdp_cpu.py memory [--preset tiny-cpu] [--steps 10]

The worker is what tests/test_gpt_fsdp.py launches: gpt.model.GPT, the optimizer of
`GPT.configure_optimizers` and gpt.train's learning-rate schedule, gradient accumulation and clipping,
on random token batches that are the same for every mode (so DDP and FSDP must give the same losses).
It stands in for `gpt.train --fsdp` until the trainer has it. fp32 throughout (CPU).

Peak memory is VmHWM from /proc/self/status (the process's own high-water mark; getrusage's ru_maxrss
would carry the torchrun agent's over exec). The baseline is the resident size after imports, before
the model is built, so peak - baseline is what training added. `memory` launches the workers with
MALLOC_MMAP_THRESHOLD_=65536 (glibc), so that freed tensors leave the resident set. Every rank builds the whole fp32 model
before sharding it (as gpt.train will), so the peak includes one full model under FSDP too; the
resident size after setup and after the steps (taken after malloc_trim, so that memory glibc keeps
but no tensor uses is not counted) shows what each rank holds while it trains.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    # Launched by path (torchrun benches/fsdp_cpu.py): put the repository root on sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
MODES = ("ddp", "fsdp", "fsdp-ac")


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def held_rss_mib() -> float | None:
    """The resident size once glibc has returned the free memory it keeps (malloc_trim; Linux/glibc)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------- worker


def batches(cfg, world: int, rank: int, step: int, grad_accum: int, vocab: int):
    """This rank's micro-batches of global step `step`: a seeded function of the step alone, so every
    mode and every world size sees the same global batch, split the way gpt.data splits it (rank r takes
    rows r*B .. r*B+B-1 of each micro-step). Learnable: each token is the previous one plus 1..4 (mod
    vocab), so the loss falls from ln(vocab) towards ln 4 and the runs compare a moving curve."""
    import torch

    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    rows = cfg.batch_size * world
    start = torch.randint(0, vocab, (grad_accum, rows, 1), generator=generator)
    jumps = torch.randint(1, 5, (grad_accum, rows, cfg.seq_len), generator=generator)
    tokens = torch.cat([start, start + jumps.cumsum(-1)], dim=-1) % vocab
    mine = tokens[:, rank * cfg.batch_size : (rank + 1) * cfg.batch_size]
    return [(m[:, :-1], m[:, 1:]) for m in mine]


def build(cfg, vocab: int, mode: str, seed: int):
    import torch

    from gpt.fsdp import FSDPOptions, shard_model
    from gpt.model import GPT, GPTConfig

    torch.manual_seed(seed)
    config = GPTConfig(
        block_size=cfg.seq_len, vocab_size=vocab, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd
    )
    raw = GPT(config)
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(raw)
    else:
        model = shard_model(raw, FSDPOptions(activation_checkpointing=mode == "fsdp-ac"))
    optimizer = raw.configure_optimizers(
        weight_decay=cfg.weight_decay,
        learning_rate=cfg.max_lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        device_type="cpu",
    )
    return raw, model, optimizer


def train_step(cfg, model, optimizer, micro_batches, step: int) -> tuple[float, float]:
    """One optimizer step as gpt.train takes it; returns (mean loss over ranks, pre-clip grad norm)."""
    import torch
    import torch.distributed as dist

    from gpt.fsdp import clip_grad_norm, gradient_sync
    from gpt.train import lr_at

    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros(())
    for i, (x, y) in enumerate(micro_batches):
        with gradient_sync(model, enabled=i == len(micro_batches) - 1):
            _, loss = model(x, y)
            (loss / len(micro_batches)).backward()
        loss_sum += loss.detach()
    loss_mean = loss_sum / len(micro_batches)
    dist.all_reduce(loss_mean)
    loss_mean /= dist.get_world_size()
    norm = clip_grad_norm(model, cfg.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    optimizer.step()
    return loss_mean.item(), norm.item()


def cmd_worker(args) -> int:
    import torch
    import torch.distributed as dist

    from gpt.config import TrainConfig, load_preset
    from gpt.fsdp import full_model_state_dict, load_sharded, save_sharded

    torch.set_num_threads(args.threads)
    baseline = _status_mib("VmRSS")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = TrainConfig(**load_preset(args.preset))
    vocab = args.vocab_size or cfg.vocab_size or 2048
    if args.batch_size or args.seq_len:
        cfg.batch_size = args.batch_size or cfg.batch_size
        cfg.seq_len = args.seq_len or cfg.seq_len
        cfg.total_batch_size = cfg.batch_size * cfg.seq_len * world
    if args.total_batch_size:
        cfg.total_batch_size = args.total_batch_size
    grad_accum, rest = divmod(cfg.total_batch_size, cfg.batch_size * cfg.seq_len * world)
    if rest or grad_accum < 1:
        raise ValueError(f"total batch {cfg.total_batch_size} is not a multiple of B*T*world")
    resume_at = args.resume_at if args.mode != "ddp" else None
    if resume_at is not None and not 0 < resume_at < args.steps:
        raise ValueError(f"--resume-at must be between 1 and --steps - 1, got {resume_at}")

    raw, model, optimizer = build(cfg, vocab, args.mode, cfg.seed)
    after_setup = held_rss_mib()
    losses, norms = [], []
    started = time.perf_counter()
    for step in range(args.steps):
        if step == resume_at:
            # Save, then continue in a model and optimizer built from another seed: the next losses are
            # those of an uninterrupted run only if the load restored every parameter and moment.
            save_sharded(args.checkpoint, model, optimizer)
            dist.barrier()
            raw, model, optimizer = build(cfg, vocab, args.mode, cfg.seed + 1)
            load_sharded(args.checkpoint, model, optimizer)
        micro = batches(cfg, world, rank, step, grad_accum, vocab)
        loss, norm = train_step(cfg, model, optimizer, micro, step)
        losses.append(loss)
        norms.append(norm)
    seconds = time.perf_counter() - started
    after_steps, peak = held_rss_mib(), peak_rss_mib()  # before the full state dict is gathered
    if args.checkpoint and resume_at is None and args.mode != "ddp":
        save_sharded(args.checkpoint, model, optimizer)
    full = full_model_state_dict(model) if args.mode != "ddp" else raw.state_dict()
    # What this rank holds: all of every parameter under DDP, its shard under FSDP.
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    peaks = [None] * world
    mine = {
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak,
        "after_setup_rss_mib": after_setup,
        "after_steps_rss_mib": after_steps,
        "local_params": local,
    }
    dist.all_gather_object(peaks, mine)
    if rank == 0:
        from bpe_fast.files import atomic_path, atomic_write_json

        record = {
            "mode": args.mode,
            "world_size": world,
            "preset": args.preset,
            "vocab_size": vocab,
            "grad_accum": grad_accum,
            "params": sum(p.numel() for p in raw.parameters()),
            "losses": losses,
            "grad_norms": norms,
            "seconds": seconds,
            "ranks": peaks,
            "torch": torch.__version__,
        }
        if args.state:
            with atomic_path(args.state) as temp_name:
                torch.save({k: v.detach().clone() for k, v in full.items()}, temp_name)
        atomic_write_json(args.out, record)
    dist.destroy_process_group()
    return 0


# ---------------------------------------------------------------------------------------------- memory


def run_worker(mode: str, out: Path, extra: list[str], nproc: int = 2, timeout: float = 600):
    """Launches the worker under torchrun (standalone, `nproc` gloo ranks); returns its JSON record."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    # glibc serves allocations of 64 KiB and more with mmap, so a freed tensor leaves the resident set at
    # once and VmHWM follows the live tensors, not what the allocator keeps cached (which at the default,
    # adaptive threshold made FSDP's peak look like DDP's).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        str(REPO / "benches" / "fsdp_cpu.py"), "worker", "--mode", mode, "--out", str(out), *extra,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} worker failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return json.loads(out.read_text())


def cmd_memory(args) -> int:
    extra = ["--preset", args.preset, "--steps", str(args.steps), "--threads", str(args.threads)]
    for flag in ("vocab_size", "batch_size", "seq_len"):
        if getattr(args, flag):
            extra += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    lines = [
        "| mode | ranks | params | steps | s | peak RSS MiB per rank | held after setup | held after steps |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]

    def per_rank(record, key):
        return " / ".join(f"{r[key] - r['baseline_rss_mib']:.0f}" for r in record["ranks"])

    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            record = run_worker(mode, Path(tmp) / f"{mode}.json", extra, nproc=args.nproc)
            lines.append(
                f"| {mode} | {record['world_size']} | {record['params'] / 1e6:.2f}M | {args.steps} | "
                f"{record['seconds']:.1f} | {per_rank(record, 'peak_rss_mib')} | "
                f"{per_rank(record, 'after_setup_rss_mib')} | {per_rank(record, 'after_steps_rss_mib')} |"
            )
            print(f"{mode}: final loss {record['losses'][-1]:.4f}", file=sys.stderr, flush=True)
    baseline = record["ranks"][0]["baseline_rss_mib"]
    lines.append(
        f"\nMiB per rank (rank 0 / rank 1) above the baseline after imports ({baseline:.0f} MiB); held: "
        "resident after malloc_trim."
    )
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="one run under torchrun (gloo); rank 0 writes --out")
    worker.add_argument(
        "--mode", choices=MODES, required=True, help="ddp, fsdp, or fsdp with activation checkpointing"
    )
    worker.add_argument(
        "--out", type=Path, required=True, help="JSON record: losses, grad norms, peak RSS per rank"
    )
    worker.add_argument(
        "--preset", default="tiny-cpu", help="gpt.train preset giving the shape and optimizer settings"
    )
    worker.add_argument("--vocab-size", type=int, help="vocabulary (default: the preset's, else 2048)")
    worker.add_argument("--batch-size", type=int, help="micro-batch B (default: the preset's)")
    worker.add_argument("--seq-len", type=int, help="sequence length T (default: the preset's)")
    worker.add_argument(
        "--total-batch-size",
        type=int,
        help="tokens per step (default: the preset's; B*T*world when --batch-size/--seq-len are given)",
    )
    worker.add_argument("--steps", type=int, default=10, help="optimizer steps")
    worker.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    worker.add_argument(
        "--checkpoint",
        type=Path,
        help="FSDP: write a sharded checkpoint here (at the end, or at --resume-at)",
    )
    worker.add_argument(
        "--resume-at", type=int, help="FSDP: at this step save, rebuild from another seed, load, continue"
    )
    worker.add_argument(
        "--state", type=Path, help="rank 0 writes the final full (unsharded) state dict here (torch.save)"
    )
    memory = sub.add_parser("memory", help="peak RSS per rank for each mode (a markdown table)")
    memory.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to measure")
    memory.add_argument("--preset", default="tiny-cpu", help="gpt.train preset")
    memory.add_argument("--vocab-size", type=int, help="vocabulary (default: the preset's, else 2048)")
    memory.add_argument("--batch-size", type=int, help="micro-batch B (default: the preset's)")
    memory.add_argument("--seq-len", type=int, help="sequence length T (default: the preset's)")
    memory.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    memory.add_argument("--nproc", type=int, default=2, help="ranks")
    memory.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    args = parser.parse_args(argv)
    if args.command == "worker" and args.resume_at is not None and args.checkpoint is None:
        parser.error("--resume-at needs --checkpoint")
    return {"worker": cmd_worker, "memory": cmd_memory}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
