"""The training side of a shard folder: exactly which shards a run reads, checked, and its tokenizer.

One job: turn a `--data` folder into a `ShardSet` the loaders read from, refusing (one line, naming the
file) anything that would make a run silently train on other data than the user made:

- **With a manifest**, the data is exactly the shards it lists: each must exist with the recorded size and
  token count (checked at start, one header read per shard) and the recorded sha256 (checked when the
  loader first reads it, while it reads it anyway). Shard files it does not list are ignored, with one
  notice naming them.
- **Without a manifest** (shards from llm.c or elsewhere), the data is every `{split}_NNNNNN.bin` file;
  each header is checked at start, and gaps in the numbering are named in one warning line.
- **Token ids** must be below the vocab size: checked as each shard is loaded.
- **The tokenizer** is the one the manifest names (its path is relative to the manifest, so any working
  directory finds it) and must have the recorded sha256; a missing or changed file is an error, never
  replaced by another tokenizer.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from bpe_fast.cliutil import UserError

from .format import HEADER_BYTES, ShardError, read_header
from .manifest import (
    MANIFEST_NAME,
    ManifestError,
    check_manifest,
    load_manifest,
    tokenizer_location,
    tokenizer_sha256,
    verify_shards,
)

SPLITS = ("val", "train")
_SHARD_FILE = re.compile(r"(val|train)_(\d+)\.bin")
_SCAN_BLOCK = 1 << 24  # bytes read at a time when a shard is checked


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Shard:
    path: Path
    split: str
    tokens: int
    dtype: np.dtype
    sha256: Optional[str] = None  # as the manifest records it (None: no manifest, or an old one)


@dataclass
class ShardSet:
    """The shards of one `--data` folder that training uses, each header already checked."""

    data_dir: Path
    manifest: Optional[dict]
    shards: dict[str, list[Shard]] = field(default_factory=dict)  # split -> shards in index order
    _verified: set = field(default_factory=set)

    def split(self, name: str) -> list[Shard]:
        return self.shards.get(name, [])

    def has(self, name: str) -> bool:
        return bool(self.split(name))

    def check_model(self, model_vocab_size: int, tokenizer_vocab_size: Optional[int] = None) -> None:
        """With a manifest: the tokenizer's vocab size (when given) is the shards', and the model's
        (possibly padded) embedding holds every id. The shards themselves were checked by open_shards."""
        if self.manifest is None:
            return
        recorded = self.manifest["tokenizer"]["vocab_size"]
        try:
            check_manifest(
                self.manifest,
                recorded if tokenizer_vocab_size is None else tokenizer_vocab_size,
                model_vocab_size=model_vocab_size,
            )
        except ManifestError as e:
            raise ManifestError(f"{self.data_dir / MANIFEST_NAME}: {e}") from e

    def verify_contents(self, shard: Shard, vocab_size: Optional[int]) -> None:
        """Once per shard: every id < `vocab_size`, and the bytes hash to the manifest's sha256."""
        key = (shard.path, vocab_size)
        if key in self._verified:
            return
        largest, digest = _scan(shard, want_hash=shard.sha256 is not None)
        if shard.sha256 is not None and digest != shard.sha256:
            raise ShardError(
                f"{shard.path}: contents changed since gpt.prepare wrote it (sha256 differs from "
                f"{MANIFEST_NAME}); re-run gpt.prepare"
            )
        if vocab_size is not None and largest >= vocab_size:
            raise ShardError(f"{shard.path}: token id {largest} is out of range for vocab size {vocab_size}")
        self._verified.add(key)


def _scan(shard: Shard, want_hash: bool) -> tuple[int, Optional[str]]:
    """The largest id and (when asked) the sha256 of the whole file, in one pass of block reads."""
    digest = hashlib.sha256() if want_hash else None
    largest = -1
    with open(shard.path, "rb") as f:
        header = f.read(HEADER_BYTES)
        if digest is not None:
            digest.update(header)
        carry = b""
        while True:
            block = f.read(_SCAN_BLOCK)
            if not block:
                break
            if digest is not None:
                digest.update(block)
            data = carry + block
            usable = len(data) - len(data) % shard.dtype.itemsize
            if usable:
                largest = max(largest, int(np.frombuffer(data[:usable], dtype=shard.dtype).max()))
            carry = data[usable:]
    return largest, (digest.hexdigest() if digest is not None else None)


def list_shard_files(data_dir: Path, split: str) -> list[tuple[int, Path]]:
    """(index, path) of the `{split}_{index}.bin` files in `data_dir`, in index order."""
    found = []
    for path in data_dir.iterdir():
        match = _SHARD_FILE.fullmatch(path.name)
        if match and match.group(1) == split and path.is_file():
            found.append((int(match.group(2)), path))
    return sorted(found)


def open_shards(data_dir: Union[str, Path], notify: Optional[Callable[[str], None]] = _stderr) -> ShardSet:
    """The folder's shards, every header checked (one read each); see the module notes for the rules.

    `notify` gets the one-line notices (unlisted or missing-numbered shards); None silences them."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "is a file, not a folder" if data_dir.exists() else "does not exist"
        raise UserError(f"--data {data_dir} {what}: make shards with python -m gpt.prepare --out {data_dir}")
    manifest = load_manifest(data_dir)
    notify = notify or (lambda message: None)
    shard_set = ShardSet(data_dir, manifest)
    if manifest is not None:
        listed = set()
        for entry, dtype, count in verify_shards(data_dir, manifest):  # exists, size, header, count, dtype
            path = data_dir / entry["file"]
            listed.add(entry["file"])
            shard_set.shards.setdefault(entry["split"], []).append(
                Shard(path, entry["split"], count, dtype, entry.get("sha256"))
            )
        unlisted = sorted(
            path.name
            for split in SPLITS
            for _, path in list_shard_files(data_dir, split)
            if path.name not in listed
        )
        if unlisted:
            notify(
                f"notice: ignoring {len(unlisted)} shard file(s) in {data_dir} that {MANIFEST_NAME} does not "
                f"list: {', '.join(unlisted[:10])}{' ...' if len(unlisted) > 10 else ''}"
            )
        return shard_set
    gaps = []
    for split in SPLITS:
        files = list_shard_files(data_dir, split)
        for _, path in files:
            dtype, count = read_header(path)
            shard_set.shards.setdefault(split, []).append(Shard(path, split, count, dtype))
        indices = [index for index, _ in files]
        gaps += [f"{split}_{i:06d}.bin" for a, b in zip(indices, indices[1:]) for i in range(a + 1, b)][:10]
    if gaps:
        notify(
            f"warning: {data_dir} has no {MANIFEST_NAME} and its shard numbering has gaps (missing: "
            f"{', '.join(gaps[:10])}); training uses the shards that are there"
        )
    return shard_set


def resolve_tokenizer(
    data_dir: Union[str, Path], tokenizer: Optional[str] = None, load: bool = True
) -> tuple[str, object]:
    """(spec, tokenizer) for training on `data_dir`: the manifest's tokenizer, or `tokenizer` when given
    (then it must be the manifest's: same sha256). Without a manifest: `tokenizer`, else "gpt2".

    `spec` is "gpt2" or an absolute path, usable from any working directory (checkpoints record it).
    With `load=False` the tokenizer is checked (by hash) but not loaded, and None is returned for it.
    A missing file or a different hash is a ManifestError (one line); gpt2 is never substituted."""
    from gpt.tokenizer import load_tokenizer

    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    where = data_dir / MANIFEST_NAME
    if tokenizer is not None:
        spec = "gpt2" if str(tokenizer) == "gpt2" else str(Path(tokenizer).resolve())
        tok = load_tokenizer(spec) if load else None
        if tok is None and spec != "gpt2" and not Path(spec).is_file():
            load_tokenizer(spec)  # the same one-line error as loading it
        if manifest is not None:
            recorded = manifest["tokenizer"].get("sha256")
            if recorded and tokenizer_sha256(spec) != recorded:
                raise ManifestError(
                    f"--tokenizer {tokenizer} is not the tokenizer the shards in {data_dir} were made with "
                    f"({manifest['tokenizer'].get('spec')!r}, sha256 {recorded[:12]}...): pass that one, or "
                    "re-run gpt.prepare with this one"
                )
        return spec, tok
    if manifest is None:
        return "gpt2", (load_tokenizer("gpt2") if load else None)
    spec = tokenizer_location(manifest, data_dir)
    recorded = manifest["tokenizer"].get("sha256")
    if spec != "gpt2" and not Path(spec).is_file():
        raise ManifestError(
            f"{where} names the tokenizer {spec}, which is missing: put that vocab file back (sha256 "
            f"{(recorded or '?')[:12]}...), or pass --tokenizer PATH to a copy of it"
        )
    actual = tokenizer_sha256(spec)
    if recorded and actual != recorded:
        raise ManifestError(
            f"{where} names the tokenizer {spec}, but that file changed since the shards were made (sha256 "
            f"{actual[:12]}..., recorded {recorded[:12]}...): restore it, or re-run gpt.prepare"
        )
    return spec, (load_tokenizer(spec) if load else None)


__all__ = ["Shard", "ShardSet", "list_shard_files", "open_shards", "resolve_tokenizer"]
