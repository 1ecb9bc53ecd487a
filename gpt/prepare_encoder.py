"""Batch encoding for `gpt.prepare`: documents -> one uint32 id array with an end-of-text before each document.

One job: adapt a tokenizer to `encode(texts) -> (ids, ends)`, where `ids` is every document's tokens
concatenated, each document preceded by the end-of-text id, and `ends[k]` is where document k ends in `ids`.

Documents are encoded with encode_ordinary semantics: text that looks like a special token (e.g. a web
page quoting "<|endoftext|>") is ordinary text, so only the separators we insert are end-of-text tokens
and a document can never inject one (the same choice as build-nanogpt's `encode_ordinary`).

The fast path is bpe_fast's Rust core, `encode_batch_to_buffer`: parallel over documents with the GIL
released, returning little-endian bytes (no Python int per token). Any other tokenizer with an
`encode_ordinary_batch(texts)` (bpe_fast without that core method, tiktoken) works through lists.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

EOT_TEXT = "<|endoftext|>"


def tokenizer_vocab_size(tokenizer) -> int:
    """Max id + 1 (bpe_fast's `vocab_size`, tiktoken's `n_vocab`)."""
    for name in ("vocab_size", "n_vocab"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    raise TypeError(
        f"{type(tokenizer).__name__} has no vocab_size/n_vocab: not a tokenizer gpt.prepare can use"
    )


def tokenizer_special_tokens(tokenizer) -> dict[str, int]:
    specials = getattr(tokenizer, "special_tokens", None)
    if specials is None:
        specials = getattr(tokenizer, "_special_tokens", {})  # tiktoken keeps them there
    return dict(specials)


def eot_token_id(tokenizer, eot_text: str = EOT_TEXT, spec: str = "the tokenizer") -> int:
    """The id documents are prefixed with; refuses a tokenizer without that special token."""
    specials = tokenizer_special_tokens(tokenizer)
    if eot_text not in specials:
        raise ValueError(
            f"{spec} has no {eot_text!r} special token (special tokens: {sorted(specials) or 'none'}). "
            f"Shards need it between documents: train the vocab with "
            f'`bpe-fast train ... --special "{eot_text}"` (or bpe_fast.train(..., special_tokens=["{eot_text}"]))'
            ", or name another special token with --eot-token."
        )
    return int(specials[eot_text])


class BatchEncoder:
    """`encoder(texts) -> (ids uint32, ends int64)`; the same ids whatever `num_threads` is."""

    def __init__(self, tokenizer, prefix_id: int, num_threads: Optional[int] = None):
        self.tokenizer, self.prefix_id = tokenizer, int(prefix_id)
        self.num_threads = num_threads or 0  # 0 = all cores (Rust's convention)
        core = getattr(tokenizer, "_core", None)
        self._core_batch = getattr(core, "encode_batch_to_buffer", None)
        if self._core_batch is None and not hasattr(tokenizer, "encode_ordinary_batch"):
            raise TypeError(
                f"{type(tokenizer).__name__} has neither a bpe_fast core nor encode_ordinary_batch"
            )

    @property
    def fast(self) -> bool:
        """True when encoding runs in bpe_fast's Rust core without Python lists."""
        return self._core_batch is not None

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.empty(0, np.uint32), np.empty(0, np.int64)
        if self._core_batch is not None:
            ids_bytes, ends_bytes = self._core_batch(list(texts), [], self.num_threads, self.prefix_id)
            ids = np.frombuffer(ids_bytes, dtype="<u4")
            ends = np.frombuffer(ends_bytes, dtype="<u8").astype(np.int64)
        else:
            ids, ends = self._via_lists(texts)
        if len(ends) != len(texts) or (len(ends) and int(ends[-1]) != len(ids)):
            raise RuntimeError(
                f"encoder returned {len(ends)} document ends for {len(texts)} texts "
                f"(last end {int(ends[-1]) if len(ends) else None}, {len(ids)} ids)"
            )
        return ids, ends

    def _via_lists(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        kwargs = {"num_threads": self.num_threads} if self.num_threads else {}
        token_lists = self.tokenizer.encode_ordinary_batch(list(texts), **kwargs)
        ends = np.cumsum([len(tokens) + 1 for tokens in token_lists], dtype=np.int64)
        ids = np.empty(int(ends[-1]), dtype=np.uint32)
        start = 0
        for tokens, end in zip(token_lists, ends):
            ids[start] = self.prefix_id
            ids[start + 1 : end] = tokens
            start = int(end)
        return ids, ends
