"""llm.c token shard files (DESIGN.md section 5): one job, reading and writing `.bin` shards.

Header: 256 little-endian int32; [0] magic, [1] version, [2] number of tokens. Then the tokens:
uint16 for magic 20240520 / version 1, uint32 for magic 20240801 / version 7 (vocab > 65536).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpe_fast.cliutil import UserError
from bpe_fast.files import atomic_path

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAGIC_U16, VERSION_U16 = 20240520, 1
MAGIC_U32, VERSION_U32 = 20240801, 7
_FORMATS = {(MAGIC_U16, VERSION_U16): np.dtype("<u2"), (MAGIC_U32, VERSION_U32): np.dtype("<u4")}


class ShardError(UserError, ValueError):
    """A shard file that is not a valid llm.c token shard, or not the one expected (the message names
    the file). A UserError: entry points report it in one line."""


@dataclass(frozen=True)
class WrittenShard:
    """What `write_shard` wrote: enough for a manifest to recognise the file later."""

    path: Path
    tokens: int
    bytes: int
    sha256: str


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def write_shard(path: str | os.PathLike, tokens, vocab_size: int | None = None) -> WrittenShard:
    """Writes `tokens` atomically (bpe_fast.files: temp file + rename) as an llm.c shard.

    The width is uint16 when `vocab_size` (or, if not given, the largest id + 1) fits, else uint32.
    Ids are range-checked before the cast: numpy would wrap them silently.
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"{path}: tokens must be one-dimensional, got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{path}: tokens must be integers, got {tokens.dtype}")
    max_id = int(tokens.max()) if tokens.size else -1
    if tokens.size and int(tokens.min()) < 0:
        raise ValueError(f"{path}: negative token id {int(tokens.min())}")
    if vocab_size is None:
        vocab_size = max_id + 1
    elif max_id >= vocab_size:
        raise ValueError(f"{path}: token id {max_id} does not fit vocab_size {vocab_size}")
    dtype = token_dtype(vocab_size)
    if max_id >= 2**32:
        raise ValueError(f"{path}: token id {max_id} does not fit uint32")
    magic, version = (MAGIC_U16, VERSION_U16) if dtype.itemsize == 2 else (MAGIC_U32, VERSION_U32)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, version, tokens.size
    path.parent.mkdir(parents=True, exist_ok=True)
    head = header.tobytes()
    body = memoryview(np.ascontiguousarray(tokens, dtype=dtype)).cast("B")  # no extra copy of the tokens
    with atomic_path(path) as temp_name, open(temp_name, "wb") as f:
        f.write(head)
        f.write(body)
    digest = hashlib.sha256(head)
    digest.update(body)
    return WrittenShard(path, int(tokens.size), len(head) + body.nbytes, digest.hexdigest())


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in blocks (shards can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_header(path: str | os.PathLike) -> tuple[np.dtype, int]:
    """Checks magic, version and file size; returns (token dtype, number of tokens)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard: {e}") from e
    if len(raw) < HEADER_BYTES:
        raise ShardError(
            f"{path}: truncated shard: {size} bytes, shorter than the {HEADER_BYTES}-byte header"
        )
    header = np.frombuffer(raw, dtype="<i4")
    key = (int(header[0]), int(header[1]))
    if key not in _FORMATS:
        raise ShardError(
            f"{path}: not an llm.c token shard (magic {key[0]}, version {key[1]}; expected "
            f"{MAGIC_U16}/{VERSION_U16} for uint16 or {MAGIC_U32}/{VERSION_U32} for uint32)"
        )
    dtype = _FORMATS[key]
    count = int(header[2])
    expected = HEADER_BYTES + count * dtype.itemsize
    if count < 0 or size != expected:
        raise ShardError(
            f"{path}: header says {count} tokens ({expected} bytes) but the file has {size} bytes "
            "(truncated or corrupt)"
        )
    return dtype, count


def read_shard(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """The shard's tokens as a numpy array (uint16 or uint32), validated by `read_header`."""
    dtype, count = read_header(path)
    if mmap:
        return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        return np.frombuffer(f.read(), dtype=dtype, count=count)
