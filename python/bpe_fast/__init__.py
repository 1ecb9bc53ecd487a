"""bpe_fast: exact byte-level BPE tokenizer with a Rust core.

    import bpe_fast
    tok = bpe_fast.train("corpus.txt", 1024, pattern="gpt2", special_tokens=["<|endoftext|>"])
    ids = tok.encode("hello world")
    tok.save("vocab.json"); tok = bpe_fast.load("vocab.json")

See DESIGN.md §3-4 for the semantics and the vocab file format.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import metadata
from typing import Optional, Union

from .patterns import PATTERNS
from .tokenizer import Tokenizer
from .training import train

try:
    __version__ = metadata.version("bpe-fast")
except metadata.PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.1.0"


def load(path: Union[str, os.PathLike[str]], pattern: Optional[str] = None) -> Tokenizer:
    """Load a hex-JSON v1 vocab file or the report's bare {id: hex} map (pattern defaults to "raw" for it)."""
    return Tokenizer.from_file(path, pattern=pattern)


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Module-level form of `tok.encode(text)`."""
    return tok.encode(text)


def decode(tok: Tokenizer, ids: Iterable[int]) -> str:
    """Module-level form of `tok.decode(ids)`."""
    return tok.decode(ids)


__all__ = ["PATTERNS", "Tokenizer", "__version__", "decode", "encode", "load", "train"]
