"""bpe_fast: exact byte-level BPE tokenizer with a Rust core.

    import bpe_fast
    tok = bpe_fast.train("corpus.txt", 1024, pattern="gpt2", special_tokens=["<|endoftext|>"])
    ids = tok.encode("hello world")
    tok.save("vocab.json"); tok = bpe_fast.load("vocab.json")

See DESIGN.md §3-4 for the semantics and the vocab file format.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Optional, Union

from ._native import extension_path
from .gpt2_files import ENDOFTEXT
from .patterns import PATTERNS
from .tokenizer import Tokenizer
from .training import train


def _version() -> str:
    """The installed distribution's version; Cargo.toml is its one source (maturin copies it into the
    wheel's metadata), so a source checkout that was never installed reads it from there."""
    try:
        return metadata.version("bpe-fast")
    except metadata.PackageNotFoundError:
        cargo_toml = Path(__file__).resolve().parents[2] / "Cargo.toml"
        if cargo_toml.is_file():
            found = re.search(r'^version\s*=\s*"([^"]+)"', cargo_toml.read_text(encoding="utf-8"), re.M)
            if found:
                return found.group(1)
        return "unknown"


__version__ = _version()


def load(path: Union[str, os.PathLike[str]], pattern: Optional[str] = None) -> Tokenizer:
    """Load a hex-JSON v1 vocab file or the report's bare {id: hex} map (pattern defaults to "raw" for it)."""
    return Tokenizer.from_file(path, pattern=pattern)


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Module-level form of `tok.encode(text)`."""
    return tok.encode(text)


def decode(tok: Tokenizer, ids: Iterable[int]) -> str:
    """Module-level form of `tok.decode(ids)`."""
    return tok.decode(ids)


__all__ = [
    "ENDOFTEXT",
    "PATTERNS",
    "Tokenizer",
    "__version__",
    "decode",
    "encode",
    "extension_path",
    "load",
    "train",
]
