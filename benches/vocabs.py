"""The four vocabularies of the encode benchmark and the files each peer loads them from, all offline.

* ``gpt2``: GPT-2's encoder.json/vocab.bpe (bundled with bpe_fast), its r50k ``.tiktoken`` form and
  Hugging Face's ``tokenizer.json`` (shared data ``tokenizers/hf_gpt2``);
* ``cl100k``, ``o200k``: OpenAI's ``.tiktoken`` rank files (shared data ``tokenizers/``); their
  ``tokenizer.json`` is written by ``bpe_fast.export.save_hf`` for the peers that only read that format;
* ``trained32k``: 32,768 tokens trained by bpe_fast (GPT-2 pattern) on the training corpus blocks, saved as
  ``.tiktoken`` and ``tokenizer.json``.

tiktoken, the reference every peer's ids are checked against, gets its pattern and special tokens from
``tiktoken_ext.openai_public`` with the rank loader pointed at the local file (hash-checked), so nothing is
downloaded and the regex is tiktoken's own.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from benches import corpus

VOCABS = ("gpt2", "cl100k", "o200k", "trained32k")
VOCAB_TITLES = {"gpt2": "GPT-2", "cl100k": "cl100k", "o200k": "o200k", "trained32k": "32k trained"}
# The original GPT-2 pre-tokenizer regex (tiktoken's r50k pattern is an equivalent, faster spelling).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TRAINED_VOCAB_SIZE = 32768
# tiktoken encoding name and bpe_fast pattern name of each OpenAI vocab.
OPENAI_NAMES = {"gpt2": "r50k_base", "cl100k": "cl100k_base", "o200k": "o200k_base"}
BPE_FAST_PATTERNS = {"gpt2": "gpt2", "cl100k": "gpt4", "o200k": "o200k", "trained32k": "gpt2"}


class VocabUnavailable(Exception):
    """The vocabulary's files are missing and cannot be made offline."""


@dataclass(frozen=True)
class VocabSpec:
    """Where one vocabulary lives, in every format a peer may load. Paths are absolute strings (JSON-able)."""

    name: str
    tiktoken_file: str
    hf_json: str
    # OpenAI encoding name (r50k_base, cl100k_base, o200k_base); None for the trained vocab.
    openai_name: Optional[str]
    bpe_fast_pattern: str
    # GPT-2 only: encoder.json and vocab.bpe.
    gpt2_files: Optional[Tuple[str, str]] = None
    # Trained vocab only: the corpus and size it was trained with (rustbpe retrains it to take part).
    train_corpus: Optional[str] = None
    vocab_size: int = 0
    extra: Dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "tiktoken_file": self.tiktoken_file,
            "hf_json": self.hf_json,
            "openai_name": self.openai_name,
            "bpe_fast_pattern": self.bpe_fast_pattern,
            "gpt2_files": list(self.gpt2_files) if self.gpt2_files else None,
            "train_corpus": self.train_corpus,
            "vocab_size": self.vocab_size,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict) -> VocabSpec:
        data = dict(data)
        if data.get("gpt2_files"):
            data["gpt2_files"] = tuple(data["gpt2_files"])
        return cls(**data)


def tokenizers_dir() -> Optional[Path]:
    """The shared tokenizer files (``$BPE_FAST_BENCH_TOKENIZERS`` or ``tokenizers/`` beside the corpora)."""
    override = os.environ.get("BPE_FAST_BENCH_TOKENIZERS")
    if override:
        return Path(override) if Path(override).is_dir() else None
    root = corpus.data_dir()
    if root is None:
        return None
    candidate = root.parent / "tokenizers"
    return candidate if candidate.is_dir() else None


# ------------------------------------------------------------------------------------------ rank files


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

    Each token is BPE-encoded with the ranks below its own; the two parts left are its merge.
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    corpus._atomic_write_bytes(path, lines)
    return path


def read_tiktoken_file(path: Path) -> List[bytes]:
    tokens = []
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        encoded, rank = line.split()
        if int(rank) != len(tokens):
            raise ValueError(f"{path}:{number}: ranks must be 0, 1, 2, ... in order (got {int(rank)})")
        tokens.append(base64.b64decode(encoded))
    return tokens


# ------------------------------------------------------------------------------------------ tiktoken (reference)


def tiktoken_encoding(spec: VocabSpec):
    """tiktoken's Encoding for ``spec``, built from local files only."""
    import tiktoken
    import tiktoken.load

    if spec.openai_name is None:
        ranks = {token: rank for rank, token in enumerate(read_tiktoken_file(Path(spec.tiktoken_file)))}
        # The trained vocab uses the GPT-2 pattern; tiktoken spells it as r50k_pat_str.
        return tiktoken.Encoding(
            name=spec.name, pat_str=_openai_pattern("r50k_base"), mergeable_ranks=ranks, special_tokens={}
        )
    return tiktoken.Encoding(**openai_constructor_args(spec.openai_name, Path(spec.tiktoken_file)))


def _openai_pattern(openai_name: str) -> str:
    import tiktoken_ext.openai_public as openai_public

    if openai_name == "r50k_base":
        return openai_public.r50k_pat_str
    raise ValueError(openai_name)


def openai_constructor_args(openai_name: str, local_file: Path) -> dict:
    """tiktoken_ext.openai_public's arguments for ``openai_name`` with the ranks read from ``local_file``.

    openai_public's constructors name a URL and a sha256; the loader given to them here refuses any URL
    whose file name is not the local file's and checks the hash, so the result is exactly tiktoken's
    encoding (its own regex and special tokens) without any network access.
    """
    import tiktoken.load
    import tiktoken_ext.openai_public as openai_public

    def local_loader(url: str, expected_hash: Optional[str] = None):
        if url.rsplit("/", 1)[-1] != local_file.name:
            raise VocabUnavailable(f"{openai_name} wants {url}; only {local_file} is available offline")
        data = local_file.read_bytes()
        if expected_hash and hashlib.sha256(data).hexdigest() != expected_hash:
            raise VocabUnavailable(
                f"{local_file} is not the {openai_name} file tiktoken expects (sha256 differs)"
            )
        return tiktoken.load.load_tiktoken_bpe(str(local_file))

    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = local_loader
    try:
        return getattr(openai_public, openai_name)()
    finally:
        openai_public.load_tiktoken_bpe = original


# ------------------------------------------------------------------------------------------ specs


def _vocab_dir() -> Path:
    path = corpus.cache_dir() / "vocabs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _export_hf_json(name: str, tiktoken_file: Path, pattern: str, special_tokens: Dict[str, int]) -> Path:
    """``tokenizer.json`` for a rank file, written by bpe_fast's exporter (cached)."""
    target = _vocab_dir() / f"{name}.tokenizer.json"
    if not target.exists():
        try:
            import bpe_fast
            from bpe_fast.export import save_hf
        except ImportError as exc:
            raise VocabUnavailable(f"writing {target.name} needs bpe_fast ({exc})") from None
        tok = bpe_fast.Tokenizer.from_tiktoken(
            str(tiktoken_file), pattern=pattern, special_tokens=special_tokens
        )
        save_hf(tok, target)
    return target


def openai_spec(name: str) -> VocabSpec:
    """gpt2, cl100k or o200k from the shared tokenizer files (VocabUnavailable when absent)."""
    folder = tokenizers_dir()
    openai_name = OPENAI_NAMES[name]
    if folder is None:
        raise VocabUnavailable("shared tokenizer files not found (set BPE_FAST_BENCH_TOKENIZERS)")
    rank_file = folder / f"{openai_name}.tiktoken"
    if not rank_file.is_file():
        raise VocabUnavailable(f"{rank_file} not found")
    if name == "gpt2":
        from bpe_fast.samples import gpt2_dir

        hf_json = folder / "hf_gpt2" / "tokenizer.json"
        if not hf_json.is_file():
            raise VocabUnavailable(f"{hf_json} not found")
        bundled = gpt2_dir()
        return VocabSpec(
            name=name,
            tiktoken_file=str(rank_file),
            hf_json=str(hf_json),
            openai_name=openai_name,
            bpe_fast_pattern=BPE_FAST_PATTERNS[name],
            gpt2_files=(str(bundled / "encoder.json"), str(bundled / "vocab.bpe")),
            vocab_size=50257,
        )
    special = openai_constructor_args(openai_name, rank_file)["special_tokens"]
    hf_json = _export_hf_json(name, rank_file, BPE_FAST_PATTERNS[name], special)
    return VocabSpec(
        name=name,
        tiktoken_file=str(rank_file),
        hf_json=str(hf_json),
        openai_name=openai_name,
        bpe_fast_pattern=BPE_FAST_PATTERNS[name],
        vocab_size=max(special.values()) + 1,
    )


def trained_spec(train_corpus: Path, vocab_size: int = TRAINED_VOCAB_SIZE) -> VocabSpec:
    """The vocab bpe_fast trains on ``train_corpus`` (fed as the same ~64 KB blocks the other trainers get)."""
    name = f"trained{vocab_size // 1024}k"
    stem = f"{name}_{train_corpus.stem}"
    rank_file = _vocab_dir() / f"{stem}.tiktoken"
    if not rank_file.exists():
        try:
            import bpe_fast
        except ImportError as exc:
            raise VocabUnavailable(f"training the shared vocab needs bpe_fast ({exc})") from None
        tok = bpe_fast.train(corpus.iter_blocks(train_corpus), vocab_size, pattern="gpt2")
        special = set(tok.special_tokens.values())
        tokens = [tok.token_bytes(i) for i in range(tok.vocab_size) if i not in special]
        write_tiktoken_file(tokens, rank_file)
    hf_json = _export_hf_json(stem, rank_file, "gpt2", {})
    return VocabSpec(
        name="trained32k" if vocab_size == TRAINED_VOCAB_SIZE else name,
        tiktoken_file=str(rank_file),
        hf_json=str(hf_json),
        openai_name=None,
        bpe_fast_pattern="gpt2",
        train_corpus=str(train_corpus),
        vocab_size=vocab_size,
    )


def all_specs(train_corpus: Optional[Path]) -> Dict[str, object]:
    """{vocab name: VocabSpec or the reason it is unavailable}."""
    found: Dict[str, object] = {}
    for name in ("gpt2", "cl100k", "o200k"):
        try:
            found[name] = openai_spec(name)
        except VocabUnavailable as exc:
            found[name] = str(exc)
    if train_corpus is None:
        found["trained32k"] = "no training corpus"
    else:
        try:
            found["trained32k"] = trained_spec(train_corpus)
        except VocabUnavailable as exc:
            found["trained32k"] = str(exc)
    return found
