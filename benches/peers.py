"""One small adapter per encoder: bpe_fast and its peers, loaded offline over one vocabulary.

Every adapter returns what a Python user gets: ``encode(text) -> list[int]``, ``encode_batch(texts) ->
list[list[int]]`` and ``decode_bytes(ids) -> bytes``, with the conversion each peer needs to give that
inside the timed call (``CALLS`` says exactly which call and conversion; docs/BENCHMARKS.md repeats it).
The batch thread count is fixed when the adapter is built (``threads``), because several peers size their
thread pools once per process from the environment; benches/encode_worker.py builds each adapter in a fresh
process whose environment and CPU affinity were set first.

A peer that is not installed, or cannot load a vocabulary offline, raises :class:`PeerUnavailable` with a
one-line reason; the report shows "not available" and that reason.
Trainers are in benches/trainers.py.
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from benches import corpus, vocabs
from benches.vocabs import (  # noqa: F401  (re-exported: older callers import them from here)
    GPT2_PATTERN,
    VocabSpec,
    bytes_to_unicode,
    read_tiktoken_file,
    recover_merges,
    write_tiktoken_file,
)

US = "bpe_fast"
REFERENCE = "tiktoken"
ENCODERS = (
    "bpe_fast",
    "tiktoken",
    "hf_tokenizers",
    "rustbpe",
    "fastokens",
    "wordchipper",
    "tokie",
    "kitoken",
    "bpe_openai",
    "rs_bpe",
)
# The distribution (pip) name of each peer, for versions and the `bench` extra.
DISTRIBUTIONS = {
    "bpe_fast": "bpe-fast",
    "tiktoken": "tiktoken",
    "hf_tokenizers": "tokenizers",
    "rustbpe": "rustbpe",
    "fastokens": "fastokens",
    "wordchipper": "wordchipper",
    "tokie": "tokie",
    "kitoken": "kitoken",
    "bpe_openai": "bpe-openai",
    "rs_bpe": "rs-bpe",
    "bpeasy": "bpeasy",
    "gigabpe": "gigabpe",
    "ffbpe": "ffbpe",
}
MODULES = {"hf_tokenizers": "tokenizers", "bpe_fast_texts": "bpe_fast"}

# Thread settings every peer reads (checked in each peer's source): rayon's pool size (HF tokenizers,
# rustbpe, wordchipper, rs-bpe, ffbpe, bpeasy), HF's switch, fastokens' own pool. Pools are sized once per
# process, so the environment is set before any of them is imported.
THREAD_ENV_VARS = ("RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS", "FASTOKENS_BPE_THREADS")

# Exactly what each timed call is, and what it costs to turn its result into list[int] / bytes.
CALLS: Dict[str, Dict[str, str]] = {
    "bpe_fast": {
        "encode": "`tok.encode_ordinary(text)` -> list[int]",
        "batch": "`tok.encode_ordinary_batch(texts, num_threads=N)` -> list[list[int]]",
        "decode": "`tok.decode_bytes(ids)` -> bytes",
        "load": "`Tokenizer.gpt2()` / `Tokenizer.from_tiktoken(path, pattern=...)`",
    },
    "tiktoken": {
        "encode": "`enc.encode_ordinary(text)` -> list[int]",
        "batch": "`enc.encode_ordinary_batch(texts, num_threads=N)` -> list[list[int]]",
        "decode": "`enc.decode_bytes(ids)` -> bytes",
        "load": "`tiktoken.Encoding(...)` from the local ranks (GPT-2: `data_gym_to_mergeable_bpe_ranks`)",
    },
    "hf_tokenizers": {
        "encode": "`tok.encode(text, add_special_tokens=False).ids` -> list[int]",
        "batch": "`[e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]` (rayon pool)",
        "decode": "`tok.decode(ids).encode()` (returns str)",
        "load": "`Tokenizer.from_file(tokenizer.json)`",
    },
    "rustbpe": {
        "encode": "`tok.encode(text)` -> list[int]",
        "batch": "`tok.batch_encode(texts)` -> list[list[int]] (rayon pool)",
        "decode": "`tok.decode(ids).encode()` (returns str)",
        "load": "cannot load a vocab: trains its own on the same corpus (not timed as loading)",
    },
    "fastokens": {
        "encode": "`tok.encode_ordinary(text).ids` (Encoding object)",
        "batch": "`[e.ids for e in tok.encode_batch(texts)]` (own pool, FASTOKENS_BPE_THREADS)",
        "decode": "`tok.decode(ids).encode()` (returns str)",
        "load": "`Tokenizer.from_tiktoken(path, encoding=NAME | pattern=...)` / `from_file(tokenizer.json)`",
    },
    "wordchipper": {
        "encode": "`tok.encode(text)` -> list[int]",
        "batch": "`tok.encode_batch(texts)` with `TokenizerOptions.set_parallel(True)` (rayon pool)",
        "decode": "`tok.decode_bytes(ids)` -> bytes",
        "load": "`Tokenizer.from_pretrained(NAME)` with the local NAME.tiktoken in its cache folder",
    },
    "tokie": {
        "encode": "`tok.encode(text, add_special_tokens=False).ids` (Encoding object)",
        "batch": "`[e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]` (threads = cores)",
        "decode": "`tok.decode_bytes(ids)` -> bytes",
        "load": "`Tokenizer.from_json(tokenizer.json)`",
    },
    "kitoken": {
        "encode": "`tok.encode(text)` -> list[int]",
        "batch": "`tok.encode_all(texts)` -> list[list[int]]",
        "decode": "`tok.decode(ids)` -> bytes",
        "load": "`Kitoken.from_tiktoken_file(path)` (OpenAI vocabs) / `from_tokenizers_file(tokenizer.json)`",
    },
    "bpe_openai": {
        "encode": "`enc.encode_ordinary(text)` -> list[int]",
        "batch": "`enc.encode_ordinary_batch(texts, num_threads=N)` (a Python thread pool)",
        "decode": "`enc.decode_bytes(ids)` -> bytes",
        "load": "`bpe_openai.get_encoding(NAME)` (its bundled cl100k/o200k data)",
    },
    "rs_bpe": {
        "encode": "`tok.encode(text)` -> list[int]",
        "batch": "`tok.encode_batch_parallel(texts, ParallelOptions(None, None, N))[0]`",
        "decode": "`tok.decode(ids).encode()` (returns str)",
        "load": "`rs_bpe.bpe.openai.cl100k_base()` / `o200k_base()` (bundled data)",
    },
}


class PeerUnavailable(Exception):
    """The peer is not installed or cannot load this vocabulary offline (a one-line reason)."""


class NotSupported(Exception):
    """The peer has no API for this measurement (e.g. threads inside one encode call)."""


def thread_env(threads: int) -> Dict[str, str]:
    """Environment that pins every peer of a fresh process to ``threads`` threads."""
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    env["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    return env


def import_peer(name: str):
    """Imports a peer's module; PeerUnavailable (not a traceback) when it is not installed."""
    module = MODULES.get(name, name)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerUnavailable(f"not installed ({type(exc).__name__}: {exc})") from None


def versions() -> Dict[str, str]:
    """Installed versions of every compared package ("not installed" when absent)."""
    from importlib import metadata

    found = {}
    for dist in dict.fromkeys(DISTRIBUTIONS.values()):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    spec = importlib.util.find_spec("bpe_fast")
    if spec is not None and spec.origin:
        found["bpe_fast imported from"] = str(Path(spec.origin).parent)
    return found


def bpe_fast_available() -> bool:
    """True when the Rust extension is built and GPT-2's tokenizer loads."""
    try:
        import bpe_fast

        bpe_fast.Tokenizer.gpt2()
    except Exception:  # any failure means "not ready", reported by the caller
        return False
    return True


# ---------------------------------------------------------------------------------------------- adapters


class Encoder:
    """One peer over one vocab. ``threads``: what its batch call uses (fixed at construction)."""

    name = "?"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def encode(self, text: str) -> List[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str], threads: Optional[int] = None) -> List[List[int]]:
        raise NotImplementedError

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        raise NotImplementedError

    def encode_with_threads(self, text: str, threads: int) -> List[int]:
        """One encode call using ``threads`` threads; NotSupported for peers without such a parameter."""
        raise NotSupported(f"{self.name} has no thread count for one encode call")


class BpeFastEncoder(Encoder):
    name = "bpe_fast"

    def __init__(self, tok, threads: int = 1):
        super().__init__(threads)
        self.tok = tok
        # The lead adds num_threads= to encode/encode_ordinary; older builds have none (then "not supported").
        self.has_num_threads = "num_threads" in inspect.signature(tok.encode_ordinary).parameters

    def encode(self, text):
        if self.has_num_threads:
            return self.tok.encode_ordinary(text, num_threads=self.threads)
        return self.tok.encode_ordinary(text)

    def encode_batch(self, texts, threads=None):
        return self.tok.encode_ordinary_batch(texts, num_threads=threads or self.threads)

    def decode_bytes(self, ids):
        return self.tok.decode_bytes(ids)

    def encode_with_threads(self, text, threads):
        if not self.has_num_threads:
            raise NotSupported("this bpe_fast build's encode_ordinary takes no num_threads")
        return self.tok.encode_ordinary(text, num_threads=threads)


class TiktokenEncoder(Encoder):
    name = "tiktoken"

    def __init__(self, encoding, threads: int = 1):
        super().__init__(threads)
        self.encoding = encoding

    def encode(self, text):
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts, threads=None):
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=threads or self.threads)

    def decode_bytes(self, ids):
        return self.encoding.decode_bytes(ids)


class HfEncoder(Encoder):
    name = "hf_tokenizers"

    def __init__(self, tok, threads: int = 1):
        super().__init__(threads)
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts, threads=None):
        # encode_batch_fast skips offset tracking: HF's fastest batch path.
        return [e.ids for e in self.tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode_bytes(self, ids):
        return self.tok.decode(ids, skip_special_tokens=False).encode("utf-8")


class RustbpeEncoder(Encoder):
    name = "rustbpe"

    def __init__(self, tok, threads: int = 1):
        super().__init__(threads)
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text)

    def encode_batch(self, texts, threads=None):
        return self.tok.batch_encode(list(texts))

    def decode_bytes(self, ids):
        return self.tok.decode(ids).encode("utf-8")


class FastokensEncoder(Encoder):
    name = "fastokens"

    def __init__(self, tok, threads: int = 1):
        super().__init__(threads)
        self.tok = tok

    def encode(self, text):
        return self.tok.encode_ordinary(text).ids

    def encode_batch(self, texts, threads=None):
        return [e.ids for e in self.tok.encode_batch(list(texts))]

    def decode_bytes(self, ids):
        return self.tok.decode(ids).encode("utf-8")


class WordchipperEncoder(Encoder):
    name = "wordchipper"

    def __init__(self, tok, threads: int = 1):
        super().__init__(threads)
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text)

    def encode_batch(self, texts, threads=None):
        return self.tok.encode_batch(list(texts))

    def decode_bytes(self, ids):
        return self.tok.decode_bytes(ids)


class TokieEncoder(Encoder):
    name = "tokie"

    def __init__(self, tok, threads: int = 1):
        super().__init__(threads)
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts, threads=None):
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode_bytes(self, ids):
        return self.tok.decode_bytes(ids)


class KitokenEncoder(Encoder):
    name = "kitoken"

    def __init__(self, tok, threads: int = 1):
        super().__init__(threads)
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text)

    def encode_batch(self, texts, threads=None):
        return self.tok.encode_all(list(texts))

    def decode_bytes(self, ids):
        return self.tok.decode(ids)


class BpeOpenaiEncoder(TiktokenEncoder):
    """bpe-openai's Encoding mirrors tiktoken's API (encode_ordinary, the batch call, decode_bytes)."""

    name = "bpe_openai"


class RsBpeEncoder(Encoder):
    name = "rs_bpe"

    def __init__(self, tok, options_class, threads: int = 1):
        super().__init__(threads)
        self.tok = tok
        self.options_class = options_class

    def encode(self, text):
        return self.tok.encode(text)

    def encode_batch(self, texts, threads=None):
        # (min_batch_size, chunk_size, max_threads); the call returns (tokens, total, time, threads_used).
        options = self.options_class(None, None, threads or self.threads)
        return self.tok.encode_batch_parallel(list(texts), options)[0]

    def decode_bytes(self, ids):
        decoded = self.tok.decode(ids)
        if decoded is None:
            raise ValueError("rs_bpe could not decode the ids")
        return decoded.encode("utf-8")


# ---------------------------------------------------------------------------------------------- loaders


def _load_bpe_fast(spec: VocabSpec, threads: int) -> Encoder:
    bpe_fast = import_peer("bpe_fast")
    if spec.name == "gpt2":
        return BpeFastEncoder(bpe_fast.Tokenizer.gpt2(), threads)
    special = None if spec.openai_name else {}
    tok = bpe_fast.Tokenizer.from_tiktoken(
        spec.tiktoken_file, pattern=spec.bpe_fast_pattern, special_tokens=special
    )
    return BpeFastEncoder(tok, threads)


def _load_tiktoken(spec: VocabSpec, threads: int) -> Encoder:
    import_peer("tiktoken")
    if spec.gpt2_files:
        import tiktoken
        import tiktoken.load

        encoder_json, vocab_bpe = spec.gpt2_files
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=vocab_bpe, encoder_json_file=encoder_json
        )
        args = vocabs.openai_constructor_args("r50k_base", Path(spec.tiktoken_file))
        args.update(name="gpt2_local", mergeable_ranks=ranks)
        return TiktokenEncoder(tiktoken.Encoding(**args), threads)
    return TiktokenEncoder(vocabs.tiktoken_encoding(spec), threads)


def _load_hf(spec: VocabSpec, threads: int) -> Encoder:
    tokenizers = import_peer("hf_tokenizers")
    return HfEncoder(tokenizers.Tokenizer.from_file(spec.hf_json), threads)


def _load_rustbpe(spec: VocabSpec, threads: int) -> Encoder:
    if spec.train_corpus is None:
        raise PeerUnavailable("rustbpe cannot load a vocab; it encodes only with one it trained itself")
    rustbpe = import_peer("rustbpe")
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(
        corpus.iter_blocks(Path(spec.train_corpus)), spec.vocab_size, buffer_size=128, pattern=GPT2_PATTERN
    )
    learned = [token for token, _rank in sorted(tok.get_mergeable_ranks(), key=lambda item: item[1])]
    if learned != read_tiktoken_file(Path(spec.tiktoken_file)):
        raise PeerUnavailable("rustbpe's own training on the same corpus gives a different vocab")
    return RustbpeEncoder(tok, threads)


def _load_fastokens(spec: VocabSpec, threads: int) -> Encoder:
    fastokens = import_peer("fastokens")
    if spec.name == "gpt2":
        return FastokensEncoder(fastokens.Tokenizer.from_file(spec.hf_json), threads)
    if spec.openai_name:
        return FastokensEncoder(
            fastokens.Tokenizer.from_tiktoken(spec.tiktoken_file, encoding=spec.openai_name), threads
        )
    tok = fastokens.Tokenizer.from_tiktoken(
        spec.tiktoken_file, pattern=vocabs._openai_pattern("r50k_base"), special_tokens={}
    )
    return FastokensEncoder(tok, threads)


def wordchipper_cache(spec: VocabSpec) -> Path:
    """A wordchipper cache folder holding the vocab's ranks where ``from_pretrained`` looks for them.

    wordchipper reads ``$WORDCHIPPER_CACHE_DIR/openai/NAME/NAME.tiktoken`` and, when the file is absent,
    downloads it (offline: silently falls back to raw bytes). The trained vocab uses the GPT-2 pattern, so
    it is placed as r50k_base (whose pattern is GPT-2's); its ids are checked like every other peer's.
    """
    openai_name = spec.openai_name or "r50k_base"
    folder = corpus.cache_dir() / "wordchipper" / spec.name
    target = folder / "openai" / openai_name / f"{openai_name}.tiktoken"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(spec.tiktoken_file, tmp)
        os.replace(tmp, target)
    return folder


def _load_wordchipper(spec: VocabSpec, threads: int) -> Encoder:
    os.environ["WORDCHIPPER_CACHE_DIR"] = str(wordchipper_cache(spec))
    wordchipper = import_peer("wordchipper")
    options = wordchipper.TokenizerOptions.default()
    options.set_parallel(threads > 1)
    tok = wordchipper.Tokenizer.from_pretrained(spec.openai_name or "r50k_base", options)
    expected = len(read_tiktoken_file(Path(spec.tiktoken_file)))
    if tok.vocab_size != expected:
        raise PeerUnavailable(f"wordchipper loaded {tok.vocab_size} tokens, not the file's {expected}")
    return WordchipperEncoder(tok, threads)


def _load_tokie(spec: VocabSpec, threads: int) -> Encoder:
    tokie = import_peer("tokie")
    return TokieEncoder(tokie.Tokenizer.from_json(spec.hf_json), threads)


def _load_kitoken(spec: VocabSpec, threads: int) -> Encoder:
    kitoken = import_peer("kitoken")
    if spec.openai_name and spec.name != "gpt2":
        return KitokenEncoder(kitoken.Kitoken.from_tiktoken_file(spec.tiktoken_file), threads)
    return KitokenEncoder(kitoken.Kitoken.from_tokenizers_file(spec.hf_json), threads)


def _load_bpe_openai(spec: VocabSpec, threads: int) -> Encoder:
    if spec.name not in ("cl100k", "o200k"):
        # Its gpt2 goes through tiktoken_ext, which downloads; it cannot load other rank files.
        raise PeerUnavailable("bpe-openai loads only its bundled cl100k/o200k offline")
    bpe_openai = import_peer("bpe_openai")
    return BpeOpenaiEncoder(bpe_openai.get_encoding(spec.openai_name), threads)


def _load_rs_bpe(spec: VocabSpec, threads: int) -> Encoder:
    if spec.name not in ("cl100k", "o200k"):
        raise PeerUnavailable("rs-bpe ships only cl100k/o200k and loads no other vocab")
    import_peer("rs_bpe")
    from rs_bpe.bpe import openai as rs_openai

    return RsBpeEncoder(getattr(rs_openai, spec.openai_name)(), rs_openai.ParallelOptions, threads)


LOADERS: Dict[str, Callable[[VocabSpec, int], Encoder]] = {
    "bpe_fast": _load_bpe_fast,
    "tiktoken": _load_tiktoken,
    "hf_tokenizers": _load_hf,
    "rustbpe": _load_rustbpe,
    "fastokens": _load_fastokens,
    "wordchipper": _load_wordchipper,
    "tokie": _load_tokie,
    "kitoken": _load_kitoken,
    "bpe_openai": _load_bpe_openai,
    "rs_bpe": _load_rs_bpe,
}


def load_encoder(peer: str, spec: VocabSpec, threads: int = 1) -> Encoder:
    """``peer`` over ``spec``; PeerUnavailable with a one-line reason when it cannot be had offline."""
    if peer not in LOADERS:
        raise ValueError(f"unknown encoder {peer!r}; expected one of {', '.join(ENCODERS)}")
    try:
        return LOADERS[peer](spec, threads)
    except (PeerUnavailable, vocabs.VocabUnavailable):
        raise
    except Exception as exc:  # a peer that fails to load is reported, not a crash of the report
        raise PeerUnavailable(f"failed to load: {type(exc).__name__}: {str(exc)[:200]}") from None


# ---------------------------------------------------------------------------------------------- checks


def first_difference(ids: Sequence[int], reference: Sequence[int]) -> Optional[str]:
    """None when equal; else where and how ``ids`` differ from ``reference`` (one line)."""
    if len(ids) == len(reference) and list(ids) == list(reference):
        return None
    first = next(
        (pos for pos, (a, b) in enumerate(zip(ids, reference)) if a != b), min(len(ids), len(reference))
    )
    return f"differ from {REFERENCE} at token {first} ({len(ids)} vs {len(reference)} tokens)"


def check_identical(encoders: Dict[str, Encoder], texts: Sequence[str]) -> Dict[str, str]:
    """Encodes ``texts`` with every encoder and compares with tiktoken (or the first); {peer: problem}.

    Also checks that decoding gives the input back, so a fast-but-wrong peer cannot slip into a table.
    """
    problems: Dict[str, str] = {}
    names = list(encoders)
    reference_name = REFERENCE if REFERENCE in encoders else names[0]
    for index, text in enumerate(texts):
        reference = encoders[reference_name].encode(text)
        for name in names:
            if name in problems:
                continue
            ids = reference if name == reference_name else encoders[name].encode(text)
            difference = first_difference(ids, reference)
            if difference is not None:
                problems[name] = f"text {index}: ids {difference}".replace(REFERENCE, reference_name)
            elif encoders[name].decode_bytes(ids) != text.encode("utf-8"):
                problems[name] = f"text {index}: decode(encode(text)) != text"
    return problems


# ---------------------------------------------------------------------------------------------- pytest suites
# The pytest-benchmark suites (benches/bench_*.py) run in one process with the peers that need no
# retraining: these keep their older entry points.


def gpt2_encoders(include_us: bool = True, threads: int = 2) -> Dict[str, Encoder]:
    """bpe_fast, tiktoken and HF tokenizers over GPT-2 (the files bundled with bpe_fast, for HF via export)."""
    from bpe_fast.samples import gpt2_dir

    bundled = gpt2_dir()
    spec = VocabSpec(
        name="gpt2",
        tiktoken_file="",
        hf_json="",
        openai_name="r50k_base",
        bpe_fast_pattern="gpt2",
        gpt2_files=(str(bundled / "encoder.json"), str(bundled / "vocab.bpe")),
    )
    import tiktoken
    import tiktoken.load
    import tiktoken_ext.openai_public as openai_public
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    encoders: Dict[str, Encoder] = {}
    if include_us:
        encoders["bpe_fast"] = _load_bpe_fast(spec, threads)
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=spec.gpt2_files[1], encoder_json_file=spec.gpt2_files[0]
    )
    encoders["tiktoken"] = TiktokenEncoder(
        tiktoken.Encoding(
            name="gpt2_local",
            pat_str=openai_public.r50k_pat_str,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": 50256},
            explicit_n_vocab=50257,
        ),
        threads,
    )
    hf = Tokenizer(models.BPE.from_file(*spec.gpt2_files))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    encoders["hf_tokenizers"] = HfEncoder(hf, threads)
    return encoders


def _hf_gpt2_pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def ranks_encoders(
    tokens: Sequence[bytes], tiktoken_file: Path, rustbpe_tok=None, include_us: bool = True, threads: int = 2
) -> Dict[str, Encoder]:
    """bpe_fast, tiktoken, HF (and rustbpe when its tokenizer is given) over one trained vocab."""
    import tiktoken
    import tiktoken_ext.openai_public as openai_public
    from tokenizers import Tokenizer, decoders, models

    write_tiktoken_file(tokens, tiktoken_file)
    encoders: Dict[str, Encoder] = {}
    if include_us:
        import bpe_fast

        encoders["bpe_fast"] = BpeFastEncoder(
            bpe_fast.Tokenizer.from_tiktoken(str(tiktoken_file), pattern="gpt2", special_tokens={}), threads
        )
    encoders["tiktoken"] = TiktokenEncoder(
        tiktoken.Encoding(
            name=Path(tiktoken_file).stem,
            pat_str=openai_public.r50k_pat_str,
            mergeable_ranks={token: rank for rank, token in enumerate(tokens)},
            special_tokens={},
        ),
        threads,
    )
    alphabet = bytes_to_unicode()
    vocab = {"".join(alphabet[b] for b in token): rank for rank, token in enumerate(tokens)}
    merges = [
        ("".join(alphabet[b] for b in a), "".join(alphabet[b] for b in b_))
        for a, b_ in recover_merges(tokens)
    ]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = _hf_gpt2_pre_tokenizer()
    hf.decoder = decoders.ByteLevel()
    encoders["hf_tokenizers"] = HfEncoder(hf, threads)
    if rustbpe_tok is not None:
        encoders["rustbpe"] = RustbpeEncoder(rustbpe_tok, threads)
    return encoders


def train_rustbpe_vocab(path: Path, vocab_size: int):
    """Trains a vocab with rustbpe; returns (rustbpe tokenizer, tokens by id)."""
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(corpus.iter_blocks(path), vocab_size, buffer_size=128, pattern=GPT2_PATTERN)
    tokens = [token for token, _rank in sorted(tok.get_mergeable_ranks(), key=lambda item: item[1])]
    return tok, tokens
