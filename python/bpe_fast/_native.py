"""Access to the Rust extension, imported on first use.

Importing lazily keeps `bpe_fast.reference`, `bpe_fast.patterns` and `bpe_fast.vocab_io` usable (and
`import bpe_fast` working) in a source checkout where the extension has not been built yet; the first
call that needs Rust then fails with a hint instead of a bare ModuleNotFoundError.
"""

from __future__ import annotations

from types import ModuleType


def core() -> ModuleType:
    """The `bpe_fast._core` module."""
    try:
        from . import _core
    except ImportError as err:
        raise ImportError(
            "bpe_fast's Rust extension (bpe_fast._core) is not built: run `maturin develop --release` "
            "in the repository (or `pip install .`)"
        ) from err
    return _core
