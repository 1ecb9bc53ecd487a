"""Memory planning for gpt.train: what one rank holds for a preset under DDP and under FSDP.

    python -m gpt.memory                          # the markdown table for docs/RESULTS.md
    python -m gpt.memory --ranks 1 8 64 --gpu-gib 79 --preset gpt2-1558m

The arithmetic (every term is per rank, in bytes; N parameters, R ranks, B micro-batch, T sequence
length, d width, L layers, V padded vocabulary):

Training state. The trainer keeps the parameters in fp32 and trains in bf16 *autocast*: there is no
separate fp32 master copy, the fp32 parameters are the master weights, and autocast makes bf16 copies
of the matmul weights on the fly. So per parameter:
    parameters 4, gradients 4, AdamW exp_avg 4 + exp_avg_sq 4                     = 16 bytes
    DDP (replicated):  16 N on every rank, plus, with bf16 autocast, the bf16 weight copies saved for
                       backward (2 N). DDP's all-reduce buckets add nothing: gpt.train passes
                       gradient_as_bucket_view=True, so the gradients live in the buckets.
    FSDP (sharded):    16 N / R, plus the working set of unsharded tensors: the block being computed
                       and the one prefetched (2 blocks), each gathered in the compute dtype (2 bytes/param
                       in bf16) with its unsharded gradient (2 bytes) and the fp32 copy reduced (4 bytes),
                       and the root group (embeddings, final LayerNorm) that stays gathered from forward to
                       backward.

Activations (eager PyTorch, no dropout, bf16 autocast: matmul inputs and outputs in bf16, the residual
stream and LayerNorm inputs in fp32; see `block_activation_bytes` for the tensor-by-tensor count):
    per block           36 B T d   (64 B T d in fp32)
    embeddings, ln_f     6 B T d   (8 in fp32)
    loss                 4 B T V saved (fp32 log-softmax) + 8 B T V more at its backward (the
                         logits forward returns are dropped before backward: gpt.train keeps the loss only)
    activation checkpointing keeps only each block's fp32 input (4 B T d per block) and recomputes one
    block at a time in backward (36 B T d once).
torch.compile (the GPT-2 presets turn it on) fuses much of this, notably the loss, so measured peaks
are usually lower; CUDA context and allocator fragmentation add ~1-3 GiB. Plan with ~10% headroom.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

GIB = 2**30
BYTES_PER_PARAM_STATE = {"parameters": 4, "gradients": 4, "optimizer": 8}  # fp32 params, grads, AdamW m + v
AUTOCAST_COPY_BYTES = 2  # bf16 copy of each matmul weight, saved by autograd for backward
FSDP_PREFETCHED_BLOCKS = 2  # the block being computed and the next one, gathered ahead
DEFAULT_PRESETS = ("gpt2-124m", "gpt2-350m", "gpt2-774m", "gpt2-1558m")
DEFAULT_RANKS = (1, 8, 64)
H100_GIB = 79.1  # what torch.cuda reports for an 80 GB H100 (81,559 MiB)


@dataclass(frozen=True)
class Shape:
    """What the memory depends on: the model's shape and the per-rank micro-batch."""

    name: str
    n_layer: int
    n_embd: int
    vocab_size: int  # padded rows, as allocated
    seq_len: int
    batch_size: int  # micro-batch B per rank
    total_batch_size: int  # tokens per optimizer step

    @classmethod
    def from_preset(cls, name: str) -> Shape:
        from gpt.config import TrainConfig, load_preset

        cfg = TrainConfig(**load_preset(name))
        return cls(
            name=name,
            n_layer=cfg.n_layer,
            n_embd=cfg.n_embd,
            vocab_size=cfg.vocab_size or 50304,
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            total_batch_size=cfg.total_batch_size,
        )

    def micro_batch(self, ranks: int) -> int:
        """The preset's B, lowered when R ranks of B x T tokens would overshoot one optimizer step."""
        return max(1, min(self.batch_size, self.total_batch_size // (self.seq_len * ranks)))


def block_parameters(n_embd: int) -> int:
    """One transformer block: c_attn (d x 3d + 3d), c_proj (d x d + d), c_fc (d x 4d + 4d), c_proj
    (4d x d + d), two LayerNorms (2d each) = 12 d^2 + 13 d."""
    return 12 * n_embd * n_embd + 13 * n_embd


def root_parameters(shape: Shape) -> int:
    """What is not in a block: token embedding (= the tied LM head), position embedding, ln_f."""
    return shape.vocab_size * shape.n_embd + shape.seq_len * shape.n_embd + 2 * shape.n_embd


def parameter_count(shape: Shape) -> int:
    """gpt.model.GPT's parameter count (the tied head counted once), with the padded vocabulary and
    block_size = seq_len."""
    return shape.n_layer * block_parameters(shape.n_embd) + root_parameters(shape)


def block_activation_bytes(tokens: int, n_embd: int, bf16: bool = True) -> int:
    """Bytes one block keeps for backward for `tokens` = B*T positions.

    bf16 autocast, per position, in units of d (bytes): attention: LayerNorm input (fp32, 4), c_attn
    input (bf16 cast, 2), q/k/v (one 3d bf16 tensor, 6), attention output (2; SDPA returns it in
    (B, T, heads, head_dim) memory order, so the `.contiguous()` before c_proj copies nothing and c_proj
    saves the same tensor); MLP: LayerNorm input (4), c_fc input (2), GELU input (4d, 8), GELU output
    (4d, 8): 36. In fp32 everything is 4 bytes: 4+4+12+4 + 4+4+16+16 = 64. Flash / memory-efficient
    attention keeps no T x T matrix, only a logsumexp per head and position (and LayerNorm a mean and
    rstd per position), left out here. tests/test_gpt_memory.py counts what autograd saves and checks this.
    """
    return (36 if bf16 else 64) * tokens * n_embd


def activation_bytes(shape: Shape, batch: int, checkpointing: bool, bf16: bool = True) -> int:
    tokens = batch * shape.seq_len
    d, vocab = shape.n_embd, shape.vocab_size
    outer = (6 if bf16 else 8) * tokens * d  # ln_f input (fp32) and the LM head's input
    # The loss: fp32 log-probabilities saved (4 V) plus, at their backward, their gradient and the
    # logits' gradient (8 V). The logits forward returns are not kept (gpt.train.train_step).
    loss = (4 + 8) * tokens * vocab
    one_block = block_activation_bytes(tokens, d, bf16)
    if checkpointing:
        blocks = shape.n_layer * 4 * tokens * d + one_block  # fp32 block inputs + one block recomputed
    else:
        blocks = shape.n_layer * one_block
    return blocks + outer + loss


@dataclass(frozen=True)
class RankMemory:
    preset: str
    strategy: str  # "ddp" or "fsdp"
    ranks: int
    micro_batch: int
    parameters: int
    gradients: int
    optimizer: int
    working: int  # DDP: autocast's bf16 weight copies; FSDP: the unsharded working set
    activations: int
    activations_checkpointed: int

    @property
    def state(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.working

    @property
    def total(self) -> int:
        return self.state + self.activations

    @property
    def total_checkpointed(self) -> int:
        return self.state + self.activations_checkpointed


def rank_memory(
    shape: Shape, strategy: str, ranks: int, bf16: bool = True, batch: int | None = None
) -> RankMemory:
    """Per-rank bytes for `strategy` ("ddp" replicated, "fsdp" sharded over `ranks`) at micro-batch
    `batch` (default: the preset's, see `Shape.micro_batch`)."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"strategy must be 'ddp' or 'fsdp', not {strategy!r}")
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    n = parameter_count(shape)
    if strategy == "ddp":
        shards = 1
        working = AUTOCAST_COPY_BYTES * n if bf16 else 0  # DDP's buckets hold the gradients themselves
    else:
        shards = ranks
        gathered = 2 if bf16 else 4  # compute dtype of the gathered parameters and of their gradients
        per_param = gathered + gathered + 4  # gathered parameter, its gradient, the fp32 copy reduced
        in_flight = FSDP_PREFETCHED_BLOCKS * block_parameters(shape.n_embd) + root_parameters(shape)
        working = per_param * in_flight
    batch = shape.micro_batch(ranks) if batch is None else batch
    return RankMemory(
        preset=shape.name,
        strategy=strategy,
        ranks=ranks,
        micro_batch=batch,
        parameters=-(-BYTES_PER_PARAM_STATE["parameters"] * n // shards),
        gradients=-(-BYTES_PER_PARAM_STATE["gradients"] * n // shards),
        optimizer=-(-BYTES_PER_PARAM_STATE["optimizer"] * n // shards),
        working=working,
        activations=activation_bytes(shape, batch, checkpointing=False, bf16=bf16),
        activations_checkpointed=activation_bytes(shape, batch, checkpointing=True, bf16=bf16),
    )


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def largest_micro_batch(
    shape: Shape, strategy: str, ranks: int, gpu_bytes: float, checkpointing: bool, bf16: bool = True
) -> int:
    """The largest power-of-two micro-batch whose estimate fits in `gpu_bytes` (0: not even B=1)."""
    best, batch = 0, 1
    while batch <= 4096:
        m = rank_memory(shape, strategy, ranks, bf16=bf16, batch=batch)
        if (m.total_checkpointed if checkpointing else m.total) > gpu_bytes:
            break
        best, batch = batch, batch * 2
    return best


def markdown_table(presets, ranks, gpu_gib: float, bf16: bool = True) -> str:
    """One row per preset x ranks x strategy; sizes in GiB per rank."""
    header = (
        "| preset | params | ranks | strategy | B | weights | grads | AdamW m+v | other | states | "
        f"activations | activations (AC) | total | total (AC) | largest B in {gpu_gib:g} GiB (AC) |\n"
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name in presets:
        shape = Shape.from_preset(name)
        n = parameter_count(shape)
        for r in ranks:
            for strategy in ("ddp", "fsdp"):
                m = rank_memory(shape, strategy, r, bf16=bf16)
                largest = [
                    largest_micro_batch(shape, strategy, r, gpu_gib * GIB, ac, bf16) for ac in (False, True)
                ]
                rows.append(
                    f"| {name} | {n / 1e6:.0f}M | {r} | {strategy.upper()} | {m.micro_batch} | "
                    f"{_gib(m.parameters)} | {_gib(m.gradients)} | {_gib(m.optimizer)} | {_gib(m.working)} | "
                    f"{_gib(m.state)} | {_gib(m.activations)} | {_gib(m.activations_checkpointed)} | "
                    f"{_gib(m.total)} | {_gib(m.total_checkpointed)} | {largest[0]} ({largest[1]}) |"
                )
    precision = "bf16 autocast" if bf16 else "fp32"
    legend = (
        f"\nGiB per rank, {precision}, eager PyTorch (torch.compile usually needs less). T = the preset's "
        "seq_len; B = the preset's micro-batch, lowered when ranks x B x T would exceed the preset's tokens "
        "per step. other: DDP: autocast's bf16 weight copies (DDP's all-reduce buckets are the gradients "
        "themselves, gradient_as_bucket_view); FSDP: the gathered blocks and root group. AC: activation "
        "checkpointing. "
        f"Largest B: the largest power of two whose total fits {gpu_gib:g} GiB (an 80 GB H100 reports "
        f"{H100_GIB} GiB; keep ~10% headroom for the CUDA context and fragmentation); 0: not even B=1.\n"
    )
    return header + "\n".join(rows) + "\n" + legend


def main(argv: list[str] | None = None) -> int:
    from bpe_fast.cliutil import ArgumentParser, positive_float, positive_int

    parser = ArgumentParser(
        prog="gpt.memory",
        description="Per-rank memory of gpt.train's presets under DDP and FSDP (a markdown table).",
    )
    parser.add_argument(
        "--preset",
        nargs="+",
        default=list(DEFAULT_PRESETS),
        help=f"presets to tabulate, names or .json paths (default: {' '.join(DEFAULT_PRESETS)})",
    )
    parser.add_argument(
        "--ranks",
        nargs="+",
        type=positive_int,
        default=list(DEFAULT_RANKS),
        help="world sizes (default: 1 8 64)",
    )
    parser.add_argument(
        "--gpu-gib",
        type=positive_float,
        default=H100_GIB,
        help=f"memory of one GPU in GiB, for the largest-micro-batch column (default {H100_GIB}: an 80 GB H100)",
    )
    parser.add_argument("--fp32", action="store_true", help="fp32 training instead of bf16 autocast")
    args = parser.parse_args(argv)
    for name in args.preset:
        try:
            Shape.from_preset(name)
        except ValueError as e:
            parser.error(str(e))
    sys.stdout.write(markdown_table(args.preset, args.ranks, args.gpu_gib, bf16=not args.fp32))
    return 0


if __name__ == "__main__":
    from bpe_fast.cliutil import run_main

    run_main(main, "python -m gpt.memory")
