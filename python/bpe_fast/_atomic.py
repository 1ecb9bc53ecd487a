"""Atomic file writes: a temp file in the destination's folder, fsync, then os.replace.

A reader (or a crash) therefore sees either the old file or the complete new one, never a half-written
file, and no temp file is left behind when writing fails.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def _current_umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path. The file gets the usual 0o666 & ~umask mode."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target}: is a directory, cannot write a file there")
    folder = target.parent if str(target.parent) else Path(".")
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file 0o600; give it the mode a plain open() would have given.
        os.chmod(temp_name, 0o666 & ~_current_umask())
        os.replace(temp_name, target)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    return target


def atomic_write_text(path: PathLike, text: str) -> Path:
    """UTF-8 text version of `atomic_write_bytes` (newlines written as given, no platform translation)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
