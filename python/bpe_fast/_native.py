"""Access to the Rust extension, imported on first use.

Importing lazily keeps `bpe_fast.reference`, `bpe_fast.patterns` and `bpe_fast.vocab_io` usable (and
`import bpe_fast` working) in a source checkout where the extension has not been built yet; the first
call that needs Rust then fails with a hint instead of a bare ModuleNotFoundError.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Optional


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


def extension_path() -> Optional[Path]:
    """The file of the compiled Rust extension this bpe_fast would load, or None when it is not built.

    For reports and bug reports (which build was measured); finding it does not import it."""
    try:
        spec = importlib.util.find_spec(f"{__package__}._core")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None
