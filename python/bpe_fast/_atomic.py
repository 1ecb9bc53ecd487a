"""Atomic file writes: a temp file in the destination's folder, fsync, then os.replace.

A reader (or a crash) therefore sees either the old file or the complete new one, never a half-written
file, and no temp file is left behind when writing fails.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def _current_umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yields a temp file name beside `path` for the caller to write (any writer that takes a file name:
    torch.save, savefig, safetensors...). On success the temp file gets the mode a plain open() would
    have given (0o666 & ~umask; mkstemp makes it 0o600), is fsynced and renamed over `path`; on any
    error it is removed. `suffix` keeps writers that pick a format from the name (savefig) working."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target}: is a directory, cannot write a file there")
    folder = target.parent if str(target.parent) else Path(".")
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=folder)
    os.close(descriptor)
    try:
        yield temp_name
        with open(temp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o666 & ~_current_umask())
        os.replace(temp_name, target)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path. The file gets the usual 0o666 & ~umask mode."""
    with atomic_path(path) as temp_name, open(temp_name, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """UTF-8 text version of `atomic_write_bytes` (newlines written as given, no platform translation)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
