"""Decoding one corpus's ids in one call (GPT-2 vocab); throughput counts decoded bytes."""

from __future__ import annotations

import pytest

from benches.conftest import ROUNDS, require_peer


@pytest.mark.parametrize("language", ["en", "zh"])
@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers"])
def test_decode_gpt2(benchmark, gpt2_encoders, documents, peer, language):
    decoder = require_peer(peer, gpt2_encoders)
    text = "".join(documents[language])
    ids = gpt2_encoders["tiktoken"].encode(text)
    assert decoder.decode_bytes(ids) == text.encode("utf-8"), f"{peer} does not decode tiktoken's ids exactly"
    benchmark.group = f"decode gpt2 {language}"
    benchmark.extra_info["bytes"] = len(text.encode("utf-8"))
    benchmark.pedantic(lambda: decoder.decode_bytes(ids), rounds=ROUNDS, iterations=1)
