"""One adapter per BPE trainer: train on one file with the GPT-2 pre-tokenizer, return the tokens by id.

``train(peer, corpus_path, vocab_size, threads) -> (seconds, tokens)``; the seconds cover building the
trainer, reading the corpus and training, not converting the result. Thread counts are set per process
(benches/train_worker.py sets the environment before importing anything; gigabpe and bpe_fast also take
the count as an argument).

How each is fed (its natural, fastest interface): bpe_fast and gigabpe read the file themselves (bpe_fast
also has a row fed the same blocks as the others); rustbpe, HF tokenizers, bpeasy and ffbpe get an
iterator of ~64 KB blocks of whole lines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from benches import corpus
from benches.peers import PeerUnavailable, import_peer
from benches.vocabs import GPT2_PATTERN, bytes_to_unicode

TRAINERS = ("bpe_fast", "bpe_fast_texts", "rustbpe", "hf_tokenizers", "bpeasy", "gigabpe", "ffbpe")
# Trainers whose tie-breaking is Hugging Face's: their merge list may leave the reference's at a tie.
HF_ORDER = ("hf_tokenizers", "gigabpe")

TrainResult = Tuple[float, List[bytes]]


def bpe_fast_token_list(tok) -> List[bytes]:
    special_ids = set(tok.special_tokens.values())
    return [tok.token_bytes(i) for i in range(tok.vocab_size) if i not in special_ids]


def _hf_strings_to_tokens(vocab: Dict[str, int]) -> List[bytes]:
    """HF byte-level token strings (GPT-2's byte<->character map) to bytes, ordered by id."""
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    return [
        bytes(byte_of[char] for char in token) for token, _id in sorted(vocab.items(), key=lambda kv: kv[1])
    ]


def _train_bpe_fast(path: Path, vocab_size: int, threads: int) -> TrainResult:
    bpe_fast = import_peer("bpe_fast")
    start = time.perf_counter()
    tok = bpe_fast.train([path], vocab_size, pattern="gpt2", num_threads=threads)
    return time.perf_counter() - start, bpe_fast_token_list(tok)


def _train_bpe_fast_texts(path: Path, vocab_size: int, threads: int) -> TrainResult:
    bpe_fast = import_peer("bpe_fast")
    start = time.perf_counter()
    tok = bpe_fast.train(corpus.iter_blocks(path), vocab_size, pattern="gpt2", num_threads=threads)
    return time.perf_counter() - start, bpe_fast_token_list(tok)


def _train_rustbpe(path: Path, vocab_size: int, threads: int) -> TrainResult:
    rustbpe = import_peer("rustbpe")
    start = time.perf_counter()
    tok = rustbpe.Tokenizer()
    # buffer_size = documents buffered per parallel step; 128 x 64 KB keeps ~8 MB in flight (its default
    # of 8192 is meant for short documents and would buffer the whole corpus here).
    tok.train_from_iterator(corpus.iter_blocks(path), vocab_size, buffer_size=128, pattern=GPT2_PATTERN)
    seconds = time.perf_counter() - start
    return seconds, [token for token, _rank in sorted(tok.get_mergeable_ranks(), key=lambda item: item[1])]


def _train_hf(path: Path, vocab_size: int, threads: int) -> TrainResult:
    tokenizers = import_peer("hf_tokenizers")
    from tokenizers import Regex, models, pre_tokenizers, trainers

    start = time.perf_counter()
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus.iter_blocks(path), trainer=trainer)
    seconds = time.perf_counter() - start
    return seconds, _hf_strings_to_tokens(tok.get_vocab())


def _train_bpeasy(path: Path, vocab_size: int, threads: int) -> TrainResult:
    bpeasy = import_peer("bpeasy")
    # bpeasy requires a token-length cap; 128 bytes is far above any token a 32k vocab learns here.
    start = time.perf_counter()
    ranks = bpeasy.train_bpe(corpus.iter_blocks(path), GPT2_PATTERN, 128, vocab_size, batch_size=128)
    seconds = time.perf_counter() - start
    return seconds, [token for token, _rank in sorted(ranks.items(), key=lambda item: item[1])]


def distinct_bytes(path: Path) -> List[int]:
    """The byte values that occur in the file (read in 16 MB blocks)."""
    seen = set()
    with open(path, "rb") as handle:
        while len(seen) < 256:
            block = handle.read(1 << 24)
            if not block:
                break
            seen.update(block.translate(None, bytes(sorted(seen))) if seen else block)
    return sorted(seen)


def _train_gigabpe(path: Path, vocab_size: int, threads: int) -> TrainResult:
    gigabpe = import_peer("gigabpe")
    # gigabpe (like HF without an initial alphabet) starts from the bytes it sees and counts only those in
    # vocab_size, and has no option for all 256: asked for V - 256 + (distinct bytes) it learns V - 256
    # merges, the others' work. The byte scan is done before the clock starts; the unseen bytes are added
    # to its list afterwards so that every list has 256 + V - 256 tokens.
    seen = distinct_bytes(path)
    start = time.perf_counter()
    # pretokenizer="bytelevel" is HF's ByteLevel with the GPT-2 regex, hand-written (see its bytelevel.rs).
    vocab, _merges = gigabpe.train_bpe(
        [str(path)], vocab_size - 256 + len(seen), pretokenizer="bytelevel", threads=threads
    )
    seconds = time.perf_counter() - start
    tokens = _hf_strings_to_tokens(vocab)
    present = {token[0] for token in tokens if len(token) == 1}
    return seconds, tokens + [bytes([b]) for b in range(256) if b not in present]


def _train_ffbpe(path: Path, vocab_size: int, threads: int) -> TrainResult:
    ffbpe = import_peer("ffbpe")
    # ffbpe's default pre-tokenizer pattern is GPT-2's; records are the same ~64 KB blocks.
    start = time.perf_counter()
    model = ffbpe.train_bpe(corpus.iter_blocks(path), vocab_size=vocab_size)
    seconds = time.perf_counter() - start
    return seconds, [token for token, _id in sorted(model.vocab.items(), key=lambda item: item[1])]


TRAIN_FUNCTIONS: Dict[str, Callable[[Path, int, int], TrainResult]] = {
    "bpe_fast": _train_bpe_fast,
    "bpe_fast_texts": _train_bpe_fast_texts,
    "rustbpe": _train_rustbpe,
    "hf_tokenizers": _train_hf,
    "bpeasy": _train_bpeasy,
    "gigabpe": _train_gigabpe,
    "ffbpe": _train_ffbpe,
}

CALLS = {
    "bpe_fast": "`bpe_fast.train([path], V, pattern='gpt2', num_threads=T)`",
    "bpe_fast_texts": "`bpe_fast.train(blocks, V, pattern='gpt2', num_threads=T)`",
    "rustbpe": "`Tokenizer().train_from_iterator(blocks, V, buffer_size=128, pattern=GPT-2)`",
    "hf_tokenizers": "`BpeTrainer(vocab_size=V, min_frequency=0, initial_alphabet=256 bytes)`, "
    "Split(GPT-2) + ByteLevel, `train_from_iterator(blocks)`",
    "bpeasy": "`train_bpe(blocks, GPT-2, 128, V, batch_size=128)`",
    "gigabpe": "`train_bpe([path], V - 256 + distinct bytes, pretokenizer='bytelevel', threads=T)`",
    "ffbpe": "`ffbpe.train_bpe(blocks, vocab_size=V)` (default pattern: GPT-2)",
}


def train(peer: str, path: Path, vocab_size: int, threads: int) -> TrainResult:
    """Trains ``peer`` on the file at ``path``; (seconds, tokens by id). PeerUnavailable if not installed."""
    if peer not in TRAIN_FUNCTIONS:
        raise ValueError(f"unknown trainer {peer!r}; expected one of {', '.join(TRAINERS)}")
    return TRAIN_FUNCTIONS[peer](Path(path), vocab_size, threads)


__all__ = ["TRAINERS", "HF_ORDER", "CALLS", "PeerUnavailable", "train", "bpe_fast_token_list"]
