"""Training, one fresh subprocess per round (thread count pinned by env; peak RSS per peer).

pytest-benchmark times the whole subprocess (start-up included, the same ~0.3 s for every peer); the train
call alone and the worker's peak RSS are in each result's extra_info. benches/report.py tabulates the
train-call times.
"""

from __future__ import annotations

import pytest

from benches import corpus, measure, trainers
from benches.conftest import BENCH_MB, ROUNDS, THREADS, TRAIN_VOCABS


@pytest.mark.parametrize("threads", sorted({1, THREADS}))
@pytest.mark.parametrize("vocab", TRAIN_VOCABS)
@pytest.mark.parametrize("peer", trainers.TRAINERS)
def test_train(benchmark, bench_data, us_available, peer, vocab, threads):
    if peer.startswith("bpe_fast") and not us_available:
        pytest.skip("bpe_fast extension not built")
    path = corpus.corpus_file(BENCH_MB)
    outcomes = []

    def run_once():
        outcome = measure.run_training(peer, path, vocab, threads, timeout_s=900)
        if "unavailable" in outcome:
            pytest.skip(f"{peer} is not available: {outcome['unavailable']}")
        assert "error" not in outcome, f"{peer} training failed: {outcome['error']}"
        outcomes.append(outcome)

    benchmark.group = f"train {BENCH_MB:g} MB vocab {vocab} {threads} thread(s)"
    benchmark.pedantic(run_once, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["bytes"] = path.stat().st_size
    benchmark.extra_info["train_seconds_min"] = min(o["seconds"] for o in outcomes)
    benchmark.extra_info["peak_rss_mb_max"] = max(o["peak_rss_mb"] for o in outcomes)
    benchmark.extra_info["vocab_reached"] = outcomes[0]["vocab_size"]
