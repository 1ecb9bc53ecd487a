"""Shared test fixtures. Tests never read /work/shared: only data shipped in the repo."""

from __future__ import annotations

import os
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]

# Property tests draw BPE_FAST_HYPOTHESIS_EXAMPLES examples (default 200; CI may raise it for a deeper run).
# A test that needs another count scales this one with `examples(share)`, so the variable moves them all.
HYPOTHESIS_EXAMPLES = int(os.environ.get("BPE_FAST_HYPOTHESIS_EXAMPLES", "200"))
if HYPOTHESIS_EXAMPLES < 1:
    raise ValueError(f"BPE_FAST_HYPOTHESIS_EXAMPLES={HYPOTHESIS_EXAMPLES}: must be a positive integer")
settings.register_profile("bpe-fast", max_examples=HYPOTHESIS_EXAMPLES, deadline=None)
settings.load_profile("bpe-fast")


def examples(share: float) -> int:
    """`share` of the configured example count (at least 1), for property tests heavier or lighter than most."""
    return max(1, round(HYPOTHESIS_EXAMPLES * share))


try:  # an installed bpe_fast (maturin develop / pip install) wins; else the source tree
    import bpe_fast  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "python"))
    import bpe_fast  # noqa: F401


def _child_python_path() -> str:
    """PYTHONPATH for a child Python that must import the same bpe_fast as this process, plus gpt/ and lora/.

    After `pip install .` the source tree's python/bpe_fast has no compiled extension, so it must not be put
    ahead of the installed package (CI's clean clone); it is added only when this process imported it.
    """
    entries = [str(REPO)]
    package_parent = Path(bpe_fast.__file__).resolve().parent.parent
    if package_parent == REPO / "python":
        entries.insert(0, str(package_parent))
    inherited = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(entries + ([inherited] if inherited else []))


CHILD_PYTHONPATH = _child_python_path()

CORPORA = REPO / "python" / "bpe_fast" / "samples" / "corpora"

# Text for property tests. Python's `regex` module classifies characters by Unicode 17, the Rust core (like
# tiktoken) by an older Unicode: ~17k newly assigned code points (\p{L}, \p{N}) and U+0295 (Lo -> Ll) are
# classified differently. Those are excluded here; test_train_exact checks the assigned rest agree.
UNICODE_VERSION_SENSITIVE = "\u0295"
STABLE_CHARACTERS = st.characters(
    exclude_categories=("Cs", "Cn"), exclude_characters=UNICODE_VERSION_SENSITIVE
)


def tiktoken_comparable(text: str) -> str:
    """`text` with the Unicode-version-sensitive characters replaced by U+FFFD.

    tiktoken (fancy-regex) classifies by an older Unicode than the `regex` module that DESIGN.md makes the
    judge (and that our splitter's tables follow), so the two may split newly assigned characters
    differently. Comparisons with tiktoken use this; unassigned-in-Python's-Unicode (Cn) covers them all.
    """
    return "".join(
        "\ufffd" if c in UNICODE_VERSION_SENSITIVE or unicodedata.category(c) == "Cn" else c for c in text
    )


def stable_text(max_size: int):
    return st.text(alphabet=STABLE_CHARACTERS, max_size=max_size)


def corpus_slice(name: str, chars: int, start: int = 0) -> str:
    """A prefix-free slice of a bundled corpus (characters, so never a broken UTF-8 sequence)."""
    return (CORPORA / name).read_text(encoding="utf-8")[start : start + chars]


@pytest.fixture(scope="session")
def shakespeare() -> str:
    return corpus_slice("tinyshakespeare.txt", 20_000)


@pytest.fixture(scope="session")
def sanguo() -> str:
    return corpus_slice("sanguo_yanyi.txt", 8_000)


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny tensors: intra-op threads only add synchronisation, which on a busy 2-core machine made the
    model and sampling tests ten times slower. Modules opt in with pytest.mark.usefixtures."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
