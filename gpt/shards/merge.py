"""`python -m gpt.prepare merge-manifests`: the parts written by `--worker i --num-workers n` -> one folder.

One job: renumber the parts' shards into one folder (hard links, or copies across file systems) and
write one manifest that sums them. Every shard is re-checked first (header, size, the recorded
sha256) and every name stays inside its folder, so a merged folder is exactly what the parts were.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from bpe_fast.files import atomic_path, remove_stale_temps_in

from .format import file_sha256
from .manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    ManifestError,
    load_manifest,
    rebase_tokenizer,
    tokenizer_location,
    verify_shards,
    write_manifest,
)

# What must agree between parts for their shards to be one data set (the tokenizer's path may differ:
# each part stores it relative to its own folder).
_TOKENIZER_IDENTITY = ("sha256", "vocab_size", "eot_id")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no extra disk for billions of tokens) when the file system allows, else a copy; atomic."""
    with atomic_path(dst) as temp:
        os.unlink(temp)
        try:
            os.link(src, temp)
        except OSError:
            shutil.copyfile(src, temp)


def _check_part_shards(part_dir: Path, manifest: dict) -> None:
    verify_shards(part_dir, manifest)
    for shard in manifest["shards"]:
        recorded = shard.get("sha256")
        if recorded and file_sha256(part_dir / shard["file"]) != recorded:
            raise ManifestError(
                f"{part_dir / shard['file']}: sha256 differs from {MANIFEST_NAME}; re-run that worker"
            )


def merge_manifests(part_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Combines the outputs of `gpt.prepare --worker i --num-workers n` into one shard folder.

    The parts must share tokenizer, dtype and shard size, and (when they were made by workers) be
    exactly workers 0..n-1 of one job. The merged shards are part 0's, then part 1's, ..., renumbered
    in that order into `out_dir` with their split kept; `out_dir/manifest.json` sums the counts.
    """
    if not part_dirs:
        raise ManifestError("merge needs at least one part folder")
    parts = []
    for part_dir in part_dirs:
        manifest = load_manifest(part_dir)
        if manifest is None:
            raise ManifestError(f"{part_dir}: no {MANIFEST_NAME} (is that part finished?)")
        _check_part_shards(Path(part_dir), manifest)
        parts.append((Path(part_dir), manifest))
    parts.sort(key=lambda part: part[1].get("source", {}).get("worker", 0))
    first_dir, first = parts[0]
    identity = {key: first["tokenizer"].get(key) for key in _TOKENIZER_IDENTITY}
    for part_dir, manifest in parts[1:]:
        for key in ("dtype", "shard_size"):
            if manifest.get(key) != first.get(key):
                raise ManifestError(
                    f"{part_dir}: {key} {manifest.get(key)!r} differs from {first.get(key)!r}"
                )
        if {key: manifest["tokenizer"].get(key) for key in _TOKENIZER_IDENTITY} != identity:
            raise ManifestError(
                f"{part_dir}: tokenizer {manifest['tokenizer']} differs from {first['tokenizer']} ({first_dir})"
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
    plan, shards, skipped = [], [], {}
    for part_dir, manifest in parts:
        for shard in manifest["shards"]:
            name = f"{shard['split']}_{len(shards):06d}.bin"
            plan.append((part_dir / shard["file"], out_dir / name))
            shards.append({**shard, "file": name})
        for reason, count in manifest.get("skipped", {}).items():
            skipped[reason] = skipped.get(reason, 0) + count
    planned = {dst.name for _, dst in plan}
    remove_stale_temps_in(out_dir, lambda name: name in planned or name == MANIFEST_NAME)
    # A merge killed part-way left some of the planned links: those are kept; anything else is refused.
    stale = sorted(p.name for p in out_dir.glob("*.bin") if p.name not in planned) + (
        [MANIFEST_NAME] if (out_dir / MANIFEST_NAME).exists() else []
    )
    if stale:
        raise ManifestError(f"{out_dir}: already holds {', '.join(stale[:3])}; merge into an empty folder")
    for src, dst in plan:
        if dst.exists():
            if os.path.samefile(src, dst) or file_sha256(dst) == file_sha256(src):
                continue  # linked or copied by an earlier, interrupted merge
            raise ManifestError(f"{dst}: already exists with other contents; merge into an empty folder")
        _link_or_copy(src, dst)
    if first.get("version") == 1:
        tokenizer = {**first["tokenizer"], "spec": tokenizer_location(first, first_dir)}
        tokenizer = rebase_tokenizer(tokenizer, "/", out_dir) if tokenizer["spec"] != "gpt2" else tokenizer
    else:
        tokenizer = rebase_tokenizer(first["tokenizer"], first_dir, out_dir)
    merged = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "tokenizer": tokenizer,
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


__all__ = ["merge_manifests"]
