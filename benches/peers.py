"""Uniform adapters over bpe_fast and its peers: tiktoken, HF tokenizers, rustbpe, bpeasy.

Two roles:

* **Trainers** — ``train(peer, corpus_path, vocab_size, threads)`` runs one peer's BPE training on one file
  with the GPT-2 pre-tokenizer regex and returns the learned tokens in rank order (``list[bytes]``, id =
  index). Thread counts are set per *process* for the rayon-based peers (RAYON_NUM_THREADS,
  RAYON_RS_NUM_CPUS, TOKENIZERS_PARALLELISM), so training is measured in a fresh subprocess
  (``benches.train_worker``) that sets them before importing anything.
* **Encoders** — objects with ``encode(text)``, ``encode_batch(texts, threads)``, ``decode_bytes(ids)``
  built over one shared vocabulary, so that every peer produces the *same ids* and the timings compare
  equal work. Two vocabularies: GPT-2's own files (tiktoken, HF, bpe_fast; rustbpe cannot load a
  foreign vocab) and a vocab trained by rustbpe (loadable by all four via its tiktoken-style ranks).

How each peer is fed (their natural, fastest interface; documented in docs/BENCHMARKS.md):
bpe_fast trains from the file path (its streaming API) and, as a second row, from the same text blocks the
others get; rustbpe, HF tokenizers and bpeasy get an iterator of ~64 KB blocks of whole lines.
"""

from __future__ import annotations

import base64
import os
import time
from functools import cache
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

from benches import corpus

# The original GPT-2 pre-tokenizer regex (tiktoken's r50k pattern is an equivalent, faster spelling).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# tiktoken's spelling of the same regex (tiktoken_ext.openai_public.r50k_pat_str), used for tiktoken itself.
TIKTOKEN_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

REPO_ROOT = Path(__file__).resolve().parent.parent
GPT2_DIR = REPO_ROOT / "python" / "bpe_fast" / "gpt2"

TRAINERS = ("bpe_fast", "bpe_fast_texts", "rustbpe", "hf_tokenizers", "bpeasy")
ENCODERS = ("bpe_fast", "tiktoken", "hf_tokenizers", "rustbpe")
# Rayon-based peers read their pool size from these at first use; TOKENIZERS_PARALLELISM=false makes HF
# run single-threaded regardless.
THREAD_ENV_VARS = ("RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS")


def thread_env(threads: int) -> Dict[str, str]:
    """Environment that pins every rayon-based peer of a fresh process to ``threads`` threads."""
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    env["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    return env


# ---------------------------------------------------------------------------------------------- versions


def versions() -> Dict[str, str]:
    """Installed versions of every compared package ("missing" when not importable)."""
    from importlib import metadata

    found = {}
    for dist in ("bpe-fast", "tiktoken", "tokenizers", "rustbpe", "bpeasy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "missing"
    try:
        import bpe_fast

        found["bpe_fast imported from"] = str(Path(bpe_fast.__file__).parent)
    except ImportError:
        pass
    return found


def bpe_fast_available() -> bool:
    """True when the Rust extension is built and GPT-2's tokenizer loads (the issue's readiness check)."""
    try:
        import bpe_fast

        bpe_fast.Tokenizer.gpt2()
    except Exception:  # any failure means "not ready yet", reported by the caller
        return False
    return True


# ---------------------------------------------------------------------------------------------- training


def _train_bpe_fast(path: Path, vocab_size: int, threads: int) -> List[bytes]:
    import bpe_fast

    start = time.perf_counter()
    tok = bpe_fast.train([path], vocab_size, pattern="gpt2", num_threads=threads)
    return time.perf_counter() - start, _bpe_fast_token_list(tok)


def _train_bpe_fast_texts(path: Path, vocab_size: int, threads: int) -> List[bytes]:
    import bpe_fast

    start = time.perf_counter()
    tok = bpe_fast.train(corpus.iter_blocks(path), vocab_size, pattern="gpt2", num_threads=threads)
    return time.perf_counter() - start, _bpe_fast_token_list(tok)


def _bpe_fast_token_list(tok) -> List[bytes]:
    special_ids = set(tok.special_tokens.values())
    return [tok.decode_bytes([i]) for i in range(tok.vocab_size) if i not in special_ids]


def _train_rustbpe(path: Path, vocab_size: int, threads: int) -> List[bytes]:
    import rustbpe

    start = time.perf_counter()
    tok = rustbpe.Tokenizer()
    # buffer_size = documents buffered per parallel step; 128 x 64 KB keeps ~8 MB in flight (its default
    # of 8192 is meant for short documents and would buffer the whole corpus here).
    tok.train_from_iterator(corpus.iter_blocks(path), vocab_size, buffer_size=128, pattern=GPT2_PATTERN)
    seconds = time.perf_counter() - start
    return seconds, [token for token, _rank in sorted(tok.get_mergeable_ranks(), key=lambda item: item[1])]


def _train_hf(path: Path, vocab_size: int, threads: int) -> List[bytes]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    start = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _hf_gpt2_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus.iter_blocks(path), trainer=trainer)
    seconds = time.perf_counter() - start
    byte_decoder = {char: byte for byte, char in bytes_to_unicode().items()}
    by_id = sorted(tok.get_vocab().items(), key=lambda item: item[1])
    return seconds, [bytes(byte_decoder[char] for char in token) for token, _id in by_id]


def _train_bpeasy(path: Path, vocab_size: int, threads: int) -> List[bytes]:
    import bpeasy

    # bpeasy requires a token-length cap; 128 bytes is far above any token a 32k vocab learns on this corpus.
    start = time.perf_counter()
    ranks = bpeasy.train_bpe(corpus.iter_blocks(path), GPT2_PATTERN, 128, vocab_size, batch_size=128)
    seconds = time.perf_counter() - start
    return seconds, [token for token, _rank in sorted(ranks.items(), key=lambda item: item[1])]


TRAIN_FUNCTIONS: Dict[str, Callable[[Path, int, int], Tuple[float, List[bytes]]]] = {
    "bpe_fast": _train_bpe_fast,
    "bpe_fast_texts": _train_bpe_fast_texts,
    "rustbpe": _train_rustbpe,
    "hf_tokenizers": _train_hf,
    "bpeasy": _train_bpeasy,
}


def train(peer: str, path: Path, vocab_size: int, threads: int) -> Tuple[float, List[bytes]]:
    """Trains ``peer`` on the file at ``path``; returns (seconds, tokens by id). Thread env must be set already.

    The seconds cover building the trainer, reading the corpus and training; not converting the result.
    """
    if peer not in TRAIN_FUNCTIONS:
        raise ValueError(f"unknown trainer {peer!r}; expected one of {', '.join(TRAINERS)}")
    return TRAIN_FUNCTIONS[peer](Path(path), vocab_size, threads)


# ---------------------------------------------------------------------------------------------- vocabularies


@cache
def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what HF's ByteLevel vocabularies are written in)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def recover_merges(tokens: Sequence[bytes]) -> List[Tuple[bytes, bytes]]:
    """The merge that made each multi-byte token, from a rank-ordered token list (tiktoken-style ranks).

    Each token is BPE-encoded with the ranks below its own; the two parts left are its merge. This is what
    HF needs (an explicit merges list) and what tiktoken does implicitly.
    """
    rank_of = {token: rank for rank, token in enumerate(tokens)}
    merges = []
    for rank, token in enumerate(tokens):
        if len(token) == 1:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best_index, best_rank = -1, rank
            for i in range(len(parts) - 1):
                pair_rank = rank_of.get(parts[i] + parts[i + 1])
                if pair_rank is not None and pair_rank < best_rank:
                    best_index, best_rank = i, pair_rank
            if best_index < 0:
                break
            parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {rank} ({token!r}) does not split into exactly two lower-ranked parts")
        merges.append((parts[0], parts[1]))
    return merges


def write_tiktoken_file(tokens: Sequence[bytes], path: Path) -> Path:
    """Writes tokens (id = index) in tiktoken's ``base64 rank`` format, atomically."""
    lines = b"".join(
        base64.b64encode(token) + b" " + str(rank).encode() + b"\n" for rank, token in enumerate(tokens)
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(lines)
    os.replace(tmp, path)
    return path


def read_tiktoken_file(path: Path) -> List[bytes]:
    tokens = []
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        encoded, rank = line.split()
        if int(rank) != len(tokens):
            raise ValueError(f"{path}:{number}: ranks must be 0, 1, 2, ... in order (got {int(rank)})")
        tokens.append(base64.b64decode(encoded))
    return tokens


# ---------------------------------------------------------------------------------------------- encoders


class Encoder:
    """One peer's encoder over one vocab. ``encode_batch`` threads: what the peer lets us set; see notes."""

    name = "?"
    threads_note = ""

    def encode(self, text: str) -> List[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str], threads: int) -> List[List[int]]:
        raise NotImplementedError

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        raise NotImplementedError


class BpeFastEncoder(Encoder):
    name = "bpe_fast"

    def __init__(self, tok):
        self.tok = tok

    def encode(self, text):
        return self.tok.encode_ordinary(text)

    def encode_batch(self, texts, threads):
        # The ordinary (no special-token scan) batch call: the same work as tiktoken's encode_ordinary_batch.
        return self.tok.encode_ordinary_batch(texts, num_threads=threads)

    def decode_bytes(self, ids):
        return self.tok.decode_bytes(ids)


class TiktokenEncoder(Encoder):
    name = "tiktoken"

    def __init__(self, encoding):
        self.encoding = encoding

    def encode(self, text):
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts, threads):
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=threads)

    def decode_bytes(self, ids):
        return self.encoding.decode_bytes(ids)


class HfEncoder(Encoder):
    name = "hf_tokenizers"
    threads_note = "rayon pool size fixed per process (RAYON_RS_NUM_CPUS)"

    def __init__(self, tok):
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts, threads):
        # encode_batch_fast skips offset tracking: HF's fastest batch path.
        return [
            encoding.ids for encoding in self.tok.encode_batch_fast(list(texts), add_special_tokens=False)
        ]

    def decode_bytes(self, ids):
        # HF only decodes to str; re-encoding to UTF-8 makes the result comparable (and costs HF a little).
        return self.tok.decode(ids, skip_special_tokens=False).encode("utf-8")


class RustbpeEncoder(Encoder):
    name = "rustbpe"
    threads_note = "rayon pool size fixed per process (RAYON_NUM_THREADS)"

    def __init__(self, tok):
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text)

    def encode_batch(self, texts, threads):
        return self.tok.batch_encode(list(texts))

    def decode_bytes(self, ids):
        return self.tok.decode(ids).encode("utf-8")


def _hf_gpt2_pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def gpt2_encoders(include_us: bool = True) -> Dict[str, Encoder]:
    """bpe_fast, tiktoken and HF tokenizers over GPT-2's own vocab files (the ones shipped in the repo).

    ``include_us=False`` leaves bpe_fast out (for measuring the peers before the extension is built).
    """
    import tiktoken
    import tiktoken.load
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    encoder_json = str(GPT2_DIR / "encoder.json")
    vocab_bpe = str(GPT2_DIR / "vocab.bpe")
    encoders: Dict[str, Encoder] = {}
    if include_us:
        import bpe_fast

        encoders["bpe_fast"] = BpeFastEncoder(bpe_fast.Tokenizer.gpt2())

    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=vocab_bpe, encoder_json_file=encoder_json
    )
    encoders["tiktoken"] = TiktokenEncoder(
        tiktoken.Encoding(
            name="gpt2_local",
            pat_str=TIKTOKEN_GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": 50256},
            explicit_n_vocab=50257,
        )
    )

    hf = Tokenizer(models.BPE.from_file(encoder_json, vocab_bpe))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    encoders["hf_tokenizers"] = HfEncoder(hf)
    return encoders


def ranks_encoders(
    tokens: Sequence[bytes], tiktoken_file: Path, rustbpe_tok=None, include_us: bool = True
) -> Dict[str, Encoder]:
    """Every peer over one trained vocab (tokens by id, written to ``tiktoken_file``).

    ``rustbpe_tok`` is the rustbpe tokenizer that trained the vocab (rustbpe cannot load one); leave it
    None to compare only the loadable peers.
    """
    import tiktoken
    from tokenizers import Tokenizer, decoders, models

    write_tiktoken_file(tokens, tiktoken_file)
    encoders: Dict[str, Encoder] = {}
    if include_us:
        import bpe_fast

        encoders["bpe_fast"] = BpeFastEncoder(
            bpe_fast.Tokenizer.from_tiktoken(str(tiktoken_file), pattern="gpt2", special_tokens={})
        )
    encoders["tiktoken"] = TiktokenEncoder(
        tiktoken.Encoding(
            name=tiktoken_file.stem,
            pat_str=TIKTOKEN_GPT2_PATTERN,
            mergeable_ranks={token: rank for rank, token in enumerate(tokens)},
            special_tokens={},
        )
    )
    to_unicode = bytes_to_unicode()

    def as_unicode(token: bytes) -> str:
        return "".join(to_unicode[byte] for byte in token)

    vocab = {as_unicode(token): rank for rank, token in enumerate(tokens)}
    merges = [(as_unicode(left), as_unicode(right)) for left, right in recover_merges(tokens)]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = _hf_gpt2_pre_tokenizer()
    hf.decoder = decoders.ByteLevel()
    encoders["hf_tokenizers"] = HfEncoder(hf)
    if rustbpe_tok is not None:
        encoders["rustbpe"] = RustbpeEncoder(rustbpe_tok)
    return encoders


def train_rustbpe_vocab(path: Path, vocab_size: int):
    """Trains the shared encoding vocab with rustbpe; returns (rustbpe tokenizer, tokens by id)."""
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(corpus.iter_blocks(path), vocab_size, buffer_size=128, pattern=GPT2_PATTERN)
    tokens = [token for token, _rank in sorted(tok.get_mergeable_ranks(), key=lambda item: item[1])]
    return tok, tokens


def check_identical(encoders: Dict[str, Encoder], texts: Sequence[str]) -> Dict[str, str]:
    """Encodes ``texts`` with every encoder and compares to the first; returns {peer: problem} (empty = all equal).

    Also checks that decoding gives the input back, so a fast-but-wrong peer cannot slip into a table.
    """
    problems: Dict[str, str] = {}
    names = list(encoders)
    # tiktoken is the reference when present: it is the long-established implementation of these semantics.
    reference_name = "tiktoken" if "tiktoken" in encoders else names[0]
    for index, text in enumerate(texts):
        reference = encoders[reference_name].encode(text)
        for name in names:
            if name in problems:
                continue
            ids = reference if name == reference_name else encoders[name].encode(text)
            if ids != reference:
                first = next(
                    (pos for pos, (a, b) in enumerate(zip(ids, reference)) if a != b),
                    min(len(ids), len(reference)),
                )
                problems[name] = (
                    f"text {index}: ids differ from {reference_name} at token {first} "
                    f"({len(ids)} vs {len(reference)} tokens)"
                )
            elif encoders[name].decode_bytes(ids) != text.encode("utf-8"):
                problems[name] = f"text {index}: decode(encode(text)) != text"
    return problems
