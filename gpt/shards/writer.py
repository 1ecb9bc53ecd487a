"""Encoded documents -> numbered shards for each split, with a progress file a restart resumes from.

One job: append each batch's documents to its split's buffer (val or train), write
`{split}_{index:06d}.bin` each time a buffer fills (gpt.shards.format.write_shard, atomic), and after each
shard record in `progress.json` (atomic too) where that split stands in the input: its first document
not completely written, and how many of that document's tokens already are.

- Each split's shards are its documents' token stream in input order, cut every `shard_size` tokens.
- The index runs over all shards in the order their last token appears in the input, then the two
  short final shards (val first). That order depends only on the input, so it is the same for any
  batch size, thread count or restart.
- Restart: reading resumes at the earlier of the two splits' positions; a split skips the documents
  before its own position and drops the tokens already written of the first one it re-encodes. The
  shards come out byte-identical to an uninterrupted run, because encoding is deterministic.
- Bad records (no text) belong to the train split's counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from bpe_fast.cliutil import UserError
from bpe_fast.files import atomic_write_json

from .format import token_dtype, write_shard
from .sources import Position

PROGRESS_NAME = "progress.json"
PROGRESS_FORMAT = "bpe-fast-prepare-progress"
PROGRESS_VERSION = 2
SPLITS = ("val", "train")


@dataclass
class Cursor:
    """Where one split stands in the input, as of its last written shard."""

    position: Position = Position()  # its first document not completely in its shards
    drop_tokens: int = 0  # that document's tokens already in the shards
    num_documents: int = 0  # its documents completely in the shards
    skipped: dict[str, int] = field(default_factory=dict)  # bad records before `position` (train only)

    def to_json(self) -> dict:
        return {
            "position": self.position.to_json(),
            "drop_tokens": self.drop_tokens,
            "num_documents": self.num_documents,
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_json(cls, data: dict) -> Cursor:
        return cls(
            Position.from_json(data["position"]),
            int(data["drop_tokens"]),
            int(data["num_documents"]),
            {str(k): int(v) for k, v in data["skipped"].items()},
        )


@dataclass
class Batch:
    """Documents read in order (each with its split), and the bad records among them."""

    texts: list[str]
    positions: list[Position]  # one per text
    splits: list[str]  # one per text: "val" or "train"
    skips: list[tuple[Position, str, str]]  # bad records: (position, reason, where)
    next_position: Position  # where reading continues after this batch
    input_bytes: int = 0


@dataclass
class Progress:
    """What the completed shards hold; saved after every shard."""

    config: dict
    shards: list[dict] = field(default_factory=list)
    cursors: dict[str, Cursor] = field(default_factory=lambda: {split: Cursor() for split in SPLITS})
    done_reading: bool = False

    @property
    def num_tokens(self) -> int:
        return sum(shard["tokens"] for shard in self.shards)

    @property
    def num_documents(self) -> int:
        return sum(cursor.num_documents for cursor in self.cursors.values())

    @property
    def skipped(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for cursor in self.cursors.values():
            for reason, count in cursor.skipped.items():
                total[reason] = total.get(reason, 0) + count
        return dict(sorted(total.items()))

    @property
    def resume_position(self) -> Position:
        """Where reading restarts: the split that is further behind."""
        return min((cursor.position for cursor in self.cursors.values()), key=lambda p: p.record_index)

    def to_json(self) -> dict:
        return {
            "format": PROGRESS_FORMAT,
            "version": PROGRESS_VERSION,
            "config": self.config,
            "shards": self.shards,
            "cursors": {split: cursor.to_json() for split, cursor in self.cursors.items()},
            "done_reading": self.done_reading,
        }

    @classmethod
    def from_json(cls, data: dict, where: str) -> Progress:
        if data.get("format") != PROGRESS_FORMAT or data.get("version") != PROGRESS_VERSION:
            raise UserError(
                f"{where}: not a progress file of this gpt.prepare (format {data.get('format')!r}, version "
                f"{data.get('version')!r}); start over with --overwrite"
            )
        try:
            return cls(
                config=data["config"],
                shards=list(data["shards"]),
                cursors={split: Cursor.from_json(data["cursors"][split]) for split in SPLITS},
                done_reading=bool(data["done_reading"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{where}: malformed progress file ({e}); start over with --overwrite") from e


def _add_counts(total: dict[str, int], reasons) -> dict[str, int]:
    total = dict(total)
    for reason in reasons:
        total[reason] = total.get(reason, 0) + 1
    return total


class _SplitStream:
    """One split's shard-sized buffer and its counters (as of everything handed to `add` so far)."""

    def __init__(self, cursor: Cursor, shard_size: int, dtype: np.dtype):
        self.buffer = np.empty(shard_size, dtype=dtype)  # pages are touched only as they fill
        self.fill = 0
        self.drop = cursor.drop_tokens  # tokens of the first document to come that are already written
        self.drop_at = cursor.position
        self.num_documents = cursor.num_documents
        self.skipped = dict(cursor.skipped)


@dataclass
class _Plan:
    """One split's part of a batch."""

    tokens: np.ndarray  # its documents' tokens, back to back
    ends: np.ndarray  # where each of its documents ends in `tokens`
    docs: np.ndarray  # their indices in the batch
    consumed: int = 0  # tokens already moved into the buffer (or dropped)


class ShardStreamWriter:
    """Cuts each split's token stream into shards of `shard_size` tokens and keeps `progress` current."""

    def __init__(self, out_dir: Path, progress: Progress, vocab_size: int, shard_size: int):
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.out_dir, self.progress = out_dir, progress
        self.vocab_size, self.shard_size = vocab_size, shard_size
        dtype = token_dtype(vocab_size)
        self.streams = {split: _SplitStream(progress.cursors[split], shard_size, dtype) for split in SPLITS}

    def save(self) -> None:
        atomic_write_json(self.out_dir / PROGRESS_NAME, self.progress.to_json())

    def _write(self, split: str, cursor: Cursor) -> None:
        stream = self.streams[split]
        name = f"{split}_{len(self.progress.shards):06d}.bin"
        written = write_shard(self.out_dir / name, stream.buffer[: stream.fill], vocab_size=self.vocab_size)
        self.progress.shards.append(
            {
                "file": name,
                "split": split,
                "tokens": written.tokens,
                "bytes": written.bytes,
                "sha256": written.sha256,
            }
        )
        self.progress.cursors[split] = cursor
        self.save()
        stream.fill = 0

    def _plan(self, batch: Batch, split: str, ids: np.ndarray, offsets: np.ndarray) -> Optional[_Plan]:
        in_split = np.array([s == split for s in batch.splits], dtype=bool)
        if not in_split.any():
            return None
        lengths = np.diff(offsets)
        docs = np.flatnonzero(in_split)
        plan = _Plan(ids[np.repeat(in_split, lengths)], np.cumsum(lengths[docs]), docs)
        stream = self.streams[split]
        if stream.drop:
            first = int(docs[0])
            if batch.positions[first] != stream.drop_at or stream.drop >= int(lengths[first]):
                raise UserError(
                    "the input changed since the interrupted run (the document to resume from is missing or "
                    "shorter): start over with --overwrite"
                )
            plan.consumed, stream.drop = stream.drop, 0
        return plan

    def add(self, batch: Batch, ids: np.ndarray, offsets: np.ndarray) -> None:
        """Appends one encoded batch (`ids`, `offsets` as BatchEncoder returns them)."""
        if ids.size and int(ids.max()) >= self.vocab_size:
            # The copy into a uint16 buffer would wrap silently: refuse instead.
            raise ValueError(f"token id {int(ids.max())} does not fit vocab_size {self.vocab_size}")
        plans = {split: self._plan(batch, split, ids, offsets) for split in SPLITS}
        # Every point where a buffer fills, keyed by the batch document that fills it: shards are
        # written in input order whichever split they belong to.
        events = []
        for split, plan in plans.items():
            if plan is None:
                continue
            cut = plan.consumed + self.shard_size - self.streams[split].fill
            while cut <= plan.tokens.size:
                filler = int(plan.docs[np.searchsorted(plan.ends, cut - 1, side="right")])
                events.append((filler, cut, split))
                cut += self.shard_size
        for _, cut, split in sorted(events):
            plan, stream = plans[split], self.streams[split]
            stream.buffer[stream.fill :] = plan.tokens[plan.consumed : cut]
            stream.fill, plan.consumed = self.shard_size, cut
            self._write(split, self._cursor_at(batch, split, plan, cut))
        for split, plan in plans.items():
            stream = self.streams[split]
            if plan is not None:
                rest = plan.tokens[plan.consumed :]
                stream.buffer[stream.fill : stream.fill + rest.size] = rest
                stream.fill += rest.size
                stream.num_documents += plan.docs.size
        train = self.streams["train"]
        train.skipped = _add_counts(train.skipped, [reason for _, reason, _ in batch.skips])

    def _cursor_at(self, batch: Batch, split: str, plan: _Plan, cut: int) -> Cursor:
        """The split's cursor once its first `cut` tokens of this batch are in shards."""
        stream = self.streams[split]
        local = int(np.searchsorted(plan.ends, cut, side="right"))  # its document holding token `cut`
        if local < plan.docs.size:
            start = int(plan.ends[local - 1]) if local else 0
            position, drop = batch.positions[int(plan.docs[local])], cut - start
        else:
            position, drop = batch.next_position, 0
        skipped = {}
        if split == "train":
            before = [reason for at, reason, _ in batch.skips if at.record_index < position.record_index]
            skipped = _add_counts(stream.skipped, before)
        return Cursor(position, drop, stream.num_documents + local, skipped)

    def finish(self, end_position: Position) -> None:
        """Writes the short last shard of each split (val first) and marks the input as read."""
        for split in SPLITS:
            stream = self.streams[split]
            cursor = Cursor(end_position, 0, stream.num_documents, dict(stream.skipped))
            if stream.fill:
                self._write(split, cursor)
            self.progress.cursors[split] = cursor
        self.progress.done_reading = True
        self.save()


__all__ = ["PROGRESS_NAME", "SPLITS", "Batch", "Cursor", "Progress", "ShardStreamWriter"]
