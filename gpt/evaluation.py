"""What gpt.train measures besides the training loss: validation loss, held-out perplexity, HellaSwag and
text samples. Each runs on every rank over its share and all-reduces, so every rank gets the same number.

`lockstep=True` is for a sharded (FSDP) model, whose every forward is a collective (it all-gathers the
weights): every rank then makes the same number of forward calls, a rank whose share ran out running
one more on a stand-in input and discarding it. The result is the same as without it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ContextManager

import torch
import torch.distributed as dist

from gpt.data import ShardLoader


def _all_reduce(tensor: torch.Tensor, distributed: bool) -> None:
    if distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


@torch.no_grad()
def validation_loss(
    model, loader: ShardLoader, steps: int, device, autocast: Callable[[], ContextManager], distributed: bool
) -> float:
    """Mean loss over the first `steps` batches of `loader` on every rank (the same batches each time)."""
    model.eval()
    loader.reset()
    total = torch.zeros((), device=device)
    for _ in range(steps):
        x, y = loader.next_batch()
        with autocast():
            _, loss = model(x.to(device), y.to(device))
        total += loss.detach().float()
    _all_reduce(total, distributed)
    model.train()
    return total.item() / (steps * (dist.get_world_size() if distributed else 1))


def _calls(items: int, world: int, per_call: int, mine: int, lockstep: bool) -> int:
    """Forward calls this rank makes for its `mine` of `items` split over `world` ranks, `per_call` at a
    time: its own count, or in lockstep the busiest rank's."""
    share = -(-items // world) if lockstep else mine
    return -(-share // per_call)


@torch.no_grad()
def text_perplexity(
    model, tokens: torch.Tensor, seq_len: int, batch: int, device, autocast, rank, world, distributed,
    lockstep: bool = False,
) -> float:  # fmt: skip
    """exp(mean next-token NLL) over non-overlapping windows of the held-out text, split across ranks."""
    model.eval()
    n_windows = (tokens.numel() - 1) // seq_len
    nll_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    mine = list(range(rank, n_windows, world))
    for call in range(_calls(n_windows, world, batch, len(mine), lockstep)):
        windows = mine[call * batch : (call + 1) * batch]
        rows = [tokens[w * seq_len : w * seq_len + seq_len + 1] for w in windows or [0]]
        chunk = torch.stack(rows).to(device)
        with autocast():
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
        if not windows:
            continue  # the stand-in call: it only kept this rank in step with the others
        nll_sum += loss.double() * chunk[:, 1:].numel()
        count += chunk[:, 1:].numel()
    _all_reduce(nll_sum, distributed)
    _all_reduce(count, distributed)
    model.train()
    return math.exp(nll_sum.item() / max(count.item(), 1.0))


def hellaswag_accuracy(
    model, examples, tok, device, bf16: bool, rank, world, distributed, limit, lockstep: bool = False
) -> float:
    """HellaSwag acc_norm: gpt.hellaswag scores this rank's share of the examples; counts are all-reduced."""
    from gpt import hellaswag

    model.eval()
    autocast_dtype = torch.bfloat16 if bf16 else None
    if not lockstep:
        correct, total = hellaswag.evaluate(
            model, examples, tokenizer=tok, device=device, rank=rank, world_size=world,
            autocast_dtype=autocast_dtype, limit=limit,
        )  # fmt: skip
    else:
        # One example per call (gpt.hellaswag makes one forward per example), the same count on every rank.
        examples = examples[:limit] if limit is not None else examples
        mine = list(hellaswag.rank_indices(len(examples), rank, world))
        correct = total = 0
        for call in range(_calls(len(examples), world, 1, len(mine), lockstep=True)):
            index = mine[call] if call < len(mine) else None
            scored = hellaswag.evaluate(
                model, [examples[0 if index is None else index]], tokenizer=tok, device=device,
                autocast_dtype=autocast_dtype,
            )  # fmt: skip
            if index is not None:
                correct, total = correct + scored[0], total + scored[1]
    counts = torch.tensor([correct, total], device=device, dtype=torch.long)
    _all_reduce(counts, distributed)
    model.train()
    return counts[0].item() / max(counts[1].item(), 1)


@torch.no_grad()
def write_samples(
    model, tok: Any, prompt: str, count: int, new_tokens: int, top_k: int, seed: int, device
) -> list[str]:
    """`count` continuations of `prompt`, sampled with a generator seeded by `seed`."""
    model.eval()
    ids = tok.encode(prompt)
    idx = torch.tensor([ids] * count, dtype=torch.long, device=device)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    out = model.generate(idx, new_tokens, top_k=top_k, generator=generator)
    model.train()
    return [tok.decode(row.tolist()) for row in out]
