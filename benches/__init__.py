"""Benchmarks of bpe_fast against its peers (see docs/BENCHMARKS.md)."""

import importlib.util
import sys
from pathlib import Path

# An installed bpe_fast (pip install . / maturin develop) wins; otherwise benchmark the source tree's
# python/bpe_fast (with its in-place built _core extension), as the test suite does. find_spec only looks
# the package up: importing it here would put its memory (numpy, ...) into every peer's training worker.
if importlib.util.find_spec("bpe_fast") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
