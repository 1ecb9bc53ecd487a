"""Time vs corpus size (BPE_FAST_BENCH_SCALING MB, default 1,2,4): encoding should scale linearly.

Compare the per-size results (extra_info bytes / time) across the group; benches/report.py plots them.
"""

from __future__ import annotations

import pytest

from benches import corpus
from benches.conftest import SCALING_MB, require_peer


@pytest.mark.parametrize("size_mb", SCALING_MB)
@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers"])
def test_encode_scaling(benchmark, gpt2_encoders, peer, size_mb):
    encoder = require_peer(peer, gpt2_encoders)
    path = corpus.corpus_file(size_mb)
    texts = corpus.split_blocks(corpus.read_text(path))
    benchmark.group = f"encode scaling ({peer})"
    benchmark.extra_info["bytes"] = path.stat().st_size
    benchmark.pedantic(lambda: [encoder.encode(t) for t in texts], rounds=1, iterations=1)
