"""`manifest.json` beside token shards: its format, reading, writing and checking.

The manifest is the contract between `gpt.prepare` (writer) and the trainer (reader):

    {"format": "bpe-fast-shards", "version": 2,
     "tokenizer": {"spec": "gpt2" | "../vocab.json", "sha256": hex, "vocab_size": N, "eot_id": id},
     "dtype": "uint16" | "uint32", "shard_size": n,
     "shards": [{"file": "val_000000.bin", "split": "val", "tokens": n, "bytes": n, "sha256": hex}, ...],
     "num_tokens": n, "num_documents": n, "source": {...}, "skipped": {reason: count}}

- **Tokenizer.** `spec` is "gpt2" (the GPT-2 files bundled with bpe_fast) or the vocab file's path
  *relative to the manifest's folder*, so the folder and its vocab can move together and a trainer
  started from any directory finds it. `sha256` pins the exact file: for "gpt2" the sha256 of GPT-2's
  `encoder.json` bytes followed by `vocab.bpe` bytes (`cat encoder.json vocab.bpe | sha256sum`), for a
  vocab file the sha256 of its bytes. Hashing the files, not a re-serialization, keeps the hash stable
  across bpe_fast versions. (Version 1 manifests stored the path as typed, relative to the directory
  gpt.prepare ran in; they are still read, with that meaning.)
- **Shards.** Each entry is a plain file name in the manifest's folder (never a path: a manifest cannot
  point outside its folder), with the size and sha256 the writer saw.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from bpe_fast import samples
from bpe_fast.cliutil import UserError
from bpe_fast.files import atomic_write_json

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "bpe-fast-shards"
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)
_REQUIRED_KEYS = ("tokenizer", "dtype", "shards", "num_tokens", "num_documents")


class ManifestError(UserError, ValueError):
    """A manifest that is malformed, or that does not match the tokenizer or shards it is checked
    against. A UserError: entry points report it in one line."""


# ----------------------------------------------------------------------------------------- tokenizer


def tokenizer_sha256(spec: str | os.PathLike) -> str:
    """sha256 identifying a tokenizer: "gpt2" (encoder.json + vocab.bpe bytes) or a vocab file's bytes."""
    if str(spec) == "gpt2":
        paths = [samples.gpt2_dir() / "encoder.json", samples.gpt2_dir() / "vocab.bpe"]
    else:
        paths = [Path(spec)]
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError as e:
            raise FileNotFoundError(f"cannot read tokenizer file {path}: {e.strerror or e}") from e
    return digest.hexdigest()


def tokenizer_entry(
    spec: str | os.PathLike, manifest_dir: str | os.PathLike, vocab_size: int, eot_id: int
) -> dict:
    """The manifest's "tokenizer" object for `spec` ("gpt2" or a vocab path as the user gave it)."""
    if str(spec) == "gpt2":
        recorded = "gpt2"
    else:
        recorded = Path(os.path.relpath(Path(spec).resolve(), Path(manifest_dir).resolve())).as_posix()
    return {"spec": recorded, "sha256": tokenizer_sha256(spec), "vocab_size": vocab_size, "eot_id": eot_id}


def tokenizer_location(manifest: dict, manifest_dir: str | os.PathLike) -> str:
    """Where the manifest's tokenizer is: "gpt2", or the vocab file's absolute path."""
    spec = manifest["tokenizer"].get("spec")
    if not isinstance(spec, str) or not spec:
        raise ManifestError(f"{Path(manifest_dir) / MANIFEST_NAME}: names no tokenizer ('spec' is {spec!r})")
    if spec == "gpt2":
        return spec
    if manifest.get("version") == 1:  # stored relative to the directory gpt.prepare ran in
        return str(Path(spec).resolve())
    return str((Path(manifest_dir) / spec).resolve())


def rebase_tokenizer(entry: dict, from_dir: str | os.PathLike, to_dir: str | os.PathLike) -> dict:
    """A version-2 "tokenizer" object moved from a manifest in `from_dir` to one in `to_dir`."""
    if entry.get("spec") == "gpt2":
        return dict(entry)
    target = (Path(from_dir) / entry["spec"]).resolve()
    return {**entry, "spec": Path(os.path.relpath(target, Path(to_dir).resolve())).as_posix()}


# ----------------------------------------------------------------------------------------- structure


def check_shard_name(name: object, where: str) -> str:
    """A shard entry must be a plain file name: no folder part, nothing absolute, no '..'."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or os.path.isabs(name)
    ):
        raise ManifestError(
            f"{where}: shard name {name!r} is not a plain file name in the manifest's folder "
            "(absolute paths and '..' are refused)"
        )
    return name


def _manifest_path(dir_or_file: str | os.PathLike) -> Path:
    path = Path(dir_or_file)
    return path if path.suffix == ".json" else path / MANIFEST_NAME


def validate_manifest(manifest: dict, where: str = "manifest") -> dict:
    """Checks the structure (format, version, required keys, shard entries); returns the manifest."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{where}: format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if manifest.get("version") not in READABLE_VERSIONS:
        raise ManifestError(
            f"{where}: version {manifest.get('version')!r} is not supported (this code reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}); re-run gpt.prepare"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ManifestError(f"{where}: missing keys {missing}")
    tokenizer = manifest["tokenizer"]
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("vocab_size"), int):
        raise ManifestError(f"{where}: 'tokenizer' must be an object with an integer 'vocab_size'")
    if manifest["dtype"] not in ("uint16", "uint32"):
        raise ManifestError(f"{where}: dtype {manifest['dtype']!r} is not uint16 or uint32")
    if not isinstance(manifest["shards"], list):
        raise ManifestError(f"{where}: 'shards' must be a list")
    seen = set()
    for i, shard in enumerate(manifest["shards"]):
        if not (
            isinstance(shard, dict)
            and shard.get("split") in ("val", "train")
            and isinstance(shard.get("tokens"), int)
            and isinstance(shard.get("bytes", 0), int)
            and isinstance(shard.get("sha256", ""), str)
        ):
            raise ManifestError(f"{where}: shard entry {i} is malformed: {shard!r}")
        name = check_shard_name(shard.get("file"), where)
        if name in seen:
            raise ManifestError(f"{where}: shard {name!r} is listed twice")
        seen.add(name)
    return manifest


def load_manifest(dir_or_file: str | os.PathLike) -> Optional[dict]:
    """The manifest of a shard folder (or a manifest.json path), validated; None when there is none."""
    path = _manifest_path(dir_or_file)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: cannot read manifest: {e}") from e
    return validate_manifest(manifest, str(path))


def write_manifest(dir_or_file: str | os.PathLike, manifest: dict) -> Path:
    """Validates and writes `manifest.json` atomically (bpe_fast.files); returns its path."""
    path = _manifest_path(dir_or_file)
    validate_manifest(manifest, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, manifest)


# ----------------------------------------------------------------------------------------- checks


def check_manifest(
    manifest: Optional[dict],
    vocab_size: int,
    tokenizer_sha256: Optional[str] = None,
    model_vocab_size: Optional[int] = None,
) -> None:
    """Refuses (ManifestError) shards made with another tokenizer than the one training uses.

    `vocab_size` is the tokenizer's real vocab size (e.g. 50257 for GPT-2), compared exactly;
    `tokenizer_sha256` (see `tokenizer_sha256()`), when given, must equal the manifest's;
    `model_vocab_size` (the possibly padded embedding size, e.g. 50304), when given, must hold every id.
    A None manifest (shards from elsewhere, e.g. llm.c) passes: there is nothing to check against.
    """
    if manifest is None:
        return
    validate_manifest(manifest)
    recorded = manifest["tokenizer"]
    spec = recorded.get("spec", "?")
    if recorded["vocab_size"] != vocab_size:
        raise ManifestError(
            f"shards were tokenized with {spec!r} (vocab_size {recorded['vocab_size']}) but the tokenizer "
            f"given has vocab_size {vocab_size}: re-run gpt.prepare with that tokenizer or pass the one "
            "the shards were made with"
        )
    if tokenizer_sha256 is not None and recorded.get("sha256") != tokenizer_sha256:
        raise ManifestError(
            f"shards were tokenized with {spec!r} (sha256 {recorded.get('sha256')}) but the tokenizer given "
            f"has sha256 {tokenizer_sha256}: same vocab size, different tokenizer"
        )
    if model_vocab_size is not None and model_vocab_size < recorded["vocab_size"]:
        raise ManifestError(
            f"the model's vocab_size {model_vocab_size} is smaller than the shards' tokenizer vocab "
            f"({recorded['vocab_size']}): some token ids would not fit the embedding"
        )


def verify_shards(shard_dir: str | os.PathLike, manifest: dict) -> list[tuple[dict, object, int]]:
    """Checks that every listed shard exists with the recorded size, token count and dtype (one header
    read each; the sha256 is checked when a shard is loaded: see gpt.shards.dataset). Returns
    (entry, dtype, tokens) per shard."""
    from gpt.shards.format import ShardError, read_header

    shard_dir = Path(shard_dir)
    itemsize = 2 if manifest["dtype"] == "uint16" else 4
    checked = []
    for shard in manifest["shards"]:
        path = shard_dir / shard["file"]
        if not path.is_file():
            raise ManifestError(
                f"{path}: listed in {MANIFEST_NAME} but missing; restore it or re-run gpt.prepare"
            )
        try:
            dtype, count = read_header(path)
        except ShardError as e:
            raise ManifestError(f"{e}; restore it or re-run gpt.prepare") from e
        recorded_bytes = shard.get("bytes")
        if count != shard["tokens"] or (recorded_bytes is not None and path.stat().st_size != recorded_bytes):
            raise ManifestError(
                f"{path}: has {count} tokens ({path.stat().st_size} bytes) but {MANIFEST_NAME} says "
                f"{shard['tokens']}: the shard changed since gpt.prepare wrote it; re-run gpt.prepare"
            )
        if dtype.itemsize != itemsize:
            raise ManifestError(f"{path}: dtype {dtype} but {MANIFEST_NAME} says {manifest['dtype']}")
        checked.append((shard, dtype, count))
    return checked


__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "ManifestError",
    "check_manifest",
    "check_shard_name",
    "load_manifest",
    "rebase_tokenizer",
    "tokenizer_entry",
    "tokenizer_location",
    "tokenizer_sha256",
    "validate_manifest",
    "verify_shards",
    "write_manifest",
]
