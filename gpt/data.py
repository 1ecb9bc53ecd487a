"""Token shards for training: the DDP-aware resumable loader, and the data-side names train.py uses.

Which shards a run reads, how they are checked and which tokenizer goes with them is decided once by
`open_shards` / `resolve_tokenizer` (gpt/shards/dataset.py); the loaders read from that `ShardSet`.

Every rank reads its own slice of each global batch, as in build-nanogpt: the global position advances
by B*T*world_size per step and rank r reads B*T+1 tokens starting at position + r*B*T. The loader's
state (epoch, shard, position) is the same on every rank, so one state saved by rank 0 resumes all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from gpt.shards.dataset import Shard, ShardSet, list_shard_files, open_shards, resolve_tokenizer
from gpt.shards.format import ShardError, read_header, read_shard, write_shard
from gpt.shards.manifest import MANIFEST_NAME, ManifestError, load_manifest, verify_shards
from gpt.shards.manifest import check_manifest as _check_manifest

__all__ = [
    "ManifestError",
    "ShardError",
    "ShardLoader",
    "ShardSet",
    "check_manifest",
    "list_shards",
    "open_shards",
    "read_manifest",
    "read_shard",
    "resolve_tokenizer",
    "validate_shards",
    "write_shard",
]


def list_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The `{split}_{index:06d}.bin` files of `data_dir`, in index order (refuses an empty list)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"shard folder {data_dir} does not exist")
    found = [path for _, path in list_shard_files(data_dir, split)]
    if not found:
        raise FileNotFoundError(f"no '{split}_*.bin' shards in {data_dir}")
    return found


def validate_shards(paths: list[Path], vocab_size: int | None = None) -> list[int]:
    """Checks every shard's header and file size, and (when `vocab_size` is given) that no id reaches it.

    Returns the token counts."""
    counts = []
    check = ShardSet(Path("."), None)
    for path in paths:
        dtype, count = read_header(path)
        check.verify_contents(Shard(Path(path), "", count, dtype), vocab_size)
        counts.append(count)
    return counts


def read_manifest(data_dir: str | os.PathLike) -> dict | None:
    """The shard folder's validated manifest.json, or None when the shards came without one."""
    return load_manifest(data_dir)


def check_manifest(
    manifest: dict,
    data_dir: str | os.PathLike,
    *,
    model_vocab_size: int,
    tokenizer_vocab_size: int | None = None,
    tokenizer_sha256: str | None = None,
) -> None:
    """Refuses shards made with another tokenizer than the trainer's (vocab size, sha256 when given),
    shards with more ids than the model has embeddings for, and listed shards whose size changed."""
    where = Path(data_dir) / MANIFEST_NAME
    try:
        recorded_vocab = manifest["tokenizer"]["vocab_size"]
        _check_manifest(
            manifest,
            recorded_vocab if tokenizer_vocab_size is None else tokenizer_vocab_size,
            tokenizer_sha256=tokenizer_sha256,
            model_vocab_size=model_vocab_size,
        )
        verify_shards(data_dir, manifest)
    except ManifestError as e:
        raise ManifestError(f"{where}: {e}") from e


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ShardLoader:
    """Yields (x, y) int64 batches of shape (B, T) for one rank, deterministically and resumably.

    `data` is a `ShardSet` from `open_shards` (pass the same one to the train and val loaders: every
    header is read once) or a folder, opened here. Each shard's ids (< `vocab_size`) and, with a
    manifest, its sha256 are checked when it is first loaded; the error names the shard. A shard too
    small for one global step is skipped, and all skipped shards are named in one `notify` line.

    shuffle=True permutes, per epoch and with an RNG seeded by (seed, epoch), the order of the shards
    and the order of the documents inside each shard (a document starts at `eot_id`; the piece before
    a shard's first EOT continues a document from the previous shard and moves as one unit).
    """

    def __init__(
        self,
        data: Union[ShardSet, str, os.PathLike],
        split: str,
        B: int,
        T: int,
        rank: int = 0,
        world_size: int = 1,
        *,
        seed: int = 0,
        shuffle: bool = False,
        eot_id: int | None = None,
        vocab_size: int | None = None,
        validate: bool = True,
        notify: Optional[Callable[[str], None]] = _stderr,
    ):
        if B < 1 or T < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad loader geometry B={B} T={T} rank={rank} world_size={world_size}")
        if shuffle and eot_id is None:
            raise ValueError("shuffle=True needs eot_id to find document boundaries")
        self.shard_set = data if isinstance(data, ShardSet) else open_shards(data, notify)
        self.data_dir, self.split = self.shard_set.data_dir, split
        self.B, self.T, self.rank, self.world_size = B, T, rank, world_size
        self.seed, self.shuffle, self.eot_id = seed, shuffle, eot_id
        self.vocab_size, self.validate = vocab_size, validate
        self.shards = self.shard_set.split(split)
        if not self.shards:
            raise FileNotFoundError(f"no '{split}_*.bin' shards in {self.data_dir}")
        self.paths = [shard.path for shard in self.shards]
        counts = [shard.tokens for shard in self.shards]
        self.step_tokens = B * T * world_size
        # A shard too small for one global step (+1 for the shifted targets) is skipped, not half-read.
        self.usable = [i for i, n in enumerate(counts) if n >= self.step_tokens + 1]
        if not self.usable:
            raise ShardError(
                f"{self.data_dir}: no '{split}' shard holds the {self.step_tokens + 1} tokens one step needs "
                f"(B*T*world_size+1); the largest has {max(counts)}. Lower B or T, or write bigger shards"
            )
        skipped = [f"{self.paths[i].name} ({n} tokens)" for i, n in enumerate(counts) if i not in self.usable]
        if skipped and notify is not None:
            notify(
                f"warning: skipping {len(skipped)} '{split}' shard(s) smaller than one step of "
                f"{self.step_tokens + 1} tokens: {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}"
            )
        self.counts = counts
        self._cache_key: tuple[int, int] | None = None
        self._tokens: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        """Back to the first batch of epoch 0."""
        self.epoch, self.shard_pos, self.position = 0, 0, 0

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(self.usable)
        rng = np.random.default_rng([self.seed, epoch])
        return [self.usable[i] for i in rng.permutation(len(self.usable))]

    def _shard_index(self) -> int:
        return self._order(self.epoch)[self.shard_pos]

    def _shard_tokens(self) -> np.ndarray:
        shard = self._shard_index()
        key = (self.epoch if self.shuffle else 0, shard)
        if key != self._cache_key:
            if self.validate:
                self.shard_set.verify_contents(self.shards[shard], self.vocab_size)
            tokens = read_shard(self.paths[shard], mmap=True)
            if self.shuffle:
                tokens = self._shuffle_documents(np.asarray(tokens), self.epoch, shard)
            self._tokens, self._cache_key = tokens, key
        return self._tokens

    def _shuffle_documents(self, tokens: np.ndarray, epoch: int, shard: int) -> np.ndarray:
        starts = np.flatnonzero(tokens == self.eot_id)
        if starts.size == 0 or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        ends = np.append(starts[1:], tokens.size)
        rng = np.random.default_rng([self.seed, epoch, shard])
        order = rng.permutation(starts.size)
        return np.concatenate([tokens[starts[i] : ends[i]] for i in order])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self._shard_tokens()
        B, T = self.B, self.T
        start = self.position + self.rank * B * T
        buf = torch.from_numpy(np.asarray(tokens[start : start + B * T + 1]).astype(np.int64))
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        self.position += self.step_tokens
        if self.position + self.step_tokens + 1 > tokens.size:
            self.position = 0
            self.shard_pos += 1
            if self.shard_pos == len(self.usable):
                self.shard_pos, self.epoch = 0, self.epoch + 1
        return x, y

    def state_dict(self) -> dict:
        """Plain data (JSON-able): where the next batch starts."""
        return {
            "split": self.split,
            "epoch": self.epoch,
            "shard_pos": self.shard_pos,
            "shard": self.paths[self._shard_index()].name,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("split", "seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"loader state was saved with {key}={state[key]!r}, this loader has {getattr(self, key)!r}"
                )
        epoch, shard_pos, position = int(state["epoch"]), int(state["shard_pos"]), int(state["position"])
        if not 0 <= shard_pos < len(self.usable):
            raise ValueError(
                f"loader state shard_pos {shard_pos} out of range for {len(self.usable)} usable shards"
            )
        shard = self._order(epoch)[shard_pos]
        if self.paths[shard].name != state["shard"]:
            raise ValueError(
                f"loader state points at shard {state['shard']!r} but the shards in {self.data_dir} now put "
                f"{self.paths[shard].name!r} there (the shard set changed since the checkpoint)"
            )
        if position < 0 or position + self.step_tokens + 1 > self.counts[shard]:
            raise ValueError(f"loader state position {position} does not fit shard {state['shard']!r}")
        self.epoch, self.shard_pos, self.position = epoch, shard_pos, position
