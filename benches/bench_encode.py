"""One-thread encoding: a loop of encode calls over ~64 KB documents (GPT-2 vocab; en, zh)."""

from __future__ import annotations

import pytest

from benches.conftest import ROUNDS, assert_identical, require_peer


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers"])
def test_encode_gpt2(benchmark, gpt2_encoders, documents, peer, language):
    encoder = require_peer(peer, gpt2_encoders)
    texts = documents[language]
    assert_identical(gpt2_encoders, texts, peer)
    benchmark.group = f"encode gpt2 {language} 1 thread"
    benchmark.extra_info["bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    benchmark.pedantic(lambda: [encoder.encode(t) for t in texts], rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers", "rustbpe"])
def test_encode_trained_vocab(benchmark, trained_encoders, documents, peer):
    encoder = require_peer(peer, trained_encoders)
    texts = documents["mixed"]
    assert_identical(trained_encoders, texts, peer)
    benchmark.group = "encode rustbpe-trained 8k vocab, mixed, 1 thread"
    benchmark.extra_info["bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    benchmark.pedantic(lambda: [encoder.encode(t) for t in texts], rounds=ROUNDS, iterations=1)
