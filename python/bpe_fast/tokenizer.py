"""`Tokenizer`: the public face of a trained/loaded vocab, wrapping the Rust `_core.CoreTokenizer`.

Special-token policy is tiktoken's: `encode` raises on special-token text unless it is allowed;
`encode_ordinary` treats all text as ordinary. That check is done here, in Python, before Rust encodes.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Collection, Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

import regex

from . import vocab_io
from ._native import core
from .gpt2_files import read_gpt2_files
from .patterns import canonical_pattern

if TYPE_CHECKING:
    import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
SpecialSet = Union[Literal["all"], Collection[str]]

MAX_TOKEN_ID = 2**26 - 1
"""The largest token id the core accepts (rust/src/tokenizer.rs MAX_ID)."""

# Known tiktoken rank files: their pattern and special tokens (tiktoken_ext/openai_public.py), so that
# `from_tiktoken("cl100k_base.tiktoken")` needs no further arguments.
_TIKTOKEN_DEFAULTS: dict[str, tuple[str, dict[str, int]]] = {
    "r50k_base": ("gpt2", {"<|endoftext|>": 50256}),
    "p50k_base": ("gpt2", {"<|endoftext|>": 50256}),
    "cl100k_base": (
        "gpt4",
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": ("o200k", {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}


@lru_cache(maxsize=64)
def _special_finder(tokens: frozenset[str]) -> Any:
    # Longest first, so that at one position the longest special token is the one reported.
    ordered = sorted(tokens, key=lambda s: (-len(s), s))
    return regex.compile("|".join(regex.escape(s) for s in ordered))


def _loaded_numpy() -> Any:
    """numpy if something has imported it, else None. numpy is imported lazily (it is most of
    `import bpe_fast`'s time): a numpy array or scalar can only exist once numpy is loaded, so type
    checks need not import it."""
    return sys.modules.get("numpy")


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    np_ = _loaded_numpy()
    return np_ is not None and isinstance(value, np_.integer)


class Tokenizer:
    """An exact byte-level BPE tokenizer (DESIGN.md §3). Build one with `bpe_fast.train`, `bpe_fast.load`,
    `Tokenizer.gpt2()`, `Tokenizer.from_gpt2(...)`, `Tokenizer.from_tiktoken(...)` or `Tokenizer.from_parts`.
    """

    def __init__(self, core_tokenizer: Any) -> None:
        """Wrap a `_core.CoreTokenizer` (use the classmethods / `bpe_fast.train` / `bpe_fast.load` instead)."""
        self._core = core_tokenizer
        self._special_tokens: dict[str, int] = dict(core_tokenizer.special_tokens())
        self._merges: Optional[list[tuple[int, int]]] = None

    # ------------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def from_parts(
        cls,
        tokens: Union[dict[int, bytes], Iterable[tuple[int, bytes]]],
        merges: Sequence[tuple[int, int]],
        special_tokens: Optional[dict[str, int]] = None,
        pattern: str = "gpt2",
    ) -> Tokenizer:
        """Build from a vocab (id -> bytes for every non-special token), merges in rank order, special
        tokens (text -> id) and a pattern. Rust validates everything and raises ValueError on a bad entry."""
        items = sorted(tokens.items()) if isinstance(tokens, dict) else sorted(tokens)
        specials = sorted((special_tokens or {}).items(), key=lambda kv: kv[1])
        core_tokenizer = core().CoreTokenizer(
            [(int(i), bytes(b)) for i, b in items],
            [(int(a), int(b)) for a, b in merges],
            [(str(text), int(i)) for text, i in specials],
            canonical_pattern(pattern),
        )
        return cls(core_tokenizer)

    @classmethod
    def from_file(cls, path: PathLike, pattern: Optional[str] = None) -> Tokenizer:
        """Load a hex-JSON v1 vocab file or the report's bare {id: hex} map (DESIGN.md §4).

        `pattern` overrides the file's pattern; a bare map has none and defaults to "raw". A bare map's
        merges are recovered from the vocab (ValueError naming the token if that is impossible).
        """
        data = vocab_io.load_vocab(path, pattern=pattern)
        merges = data.merges
        if merges is None:
            try:
                merges = core().recover_merges(sorted(data.tokens.items()))
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        try:
            return cls.from_parts(data.tokens, merges, data.special_tokens, data.pattern)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    load = from_file

    @classmethod
    def from_gpt2(cls, encoder_json: PathLike, vocab_bpe: PathLike) -> Tokenizer:
        """GPT-2's own files; `<|endoftext|>` = 50256 is the special token, pattern "gpt2"."""
        tokens, merges, specials = read_gpt2_files(encoder_json, vocab_bpe)
        return cls.from_parts(tokens, merges, specials, "gpt2")

    @classmethod
    def gpt2(cls) -> Tokenizer:
        """GPT-2's tokenizer from the files bundled in the package (encodes exactly like tiktoken's gpt2)."""
        return _bundled_gpt2()

    @classmethod
    def from_tiktoken(
        cls,
        path: PathLike,
        pattern: Optional[str] = None,
        special_tokens: Optional[dict[str, int]] = None,
    ) -> Tokenizer:
        """A tiktoken rank file ("base64 rank" per line); the rank is the token id and the merges are
        recovered from the ranks. For the known files (r50k_base, p50k_base, cl100k_base, o200k_base)
        `pattern` and `special_tokens` default to tiktoken's; otherwise `pattern` is required."""
        path = Path(path)
        known = _TIKTOKEN_DEFAULTS.get(path.name.split(".")[0])
        if pattern is None:
            if known is None:
                raise ValueError(
                    f"{path}: unknown tiktoken file, pass pattern= (e.g. 'gpt2', 'gpt4', 'o200k')"
                )
            pattern = known[0]
        if special_tokens is None:
            special_tokens = dict(known[1]) if known is not None else {}
        if path.is_dir():
            raise ValueError(f"{path}: is a directory, not a tiktoken rank file")
        specials = sorted(special_tokens.items(), key=lambda kv: kv[1])
        core_tokenizer = core().CoreTokenizer.from_tiktoken_file(
            str(path), [(str(text), int(i)) for text, i in specials], canonical_pattern(pattern)
        )
        return cls(core_tokenizer)

    # ------------------------------------------------------------------------------------------------
    # properties
    # ------------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Max id + 1 over tokens and special tokens (like tiktoken's n_vocab)."""
        return self._core.vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_tokens)

    @property
    def merges(self) -> list[tuple[int, int]]:
        """(left_id, right_id) in rank order."""
        if self._merges is None:
            self._merges = [tuple(pair) for pair in self._core.merges()]
        return list(self._merges)

    @property
    def pattern(self) -> str:
        return self._core.pattern

    def tokens(self) -> dict[int, bytes]:
        """Every non-special token: id -> bytes."""
        return dict(self._core.tokens())

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token gives its UTF-8 text). ValueError for an unknown id."""
        self._check_id_type(token_id, 0)
        return self._core.token_bytes(int(token_id))

    id_to_bytes = token_bytes

    # ------------------------------------------------------------------------------------------------
    # encoding
    # ------------------------------------------------------------------------------------------------

    def _allowed_list(
        self,
        text_or_texts: Union[str, Sequence[str]],
        allowed_special: SpecialSet,
        disallowed_special: SpecialSet,
    ) -> list[str]:
        """tiktoken's policy: the allowed special tokens, after raising on disallowed special text."""
        specials = set(self._special_tokens)
        if allowed_special == "all":
            allowed = specials
        elif isinstance(allowed_special, str):
            raise ValueError(f"allowed_special must be 'all' or a set of strings, got {allowed_special!r}")
        else:
            allowed = set(allowed_special) & specials  # unknown names are ignored, as tiktoken does
        if disallowed_special == "all":
            disallowed = specials - allowed
        elif isinstance(disallowed_special, str):
            raise ValueError(
                f"disallowed_special must be 'all' or a set of strings, got {disallowed_special!r}"
            )
        else:
            disallowed = set(disallowed_special)
        if disallowed:
            finder = _special_finder(frozenset(disallowed))
            texts = [text_or_texts] if isinstance(text_or_texts, str) else text_or_texts
            for index, text in enumerate(texts):
                if not isinstance(text, str):
                    self._check_text(text, f"texts[{index}]")
                match = finder.search(text)
                if match:
                    where = f"character {match.start()}" + (
                        "" if isinstance(text_or_texts, str) else f" of text {index}"
                    )
                    raise ValueError(
                        f"Encountered text corresponding to disallowed special token {match.group(0)!r} at {where}.\n"
                        f"If you want this text to be encoded as a special token, pass it to `allowed_special`, "
                        f"e.g. `allowed_special={{{match.group(0)!r}, ...}}`.\n"
                        "If you want this text to be encoded as normal text, disable the check for this token "
                        "by passing `disallowed_special=(enc.special_tokens_set - {...})`.\n"
                        "To disable this check for all special tokens, pass `disallowed_special=()`."
                    )
        return sorted(allowed)

    @staticmethod
    def _check_text(text: Any, what: str = "text") -> None:
        if not isinstance(text, str):
            raise TypeError(f"{what} must be a str, got {type(text).__name__}")

    def encode(
        self,
        text: str,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
        *,
        num_threads: Optional[int] = None,
    ) -> list[int]:
        """Token ids of `text`. Special-token text raises ValueError unless allowed (tiktoken's policy).

        A text of 256 KiB or more is encoded in parts on `num_threads` threads (None: all cores), cut
        only where chunking is known to restart, so the ids are the same for any thread count."""
        self._check_text(text)
        allowed = self._allowed_list(text, allowed_special, disallowed_special)
        return self._core.encode(text, allowed, _threads(num_threads))

    def encode_ordinary(self, text: str, *, num_threads: Optional[int] = None) -> list[int]:
        """Token ids of `text`, treating special-token text as ordinary text (threads as in `encode`)."""
        self._check_text(text)
        return self._core.encode_ordinary(text, _threads(num_threads))

    def encode_batch(
        self,
        texts: Iterable[str],
        *,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
        num_threads: Optional[int] = None,
    ) -> list[list[int]]:
        """`encode` of every text, in parallel in Rust (GIL released); all cores unless num_threads is given."""
        # Rust checks that every text is a str (TypeError naming its index); a per-text Python loop
        # here was a tenth of a batch of short strings. The disallowed-special scan checks as it goes.
        _refuse_one_str(texts, "encode_batch")
        texts = texts if isinstance(texts, list) else list(texts)
        allowed = self._allowed_list(texts, allowed_special, disallowed_special)
        return self._core.encode_batch(texts, allowed, _threads(num_threads))

    def encode_ordinary_batch(
        self, texts: Iterable[str], *, num_threads: Optional[int] = None
    ) -> list[list[int]]:
        """`encode_ordinary` of every text, in parallel."""
        _refuse_one_str(texts, "encode_ordinary_batch")
        return self.encode_batch(texts, disallowed_special=(), num_threads=num_threads)

    def encode_batch_flat(
        self,
        texts: Iterable[str],
        *,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
        num_threads: Optional[int] = None,
        prefix_id: Optional[int] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`encode_batch` for bulk users: `(ids, offsets)` numpy arrays, with no Python int per token.

        `ids` (uint32) holds every text's tokens back to back, each text preceded by `prefix_id` when one
        is given (e.g. the end-of-text id that separates documents in shards); `offsets` (int64, one
        longer than `texts`) gives text k as ``ids[offsets[k]:offsets[k + 1]]``, prefix included."""
        import numpy as np

        _refuse_one_str(texts, "encode_batch_flat")
        texts = texts if isinstance(texts, list) else list(texts)
        allowed = self._allowed_list(texts, allowed_special, disallowed_special)
        prefix = None if prefix_id is None else int(prefix_id)
        ids_bytes, ends_bytes = self._core.encode_batch_to_buffer(
            texts, allowed, _threads(num_threads), prefix
        )
        ids = np.frombuffer(ids_bytes, dtype="<u4").astype(np.uint32, copy=False)
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        offsets[1:] = np.frombuffer(ends_bytes, dtype="<u8")
        return ids, offsets

    def encode_to_numpy(
        self,
        text: str,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
        *,
        num_threads: Optional[int] = None,
    ) -> np.ndarray:
        """`encode` as a read-only np.uint32 array, built without a Python int per token."""
        self._check_text(text)
        buffer = self._core.encode_to_buffer(
            text, self._allowed_list(text, allowed_special, disallowed_special), _threads(num_threads)
        )
        import numpy as np

        return np.frombuffer(buffer, dtype="<u4").astype(np.uint32, copy=False)

    # ------------------------------------------------------------------------------------------------
    # decoding
    # ------------------------------------------------------------------------------------------------

    def _check_id_type(self, token_id: Any, position: int) -> None:
        if not _is_int(token_id):
            raise TypeError(f"token id at position {position} is {token_id!r}, not an int")

    def decode_bytes(self, ids: Union[Iterable[int], np.ndarray]) -> bytes:
        """The exact bytes of `ids` (a list/tuple/iterable of ints or a numpy integer array).

        ValueError naming the first unknown id (negative and too-large ids included) or non-int item,
        with its position."""
        np_ = _loaded_numpy()
        if np_ is not None and isinstance(ids, np_.ndarray):
            return self._decode_array(ids)
        # Rust reads lists and tuples by index and any other iterable item by item.
        return self._core.decode_bytes(ids)

    def _decode_array(self, ids: np.ndarray) -> bytes:
        import numpy as np

        if ids.ndim != 1:
            ids = ids.reshape(-1)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"token ids must be an integer array, got dtype {ids.dtype}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= 2**32):
            # Casting would wrap silently: name the first id that does not fit instead.
            position = int(np.flatnonzero((ids < 0) | (ids >= 2**32))[0])
            raise ValueError(f"unknown token id {int(ids[position])} at position {position}")
        return self._core.decode_buffer(np.ascontiguousarray(ids, dtype="<u4").tobytes())

    def decode(self, ids: Union[Iterable[int], np.ndarray], errors: str = "replace") -> str:
        """Text of `ids`; bytes that are not valid UTF-8 are handled by `errors` (as in bytes.decode)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ------------------------------------------------------------------------------------------------
    # saving, pickling, display
    # ------------------------------------------------------------------------------------------------

    def save(self, path: PathLike, bare: bool = False) -> Path:
        """Write hex-JSON v1 atomically; `bare=True` writes the report's {id: hex} map instead (which keeps
        neither merges, pattern nor special tokens: loading it recovers the merges)."""
        if bare:
            if self._special_tokens:
                warnings.warn(
                    f"the bare {{id: hex}} map has no place for special tokens: {sorted(self._special_tokens)} "
                    "are not saved",
                    stacklevel=2,
                )
            return vocab_io.save_bare(path, self.tokens())
        return vocab_io.save_vocab(path, self.tokens(), self.merges, self._special_tokens, self.pattern)

    def to_json_text(self) -> str:
        """The hex-JSON v1 text `save` writes."""
        return vocab_io.format_vocab(self.tokens(), self.merges, self._special_tokens, self.pattern)

    def __getstate__(self) -> dict[str, Any]:
        # The Rust object does not pickle; its parts do (needed for multiprocessing data loaders).
        return {
            "tokens": self._core.tokens(),
            "merges": self.merges,
            "special_tokens": self._special_tokens,
            "pattern": self.pattern,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        rebuilt = Tokenizer.from_parts(
            state["tokens"], state["merges"], state["special_tokens"], state["pattern"]
        )
        self.__dict__.update(rebuilt.__dict__)

    def __repr__(self) -> str:
        pattern = self.pattern if len(self.pattern) <= 40 else self.pattern[:37] + "..."
        return (
            f"Tokenizer(pattern={pattern!r}, vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={self._special_tokens!r})"
        )


def _refuse_one_str(texts: Any, method: str) -> None:
    # A str is an iterable of str, so without this check "ABC" would encode as three texts.
    if isinstance(texts, (str, bytes, bytearray)):
        raise TypeError(
            f"{method}(texts) takes a list of str, not one {type(texts).__name__}: "
            f"pass [text], or use encode() for a single text"
        )


def _threads(num_threads: Optional[int]) -> int:
    if num_threads is None:
        return 0  # Rust: all cores
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    return num_threads


@lru_cache(maxsize=1)
def _bundled_gpt2() -> Tokenizer:
    folder = resources.files("bpe_fast") / "gpt2"
    with (
        resources.as_file(folder / "encoder.json") as encoder,
        resources.as_file(folder / "vocab.bpe") as merges,
    ):
        return Tokenizer.from_gpt2(encoder, merges)


def bundled_gpt2_paths() -> tuple[Path, Path]:
    """Paths of the bundled encoder.json and vocab.bpe (for building tiktoken's own gpt2 in tests/exports)."""
    folder = Path(__file__).resolve().parent / "gpt2"
    return folder / "encoder.json", folder / "vocab.bpe"
