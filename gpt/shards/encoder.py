"""Batch encoding for `gpt.prepare`: documents -> one uint32 id array with an end-of-text before each.

One job: `BatchEncoder(tokenizer, eot_id)(texts) -> (ids, offsets)`, where `ids` is every document's
tokens back to back, each preceded by the end-of-text id, and document k is `ids[offsets[k]:offsets[k+1]]`.

Documents are encoded with encode_ordinary semantics: text that looks like a special token (e.g. a web
page quoting "<|endoftext|>") is ordinary text, so only the separators we insert are end-of-text tokens
and a document can never inject one (the same choice as build-nanogpt's `encode_ordinary`).

The work is bpe_fast's public `Tokenizer.encode_batch_flat`: parallel over documents in Rust with the
GIL released, returning numpy arrays (no Python int per token).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from bpe_fast.cliutil import UserError
from gpt.tokenizer import EOT_TEXT


def eot_token_id(tokenizer, eot_text: str = EOT_TEXT, spec: str = "the tokenizer") -> int:
    """The id documents are prefixed with; refuses (one line, with the fix) a tokenizer without it."""
    specials = tokenizer.special_tokens
    if eot_text not in specials:
        have = ", ".join(sorted(specials)) or "none"
        if eot_text == EOT_TEXT:
            fix = (
                f"retrain it with `bpe-fast train FILE --vocab N` (which adds {EOT_TEXT}; older versions: "
                f'--special "{EOT_TEXT}"), or name one of its special tokens with --eot-token'
            )
        else:
            fix = "name one of its special tokens with --eot-token"
        raise UserError(
            f"{spec} has no {eot_text!r} special token (it has: {have}), which shards put before every "
            f"document: {fix}"
        )
    return int(specials[eot_text])


class BatchEncoder:
    """`encoder(texts) -> (ids uint32, offsets int64)`; the same ids whatever `num_threads` is."""

    def __init__(self, tokenizer, prefix_id: int, num_threads: Optional[int] = None):
        if not hasattr(tokenizer, "encode_batch_flat"):
            raise TypeError(f"{type(tokenizer).__name__} is not a bpe_fast Tokenizer (no encode_batch_flat)")
        self.tokenizer, self.prefix_id, self.num_threads = tokenizer, int(prefix_id), num_threads

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.empty(0, np.uint32), np.zeros(1, np.int64)
        ids, offsets = self.tokenizer.encode_batch_flat(
            list(texts), disallowed_special=(), prefix_id=self.prefix_id, num_threads=self.num_threads
        )
        if len(offsets) != len(texts) + 1 or int(offsets[-1]) != len(ids):
            raise RuntimeError(
                f"encode_batch_flat returned {len(offsets)} offsets for {len(texts)} texts "
                f"(last {int(offsets[-1]) if len(offsets) else None}, {len(ids)} ids)"
            )
        return ids, offsets


__all__ = ["BatchEncoder", "eot_token_id"]
