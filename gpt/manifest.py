"""`manifest.json` beside token shards: reading, writing, checking against a tokenizer, merging parts.

The manifest is the contract between `gpt.prepare` (writer) and the trainer's loader (reader):

    {"format": "bpe-fast-shards", "version": 1,
     "tokenizer": {"spec": "gpt2" | path, "sha256": hex, "vocab_size": N, "eot_id": id},
     "dtype": "uint16" | "uint32", "shard_size": n,
     "shards": [{"file": "val_000000.bin", "split": "val", "tokens": n}, ...],
     "num_tokens": n, "num_documents": n, "source": {...}, "skipped": {reason: count}}

Tokenizer sha256 (`tokenizer_sha256`): for "gpt2" it is the sha256 of GPT-2's own `encoder.json` bytes
followed by `vocab.bpe` bytes (the files bundled in python/bpe_fast/gpt2/); for a vocab file it is the
sha256 of that file's bytes. Hashing the source files (not a re-serialization) keeps the hash stable
across bpe_fast versions and lets anyone recompute it with `cat encoder.json vocab.bpe | sha256sum`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

from bpe_fast.files import atomic_write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "bpe-fast-shards"
MANIFEST_VERSION = 1
# Read once at import (os.umask can only be read by setting it, which is not thread-safe later).
_REQUIRED_KEYS = ("tokenizer", "dtype", "shards", "num_tokens", "num_documents")


class ManifestError(ValueError):
    """A manifest that is malformed, or that does not match the tokenizer/shards it is checked against."""


def gpt2_files() -> tuple[Path, Path]:
    """Paths of GPT-2's encoder.json and vocab.bpe as bundled with bpe_fast (installed or in this repo)."""
    spec = importlib.util.find_spec("bpe_fast")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "gpt2" for p in spec.submodule_search_locations]
    candidates.append(Path(__file__).resolve().parent.parent / "python" / "bpe_fast" / "gpt2")
    for folder in candidates:
        encoder, merges = folder / "encoder.json", folder / "vocab.bpe"
        if encoder.is_file() and merges.is_file():
            return encoder, merges
    raise FileNotFoundError(f"GPT-2's encoder.json/vocab.bpe not found in {[str(c) for c in candidates]}")


def tokenizer_sha256(spec: str | os.PathLike) -> str:
    """sha256 identifying a tokenizer spec: "gpt2" (encoder.json + vocab.bpe bytes) or a vocab file path."""
    digest = hashlib.sha256()
    paths = list(gpt2_files()) if str(spec) == "gpt2" else [Path(spec)]
    for path in paths:
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError as e:
            raise FileNotFoundError(f"cannot read tokenizer file {path}: {e}") from e
    return digest.hexdigest()


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    """Writes JSON to a temp file beside `path`, fsyncs, then renames: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _manifest_path(dir_or_file: str | os.PathLike) -> Path:
    path = Path(dir_or_file)
    return path if path.suffix == ".json" else path / MANIFEST_NAME


def validate_manifest(manifest: dict, where: str = "manifest") -> dict:
    """Checks the structure (format, version, required keys, shard entries); returns the manifest."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{where}: format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"{where}: version {manifest.get('version')!r} is not supported (this code reads {MANIFEST_VERSION})"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ManifestError(f"{where}: missing keys {missing}")
    tokenizer = manifest["tokenizer"]
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("vocab_size"), int):
        raise ManifestError(f"{where}: 'tokenizer' must be an object with an integer 'vocab_size'")
    if manifest["dtype"] not in ("uint16", "uint32"):
        raise ManifestError(f"{where}: dtype {manifest['dtype']!r} is not uint16 or uint32")
    for i, shard in enumerate(manifest["shards"]):
        if not (
            isinstance(shard, dict)
            and isinstance(shard.get("file"), str)
            and shard.get("split") in ("val", "train")
            and isinstance(shard.get("tokens"), int)
        ):
            raise ManifestError(f"{where}: shard entry {i} is malformed: {shard!r}")
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
    """Validates and writes `manifest.json` atomically; returns its path."""
    path = _manifest_path(dir_or_file)
    validate_manifest(manifest, str(path))
    write_json_atomic(path, manifest)
    return path


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


def verify_shards(shard_dir: str | os.PathLike, manifest: dict) -> None:
    """Checks that every shard the manifest lists exists with the recorded token count and dtype."""
    from gpt.shards import read_header

    shard_dir = Path(shard_dir)
    for shard in manifest["shards"]:
        dtype, count = read_header(shard_dir / shard["file"])
        if count != shard["tokens"]:
            raise ManifestError(
                f"{shard_dir / shard['file']}: has {count} tokens, manifest says {shard['tokens']}"
            )
        if dtype.itemsize != (2 if manifest["dtype"] == "uint16" else 4):
            raise ManifestError(
                f"{shard_dir / shard['file']}: dtype {dtype} but manifest says {manifest['dtype']}"
            )


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no extra disk for billions of tokens) when the filesystem allows, else copy; atomic."""
    tmp = dst.with_name(f".{dst.name}.merge.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def merge_manifests(part_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Combines the outputs of `gpt.prepare --worker i --num-workers n` into one shard folder.

    The parts must share tokenizer, dtype and shard size, and (when they were made by workers) be
    exactly workers 0..n-1 of one job. The merged token stream is part 0's stream, then part 1's, ...:
    shards are renumbered in that order (hard-linked, or copied across filesystems) into `out_dir`,
    keeping their split, and `out_dir/manifest.json` sums the counts.
    """
    if not part_dirs:
        raise ManifestError("merge needs at least one part folder")
    parts = []
    for part_dir in part_dirs:
        manifest = load_manifest(part_dir)
        if manifest is None:
            raise ManifestError(f"{part_dir}: no {MANIFEST_NAME} (is that part finished?)")
        verify_shards(part_dir, manifest)
        parts.append((Path(part_dir), manifest))
    parts.sort(key=lambda part: part[1].get("source", {}).get("worker", 0))
    first = parts[0][1]
    for part_dir, manifest in parts[1:]:
        for key in ("dtype", "shard_size"):
            if manifest.get(key) != first.get(key):
                raise ManifestError(
                    f"{part_dir}: {key} {manifest.get(key)!r} differs from {first.get(key)!r}"
                )
        if manifest["tokenizer"] != first["tokenizer"]:
            raise ManifestError(
                f"{part_dir}: tokenizer {manifest['tokenizer']} differs from {first['tokenizer']}"
            )
    workers = [m.get("source", {}).get("worker") for _, m in parts]
    num_workers = {m.get("source", {}).get("num_workers") for _, m in parts}
    if all(w is not None for w in workers) and len(num_workers) == 1:
        (expected,) = num_workers
        if sorted(workers) != list(range(expected)):
            raise ManifestError(
                f"parts are workers {sorted(workers)}, expected each of 0..{expected - 1} once"
            )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = sorted(p.name for p in out_dir.glob("*.bin")) + (
        [MANIFEST_NAME] if (out_dir / MANIFEST_NAME).exists() else []
    )
    if stale:
        raise ManifestError(f"{out_dir}: already holds {stale[:3]}...; merge into an empty folder")
    shards, skipped = [], {}
    for part_dir, manifest in parts:
        for shard in manifest["shards"]:
            name = f"{shard['split']}_{len(shards):06d}.bin"
            src = part_dir / shard["file"]
            if src.resolve() != (out_dir / name).resolve():
                _link_or_copy(src, out_dir / name)
            shards.append({"file": name, "split": shard["split"], "tokens": shard["tokens"]})
        for reason, count in manifest.get("skipped", {}).items():
            skipped[reason] = skipped.get(reason, 0) + count
    merged = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tokenizer": first["tokenizer"],
        "dtype": first["dtype"],
        "shard_size": first.get("shard_size"),
        "shards": shards,
        "num_tokens": sum(m["num_tokens"] for _, m in parts),
        "num_documents": sum(m["num_documents"] for _, m in parts),
        "source": {"merged_from": [{"dir": str(d), **m.get("source", {})} for d, m in parts]},
        "skipped": skipped,
    }
    write_manifest(out_dir, merged)
    return merged
