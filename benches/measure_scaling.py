"""Measuring time vs input size: one-thread encoding (GPT-2) and training, one run per point.

Encoding runs in this process (bpe_fast and tiktoken, a loop of one call per ~64 KB document); training
in fresh subprocesses (benches/train_worker.py). "Time per MB at the largest size / at the smallest" is
1 for perfectly linear behaviour.
"""

from __future__ import annotations

from typing import List, Sequence

from benches import corpus, measure, peers
from benches.measure_encode import log


def measure_scaling(
    sizes_mb: Sequence[float],
    vocab: int,
    threads: int,
    timeout_s: float,
    trainer_names: Sequence[str] = ("bpe_fast", "rustbpe"),
) -> List[dict]:
    rows: List[dict] = []
    encoders = {
        name: enc for name, enc in peers.gpt2_encoders(threads=1).items() if name in ("bpe_fast", "tiktoken")
    }
    for size in sizes_mb:
        path = corpus.corpus_file(size)
        blocks = corpus.split_blocks(corpus.read_text(path))
        log(f"scaling encode {size:g} MB")
        jobs = {name: (lambda e=enc, b=blocks: [e.encode(t) for t in b]) for name, enc in encoders.items()}
        for name, timing in measure.time_interleaved(jobs, 1, path.stat().st_size).items():
            rows.append(
                {
                    "task": "encode",
                    "size_mb": size,
                    "peer": name,
                    "status": "ok" if timing.ok else f"failed: {timing.error}",
                    "mb_per_s": timing.mb_per_s if timing.ok else None,
                }
            )
        for name in trainer_names:
            log(f"scaling train {name} {size:g} MB")
            outcome = measure.run_training(name, path, vocab, threads, timeout_s)
            if "seconds" in outcome:
                rows.append(
                    {
                        "task": "train",
                        "size_mb": size,
                        "peer": name,
                        "status": "ok",
                        "mb_per_s": path.stat().st_size / outcome["seconds"] / 1e6,
                    }
                )
            else:
                reason = outcome.get("unavailable") or outcome.get("error")
                rows.append(
                    {
                        "task": "train",
                        "size_mb": size,
                        "peer": name,
                        "status": f"failed: {reason}",
                        "mb_per_s": None,
                    }
                )
    return rows
