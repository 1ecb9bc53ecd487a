"""Which documents are held out for validation: a small slice chosen by a hash of each document's text.

One job: decide, for every record, "val" or "train", the same way on every run, restart and machine.

- A document's *key* is the first 8 bytes of blake2b(its UTF-8 text), read as an unsigned integer.
  The split depends on the text alone: not on file order, batch size, thread count or worker, and
  identical documents (duplicates are common in web text) always land on the same side, so val never
  holds a copy of a training document.
- A document is val when its key is at most `threshold`.
  - Local files: `exact_threshold` reads every key once (before encoding; reading is far cheaper than
    encoding) and picks the threshold that holds out round(fraction * documents) of them, at least one
    and never all. So a corpus of three files, or one file split by --doc-sep, still gets a val split.
  - A streamed dataset cannot be read twice cheaply: its threshold is `fraction * 2**64`, which holds
    out that share on average (millions of documents: the share to a fraction of a percent).
- Bad records (no text) are never val: they are counted with train.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

from bpe_fast.cliutil import UserError

KEY_SPACE = 1 << 64
DEFAULT_VAL_FRACTION = 0.01


def document_key(text: str) -> int:
    """The document's place in [0, 2**64): blake2b of its UTF-8 text, 8 bytes."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class ValSplit:
    """`is_val(text)`: whether a document belongs to the validation split."""

    threshold: Optional[int]  # None: no validation split

    def is_val(self, text: Optional[str]) -> bool:
        return self.threshold is not None and text is not None and document_key(text) <= self.threshold


def fixed_threshold(fraction: float) -> Optional[int]:
    """The threshold holding out `fraction` of an endless stream on average (None for 0)."""
    if fraction <= 0:
        return None
    return min(KEY_SPACE - 2, int(fraction * KEY_SPACE))


def exact_threshold(keys: Sequence[int], fraction: float, where: str) -> Optional[int]:
    """The threshold that holds out round(fraction * n) of the n documents with these keys, at least one
    and never all. UserError when there are too few documents (or all are identical) to hold one out."""
    if fraction <= 0:
        return None
    if len(keys) < 2:
        raise UserError(
            f"{where}: {len(keys)} document cannot be split into train and val; split the files into "
            "documents with --doc-sep (e.g. --doc-sep '\\n\\n'), give more files, or pass --val-fraction 0"
        )
    ordered = sorted(keys)
    held_out = min(len(ordered) - 1, max(1, round(fraction * len(ordered))))
    threshold = ordered[held_out - 1]
    if threshold >= ordered[-1]:
        # Every document shares that key (all identical): holding out one would hold out all.
        raise UserError(
            f"{where}: every document is identical, so none can be held out; pass --val-fraction 0"
        )
    return threshold


__all__ = ["DEFAULT_VAL_FRACTION", "ValSplit", "document_key", "exact_threshold", "fixed_threshold"]
