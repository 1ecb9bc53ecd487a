"""Inputs that are one giant pre-tokenizer chunk (a repeated character, spaces, `^`, one long word).

Each peer is timed on each input and on normal English text of the same size; a linear-time tokenizer
keeps the two within a small factor (the target for bpe_fast: 3x). Size: BPE_FAST_BENCH_PATHOLOGICAL_MB
(default 1).
"""

from __future__ import annotations

import os

import pytest

from benches import corpus, measure, trainers
from benches.conftest import ROUNDS, THREADS, assert_identical, require_peer

SIZE = int(float(os.environ.get("BPE_FAST_BENCH_PATHOLOGICAL_MB", "1")) * corpus.MB)
# A peer that is super-linear on these inputs may take many minutes; past this it is skipped as such.
TRAIN_TIMEOUT_S = 120
KINDS = ["normal_en", "one_char", "spaces", "carets", "one_word"]


@pytest.fixture(scope="module")
def inputs(bench_data):
    texts = corpus.pathological_texts(SIZE)
    texts["normal_en"] = corpus.read_text(corpus.corpus_file(SIZE / corpus.MB, "en"))
    return texts


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers"])
def test_encode_pathological(benchmark, gpt2_encoders, inputs, peer, kind):
    encoder = require_peer(peer, gpt2_encoders)
    text = inputs[kind]
    assert_identical(gpt2_encoders, [text], peer)
    benchmark.group = f"encode pathological {SIZE / corpus.MB:g} MB {kind}"
    benchmark.extra_info["bytes"] = len(text.encode("utf-8"))
    benchmark.pedantic(lambda: encoder.encode(text), rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("peer", [p for p in trainers.TRAINERS if p != "bpe_fast_texts"])
def test_train_pathological(benchmark, inputs, us_available, peer, kind):
    if peer.startswith("bpe_fast") and not us_available:
        pytest.skip("bpe_fast extension not built")
    path = corpus.cache_dir() / f"pytest_pathological_{kind}_{SIZE}.txt"
    if not path.exists():
        path.write_text(inputs[kind], encoding="utf-8")

    def run_once():
        outcome = measure.run_training(peer, path, 8192, THREADS, timeout_s=TRAIN_TIMEOUT_S)
        if "unavailable" in outcome:
            pytest.skip(f"{peer} is not available: {outcome['unavailable']}")
        if outcome.get("error", "").startswith("timed out"):
            pytest.skip(f"{peer} did not finish {kind} in {TRAIN_TIMEOUT_S} s (super-linear on this input)")
        assert "error" not in outcome, f"{peer} training failed on {kind}: {outcome['error']}"
        benchmark.extra_info["train_seconds"] = outcome["seconds"]

    benchmark.group = f"train pathological {SIZE / corpus.MB:g} MB {kind} (vocab 8192)"
    benchmark.extra_info["bytes"] = path.stat().st_size
    benchmark.pedantic(run_once, rounds=1, iterations=1)
