"""Many short strings (corpus lines of 30-80 bytes) in one encode_batch call: per-call overhead dominates."""

from __future__ import annotations

import pytest

from benches import corpus
from benches.conftest import ROUNDS, THREADS, assert_identical, require_peer


@pytest.fixture(scope="module")
def lines(bench_data):
    return corpus.short_lines(42_000)


@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers"])
def test_short_strings_batch_gpt2(benchmark, gpt2_encoders, lines, peer):
    encoder = require_peer(peer, gpt2_encoders)
    assert_identical(gpt2_encoders, lines[:2000], peer)
    benchmark.group = f"short strings batch gpt2 ({len(lines)} lines, {THREADS} threads)"
    benchmark.extra_info["bytes"] = sum(len(t.encode("utf-8")) for t in lines)
    benchmark.pedantic(lambda: encoder.encode_batch(lines, THREADS), rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers", "rustbpe"])
def test_short_strings_batch_trained_vocab(benchmark, trained_encoders, lines, peer):
    encoder = require_peer(peer, trained_encoders)
    assert_identical(trained_encoders, lines[:2000], peer)
    benchmark.group = f"short strings batch rustbpe-trained 8k ({len(lines)} lines, {THREADS} threads)"
    benchmark.extra_info["bytes"] = sum(len(t.encode("utf-8")) for t in lines)
    benchmark.pedantic(lambda: encoder.encode_batch(lines, THREADS), rounds=ROUNDS, iterations=1)
