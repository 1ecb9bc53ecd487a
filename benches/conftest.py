"""pytest-benchmark fixtures for the bench_*.py suites: `pytest benches/` (or `pytest benches/bench_encode.py`).

The suites need the shared corpora (/work/shared/data/corpora or $BPE_FAST_BENCH_DATA) and skip cleanly
without them; bpe_fast's own cases skip until the Rust extension is built. Sizes are small by default so the
suites finish in minutes on 2 cores; scale them with the environment:

    BPE_FAST_BENCH_MB        corpus size for encode/batch/decode/train suites (default 2)
    BPE_FAST_BENCH_ROUNDS    rounds per benchmark (default 3)
    BPE_FAST_BENCH_VOCABS    training vocab sizes, comma separated (default 8192,32768)
    BPE_FAST_BENCH_SCALING   sizes in MB for the scaling suite (default 1,2,4)
    BPE_FAST_BENCH_THREADS   threads for batch calls and multi-threaded training (default 2)
    BPE_FAST_BENCH_PATHOLOGICAL_MB  size of each pathological input (default 1)

benches/report.py is the side-by-side report with ratios and targets; these suites are for tracking one
operation over time (pytest-benchmark's --benchmark-save / --benchmark-compare).
"""

from __future__ import annotations

import os
from typing import Dict, List

import pytest

from benches import corpus, peers


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r}: expected an integer") from None
    if value < 1:
        raise pytest.UsageError(f"{name}={raw!r}: must be at least 1")
    return value


def _env_floats(name: str, default: str) -> List[float]:
    raw = os.environ.get(name, default)
    try:
        values = [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r}: expected comma-separated numbers") from None
    if not values or min(values) <= 0:
        raise pytest.UsageError(f"{name}={raw!r}: expected positive numbers")
    return values


BENCH_MB = float(os.environ.get("BPE_FAST_BENCH_MB", "2"))
ROUNDS = _env_int("BPE_FAST_BENCH_ROUNDS", 3)
THREADS = _env_int("BPE_FAST_BENCH_THREADS", 2)
TRAIN_VOCABS = [int(v) for v in _env_floats("BPE_FAST_BENCH_VOCABS", "8192,32768")]
SCALING_MB = _env_floats("BPE_FAST_BENCH_SCALING", "1,2,4")

# The rayon pools of in-process peers (HF tokenizers, rustbpe) are sized once, at first use: set it now,
# before any bench module imports them.
for _name, _value in peers.thread_env(THREADS).items():
    os.environ.setdefault(_name, _value)


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py files (pytest's default pattern is test_*.py) when a folder is given."""
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def bench_data():
    if corpus.data_dir() is None:
        pytest.skip("benchmark corpora not found (set BPE_FAST_BENCH_DATA to a folder with en/ and zh/)")
    return corpus.data_dir()


@pytest.fixture(scope="session")
def us_available() -> bool:
    return peers.bpe_fast_available()


def require_peer(name: str, available: Dict[str, peers.Encoder]) -> peers.Encoder:
    if name not in available:
        pytest.skip(f"{name} is not available (bpe_fast: build the extension with maturin develop --release)")
    return available[name]


@pytest.fixture(scope="session")
def gpt2_encoders(bench_data, us_available) -> Dict[str, peers.Encoder]:
    return peers.gpt2_encoders(include_us=us_available)


@pytest.fixture(scope="session")
def trained_encoders(bench_data, us_available) -> Dict[str, peers.Encoder]:
    """Every peer, rustbpe included, on one 8192 vocab trained by rustbpe on the benchmark corpus."""
    rust_tok, tokens = peers.train_rustbpe_vocab(corpus.corpus_file(BENCH_MB), 8192)
    tiktoken_file = corpus.cache_dir() / f"pytest_rustbpe_8192_{BENCH_MB:g}mb.tiktoken"
    return peers.ranks_encoders(tokens, tiktoken_file, rust_tok, include_us=us_available)


@pytest.fixture(scope="session")
def documents(bench_data):
    """{language: list of ~64 KB documents} of BPE_FAST_BENCH_MB each."""
    return {
        language: corpus.split_blocks(corpus.read_text(corpus.corpus_file(BENCH_MB, language)))
        for language in ("en", "zh", "mixed")
    }


def assert_identical(encoders: Dict[str, peers.Encoder], texts, peer: str) -> None:
    """Exactness gate before timing: the benchmarked peer must give the reference's ids on these texts."""
    chosen = {name: enc for name, enc in encoders.items() if name in (peer, "tiktoken")}
    problems = peers.check_identical(chosen, texts)
    assert not problems, f"ids differ, timing would compare different work: {problems}"
