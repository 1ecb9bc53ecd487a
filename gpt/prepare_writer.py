"""The token stream -> numbered shards, with a progress file a restart resumes from.

One job: append encoded batches to a shard-sized buffer, write `{split}_{index:06d}.bin` each time it
fills (gpt.shards.write_shard is atomic), and after each shard record in `progress.json` (also atomic)
exactly where the input stands: the first document not completely written and how many of its tokens
already are, plus the counters up to that document. A restart skips the input before that document,
re-encodes it, drops the tokens already written, and continues: the shards come out byte-identical to an
uninterrupted run because encoding is deterministic and the stream does not depend on how it was batched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from gpt.manifest import write_json_atomic
from gpt.prepare_sources import Position
from gpt.shards import token_dtype, write_shard

PROGRESS_NAME = "progress.json"
PROGRESS_FORMAT = "bpe-fast-prepare-progress"


@dataclass
class Batch:
    """Documents read in order, and the bad records met before each of them."""

    texts: list[str]
    positions: list[Position]  # one per text
    skips: list[tuple[int, str, str]]  # (index of the next text in the batch, reason, where)
    next_position: Position  # where reading continues after this batch
    split: Optional[str] = None  # "val"/"train" when the split goes by document (--val-fraction)
    input_bytes: int = 0


@dataclass
class Progress:
    """What the completed shards hold; saved after every shard."""

    config: dict
    shards: list[dict] = field(default_factory=list)
    num_documents: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    position: Position = Position()  # first document not completely in the shards
    drop_tokens: int = 0  # its tokens already in the shards
    done_reading: bool = False

    @property
    def num_tokens(self) -> int:
        return sum(shard["tokens"] for shard in self.shards)

    def to_json(self) -> dict:
        return {
            "format": PROGRESS_FORMAT,
            "version": 1,
            "config": self.config,
            "shards": self.shards,
            "num_documents": self.num_documents,
            "skipped": self.skipped,
            "position": self.position.to_json(),
            "drop_tokens": self.drop_tokens,
            "done_reading": self.done_reading,
        }

    @classmethod
    def from_json(cls, data: dict, where: str) -> Progress:
        if data.get("format") != PROGRESS_FORMAT or data.get("version") != 1:
            raise ValueError(f"{where}: not a gpt.prepare progress file (format {data.get('format')!r})")
        try:
            return cls(
                config=data["config"],
                shards=list(data["shards"]),
                num_documents=int(data["num_documents"]),
                skipped={str(k): int(v) for k, v in data["skipped"].items()},
                position=Position.from_json(data["position"]),
                drop_tokens=int(data["drop_tokens"]),
                done_reading=bool(data["done_reading"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: malformed progress file: {e}") from e


def _add_counts(total: dict[str, int], reasons) -> dict[str, int]:
    total = dict(total)
    for reason in reasons:
        total[reason] = total.get(reason, 0) + 1
    return total


class ShardStreamWriter:
    """Cuts the token stream into shards of `shard_size` tokens and keeps `progress` current.

    `first_shard_is_val`: shard 0 is the validation split (build-nanogpt); otherwise every batch says its
    split, and the last shard of the val documents is written short so no shard mixes splits.
    """

    def __init__(
        self,
        out_dir: Path,
        progress: Progress,
        vocab_size: int,
        shard_size: int,
        first_shard_is_val: bool,
        on_shard: Optional[Callable[[dict], None]] = None,
    ):
        if shard_size < 1:
            raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
        self.out_dir, self.progress = out_dir, progress
        self.vocab_size, self.shard_size = vocab_size, shard_size
        self.first_shard_is_val, self.on_shard = first_shard_is_val, on_shard
        self.dtype = token_dtype(vocab_size)
        self.buffer = np.empty(shard_size, dtype=self.dtype)
        self.fill = 0
        self.buffer_split: Optional[str] = None
        # Counters of everything handed to add() so far (progress holds them as of the last shard).
        self.num_documents = progress.num_documents
        self.skipped = dict(progress.skipped)
        self._drop = (
            progress.drop_tokens
        )  # tokens of the first document to re-encode that are already written

    def _split_for_next_shard(self, batch_split: Optional[str]) -> str:
        if batch_split is not None:
            return batch_split
        return "val" if self.first_shard_is_val and not self.progress.shards else "train"

    def _write(
        self, resume_at: Position, drop_tokens: int, num_documents: int, skipped: dict[str, int]
    ) -> None:
        index = len(self.progress.shards)
        split = self.buffer_split
        name = f"{split}_{index:06d}.bin"
        write_shard(self.out_dir / name, self.buffer[: self.fill], vocab_size=self.vocab_size)
        entry = {"file": name, "split": split, "tokens": int(self.fill)}
        self.progress.shards.append(entry)
        self.progress.position, self.progress.drop_tokens = resume_at, drop_tokens
        self.progress.num_documents, self.progress.skipped = num_documents, skipped
        self.save()
        self.fill, self.buffer_split = 0, None
        if self.on_shard is not None:
            self.on_shard(entry)

    def save(self) -> None:
        write_json_atomic(self.out_dir / PROGRESS_NAME, self.progress.to_json())

    def add(self, batch: Batch, ids: np.ndarray, ends: np.ndarray) -> None:
        """Appends one encoded batch (`ids`, `ends` as BatchEncoder returns them)."""
        if ids.size and int(ids.max()) >= self.vocab_size:
            # The copy into a uint16 buffer would wrap silently: refuse instead.
            raise ValueError(f"token id {int(ids.max())} does not fit vocab_size {self.vocab_size}")
        starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
        base_documents, base_skipped = self.num_documents, self.skipped

        if batch.split is not None and self.buffer_split not in (None, batch.split) and self.fill:
            # Going from val documents to train documents: the val split ends with a short shard here.
            first = batch.positions[0] if batch.positions else batch.next_position
            self._write(
                first,
                0,
                base_documents,
                _add_counts(base_skipped, [r for at, r, _ in batch.skips if at == 0]),
            )

        cursor = 0
        if self._drop:
            if not len(ends) or self._drop >= int(ends[0]):
                raise RuntimeError(
                    "the input changed since the interrupted run: the document to resume from is missing or "
                    "shorter (use --overwrite to start over)"
                )
            cursor, self._drop = self._drop, 0

        while cursor < ids.size:
            if self.fill == 0:
                self.buffer_split = self._split_for_next_shard(batch.split)
            take = min(self.shard_size - self.fill, ids.size - cursor)
            self.buffer[self.fill : self.fill + take] = ids[cursor : cursor + take]
            self.fill += take
            cursor += take
            if self.fill == self.shard_size:
                # Where a restart would resume: the document holding token `cursor`, minus what is written.
                doc = int(np.searchsorted(ends, cursor, side="right"))
                if doc < len(ends):
                    resume_at, drop = batch.positions[doc], cursor - int(starts[doc])
                else:
                    resume_at, drop = batch.next_position, 0
                reasons = [reason for at, reason, _ in batch.skips if at <= doc]
                self._write(resume_at, drop, base_documents + doc, _add_counts(base_skipped, reasons))

        self.num_documents = base_documents + len(batch.texts)
        self.skipped = _add_counts(base_skipped, [reason for _, reason, _ in batch.skips])

    def finish(self, end_position: Position) -> None:
        """Writes the last, partial shard and marks the input as completely read."""
        if self.fill:
            self._write(end_position, 0, self.num_documents, self.skipped)
        self.progress.position, self.progress.drop_tokens = end_position, 0
        self.progress.num_documents, self.progress.skipped = self.num_documents, self.skipped
        self.progress.done_reading = True
        self.save()
