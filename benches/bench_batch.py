"""Batch encoding: one encode_batch call over ~64 KB documents with BPE_FAST_BENCH_THREADS threads."""

from __future__ import annotations

import pytest

from benches.conftest import ROUNDS, THREADS, assert_identical, require_peer


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers"])
def test_encode_batch_gpt2(benchmark, gpt2_encoders, documents, peer, language):
    encoder = require_peer(peer, gpt2_encoders)
    texts = documents[language]
    assert_identical(gpt2_encoders, texts[:8], peer)
    assert encoder.encode_batch(texts[:8], THREADS) == [encoder.encode(t) for t in texts[:8]]
    benchmark.group = f"encode_batch gpt2 {language} {THREADS} threads"
    benchmark.extra_info["bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    benchmark.pedantic(lambda: encoder.encode_batch(texts, THREADS), rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers", "rustbpe"])
def test_encode_batch_trained_vocab(benchmark, trained_encoders, documents, peer):
    encoder = require_peer(peer, trained_encoders)
    texts = documents["mixed"]
    assert_identical(trained_encoders, texts[:8], peer)
    benchmark.group = f"encode_batch rustbpe-trained 8k vocab, mixed, {THREADS} threads"
    benchmark.extra_info["bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    benchmark.pedantic(lambda: encoder.encode_batch(texts, THREADS), rounds=ROUNDS, iterations=1)
