"""GPT training throughput on CPU: tokens/s and MFU for the tiny-cpu model and for GPT-2 124M (B=1, T=256).

    python benches/gpt_cpu_bench.py [--steps 3] [--threads N] [--peak-flops F]

Each case times full training steps (forward, backward, AdamW step) on random tokens, after one
warm-up step. CPUs have no single published peak, so MFU is reported two ways: against --peak-flops
when given, and against this machine's measured fp32 matmul throughput (a 2048x2048 GEMM loop), which
is the most this model's dense layers could hope for here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from gpt.model import GPT, GPTConfig  # noqa: E402

CASES = {
    # name: (model config, B, T): the tiny-cpu preset's model with a 2,048-token trained vocab (as the
    # preset is meant to be used), the same with GPT-2's vocab, and GPT-2 124M at a CPU-sized batch.
    "tiny-cpu": (dict(n_layer=4, n_head=4, n_embd=128, vocab_size=2048, real_vocab_size=2048), 4, 128),
    "tiny-gpt2v": (dict(n_layer=4, n_head=4, n_embd=128, vocab_size=50304, real_vocab_size=50257), 4, 128),
    "gpt2-124m": (dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50304, real_vocab_size=50257), 1, 256),
}


def matmul_flops(seconds: float = 2.0, n: int = 2048) -> float:
    """Measured fp32 GEMM FLOP/s: the practical ceiling of this CPU for dense layers."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def bench(config: dict, B: int, T: int, steps: int) -> tuple[float, float, float]:
    """(tokens/s, model FLOPs per token, parameters in millions) over `steps` timed training steps."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=T, **config))
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=6e-4, device_type="cpu")
    x = torch.randint(0, config["real_vocab_size"], (B, T))
    y = torch.randint(0, config["real_vocab_size"], (B, T))

    def step():
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()  # warm-up: allocations, optimizer state
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    return (
        B * T * steps / elapsed,
        float(model.flops_per_token(T)),
        model.num_params(non_embedding=False) / 1e6,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=3, help="timed training steps per case (after 1 warm-up)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--peak-flops", type=float, default=None, help="nominal peak FLOP/s of this CPU, for MFU"
    )
    parser.add_argument(
        "--cases", nargs="+", default=list(CASES), choices=list(CASES), help="which models to time"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gemm = matmul_flops()
    print(
        f"torch {torch.__version__} | {torch.get_num_threads()} threads | fp32 GEMM measured {gemm / 1e9:.1f} GFLOP/s"
    )
    header = f"{'case':<10} {'params':>8} {'B x T':>9} {'tokens/s':>10} {'GFLOP/s':>9} {'MFU vs GEMM':>12} {'MFU vs peak':>12}"
    print(header)
    print("-" * len(header))
    for name in args.cases:
        config, B, T = CASES[name]
        tokens_per_sec, flops_per_token, params = bench(config, B, T, args.steps)
        achieved = tokens_per_sec * flops_per_token
        vs_peak = f"{100 * achieved / args.peak_flops:.1f}%" if args.peak_flops else "n/a"
        print(
            f"{name:<10} {params:>7.1f}M {f'{B}x{T}':>9} {tokens_per_sec:>10,.0f} {achieved / 1e9:>9.2f} "
            f"{100 * achieved / gemm:>11.1f}% {vs_peak:>12}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
