"""Vocab files: the hex-JSON v1 format and the course report's bare {id: hex} map (DESIGN.md §4).

Only the file format lives here: reading, validating and writing. Building a tokenizer (and recovering
the merges a bare map lacks) is `tokenizer.py`'s job.

Hex: written lowercase; read in either case (the report's map is lowercase, hand-edited files may not
be). Anything else (odd length, empty, spaces, non-hex characters) is rejected.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import regex

from .files import atomic_write_text
from .patterns import canonical_pattern

PathLike = Union[str, "os.PathLike[str]"]

FORMAT_NAME = "bpe-fast"
FORMAT_VERSION = 1
_TOP_LEVEL_KEYS = {"format", "version", "pattern", "vocab", "merges", "special_tokens"}
_DECIMAL_ID = regex.compile(r"0|[1-9][0-9]*")
_HEX = regex.compile(r"(?:[0-9a-fA-F]{2})+")
_MAX_ID = 2**32 - 1  # token ids are u32


@dataclass
class VocabData:
    """What a vocab file holds. `merges` is None for a bare map (it has none; they must be recovered)."""

    tokens: dict[int, bytes]
    merges: Optional[list[tuple[int, int]]]
    special_tokens: dict[str, int] = field(default_factory=dict)
    pattern: str = "raw"
    is_bare: bool = False


# Ids are u32 (at most 10 digits); longer numbers are refused before int() sees them, which would
# otherwise spend quadratic time on (or, past 4300 digits, refuse without the file name) a huge one.
_MAX_NUMBER_DIGITS = 20


class _DuplicateKey(ValueError):
    pass


class _HugeNumber(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_NUMBER_DIGITS:
        raise _HugeNumber(text)
    return int(text)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads silently keeps the last of duplicate keys; a duplicate id must be an error instead.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _read_json(path: Path) -> Any:
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a vocab file")
    raw = path.read_bytes()  # FileNotFoundError / PermissionError (OSError with the path) pass through
    if not raw.strip():
        raise ValueError(f"{path}: empty file, not a vocab file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 (invalid byte at offset {err.start}), not a vocab file"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_int=_parse_int)
    except _DuplicateKey as err:
        raise ValueError(f"{path}: duplicate key {err.args[0]!r} in a JSON object") from None
    except _HugeNumber as err:
        raise ValueError(
            f"{path}: a number with {len(err.args[0])} digits, not a token id (ids fit in 32 bits)"
        ) from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply, not a vocab file") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: invalid or truncated JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None


def _parse_id(path: Path, where: str, key: str) -> int:
    if not isinstance(key, str) or not _DECIMAL_ID.fullmatch(key):
        shown = (
            key if not isinstance(key, str) or len(key) <= 40 else f"{key[:20]}... ({len(key)} characters)"
        )
        raise ValueError(f"{path}: {where} key {shown!r} is not a decimal token id")
    if len(key) > len(str(_MAX_ID)):
        raise ValueError(f"{path}: {where} id {key[:20]}... ({len(key)} digits) does not fit in 32 bits")
    value = int(key)
    if value > _MAX_ID:
        raise ValueError(f"{path}: {where} id {key} does not fit in 32 bits")
    return value


def _parse_hex(path: Path, where: str, key: str, value: Any) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise ValueError(
            f"{path}: {where} entry {key!r}: {value!r} is not a non-empty even-length hex string of the token's bytes"
        )
    return bytes.fromhex(value)


def _parse_tokens(path: Path, where: str, mapping: Any) -> dict[int, bytes]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: {where} must be a JSON object {{id: hex}}, got {type(mapping).__name__}")
    tokens: dict[int, bytes] = {}
    owner_of_bytes: dict[bytes, int] = {}
    for key, value in mapping.items():
        token_id = _parse_id(path, where, key)
        if token_id in tokens:  # e.g. "7" and "07" are rejected by _parse_id, so this is a true duplicate
            raise ValueError(f"{path}: {where} id {token_id} appears twice")
        token = _parse_hex(path, where, key, value)
        if token in owner_of_bytes:
            raise ValueError(
                f"{path}: {where} entry {key!r}: bytes {value} duplicate those of id {owner_of_bytes[token]}"
            )
        tokens[token_id] = token
        owner_of_bytes[token] = token_id
    missing = [b for b in range(256) if bytes([b]) not in owner_of_bytes]
    if missing:
        shown = ", ".join(f"{b:02x}" for b in missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise ValueError(f"{path}: {where} lacks {len(missing)} of the 256 single bytes (hex {shown})")
    return tokens


def _parse_merges(path: Path, merges: Any, tokens: dict[int, bytes]) -> list[tuple[int, int]]:
    if not isinstance(merges, list):
        raise ValueError(
            f"{path}: merges must be a JSON list of [left_id, right_id], got {type(merges).__name__}"
        )
    id_of_bytes = {value: key for key, value in tokens.items()}
    seen: dict[tuple[int, int], int] = {}
    parsed: list[tuple[int, int]] = []
    for rank, merge in enumerate(merges):
        if (
            not isinstance(merge, list)
            or len(merge) != 2
            or not all(isinstance(part, int) and not isinstance(part, bool) for part in merge)
        ):
            raise ValueError(f"{path}: merge {rank} is {merge!r}, not a [left_id, right_id] pair of ints")
        left, right = merge
        for part in (left, right):
            if part not in tokens:
                raise ValueError(f"{path}: merge {rank} {merge!r} names unknown token id {part}")
        if (left, right) in seen:
            raise ValueError(f"{path}: merge {rank} {merge!r} repeats merge {seen[(left, right)]}")
        if tokens[left] + tokens[right] not in id_of_bytes:
            raise ValueError(
                f"{path}: merge {rank} {merge!r} produces bytes {(tokens[left] + tokens[right]).hex()}, "
                "which are not a token in vocab"
            )
        seen[(left, right)] = rank
        parsed.append((left, right))
    return parsed


def _parse_special_tokens(path: Path, specials: Any, tokens: dict[int, bytes]) -> dict[str, int]:
    if not isinstance(specials, dict):
        raise ValueError(f"{path}: special_tokens must be a JSON object {{text: id}}")
    parsed: dict[str, int] = {}
    owner_of_id: dict[int, str] = {}
    for text, token_id in specials.items():
        if not text:
            raise ValueError(f"{path}: special_tokens has an empty token text")
        if not isinstance(token_id, int) or isinstance(token_id, bool) or not 0 <= token_id <= _MAX_ID:
            raise ValueError(f"{path}: special token {text!r} has id {token_id!r}, not a u32 integer")
        if token_id in tokens:
            raise ValueError(f"{path}: special token {text!r} id {token_id} is also an id in vocab")
        if token_id in owner_of_id:
            raise ValueError(
                f"{path}: special token {text!r} id {token_id} is also {owner_of_id[token_id]!r}'s id"
            )
        parsed[text] = token_id
        owner_of_id[token_id] = text
    return parsed


def _looks_bare(document: dict[str, Any]) -> bool:
    return "format" not in document and all(isinstance(key, str) and key.isdigit() for key in document)


def load_vocab(path: PathLike, pattern: Optional[str] = None) -> VocabData:
    """Read and fully validate a hex-JSON v1 file or a bare {id: hex} map.

    `pattern` overrides the file's pattern; for a bare map (which has none) it defaults to "raw".
    Every problem is a ValueError naming the file and the bad entry.
    """
    path = Path(path)
    document = _read_json(path)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: top level must be a JSON object, got {type(document).__name__}")
    if not document:
        raise ValueError(f"{path}: empty JSON object, not a vocab")
    if _looks_bare(document):
        tokens = _parse_tokens(path, "bare map", document)
        chosen = canonical_pattern(pattern if pattern is not None else "raw")
        return VocabData(tokens=tokens, merges=None, special_tokens={}, pattern=chosen, is_bare=True)

    if document.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path}: format is {document.get('format')!r}, expected {FORMAT_NAME!r} "
            "(or a bare {id: hex} map whose keys are all decimal ids)"
        )
    version = document.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ValueError(
            f"{path}: unsupported version {version!r} (this reader knows version {FORMAT_VERSION})"
        )
    unknown = sorted(set(document) - _TOP_LEVEL_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown} (expected {sorted(_TOP_LEVEL_KEYS)})")
    for required in ("pattern", "vocab", "merges"):
        if required not in document:
            raise ValueError(f"{path}: missing {required!r}")
    try:
        file_pattern = canonical_pattern(document["pattern"])
    except ValueError as err:
        raise ValueError(f"{path}: pattern: {err}") from None
    tokens = _parse_tokens(path, "vocab", document["vocab"])
    merges = _parse_merges(path, document["merges"], tokens)
    specials = _parse_special_tokens(path, document.get("special_tokens", {}), tokens)
    chosen = canonical_pattern(pattern) if pattern is not None else file_pattern
    return VocabData(tokens=tokens, merges=merges, special_tokens=specials, pattern=chosen, is_bare=False)


def _json_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=True)


def format_vocab(
    tokens: dict[int, bytes], merges: list[tuple[int, int]], special_tokens: dict[str, int], pattern: str
) -> str:
    """The hex-JSON v1 text: deterministic (ids sorted, specials by id), one vocab entry / merge a line."""
    lines = [
        "{",
        f'"format": {_json_str(FORMAT_NAME)},',
        f'"version": {FORMAT_VERSION},',
        f'"pattern": {_json_str(pattern)},',
        '"special_tokens": {'
        + ", ".join(
            f"{_json_str(text)}: {i}" for text, i in sorted(special_tokens.items(), key=lambda kv: kv[1])
        )
        + "},",
        '"vocab": {',
    ]
    ordered = sorted(tokens.items())
    lines += [
        f'"{i}": "{value.hex()}"' + ("," if n + 1 < len(ordered) else "")
        for n, (i, value) in enumerate(ordered)
    ]
    lines += ["},", '"merges": [']
    lines += [
        f"[{left}, {right}]" + ("," if n + 1 < len(merges) else "") for n, (left, right) in enumerate(merges)
    ]
    lines += ["]", "}"]
    return "\n".join(lines) + "\n"


def format_bare(tokens: dict[int, bytes]) -> str:
    """The report's bare map: {"id": "hex"} for every (non-special) token, sorted by id."""
    ordered = sorted(tokens.items())
    body = [
        f'  "{i}": "{value.hex()}"' + ("," if n + 1 < len(ordered) else "")
        for n, (i, value) in enumerate(ordered)
    ]
    return "{\n" + "\n".join(body) + "\n}\n"


def save_vocab(
    path: PathLike,
    tokens: dict[int, bytes],
    merges: list[tuple[int, int]],
    special_tokens: dict[str, int],
    pattern: str,
) -> Path:
    """Write hex-JSON v1 atomically."""
    return atomic_write_text(path, format_vocab(tokens, merges, special_tokens, pattern))


def save_bare(path: PathLike, tokens: dict[int, bytes]) -> Path:
    """Write the bare {id: hex} map atomically (special tokens and merges are not part of that format)."""
    return atomic_write_text(path, format_bare(tokens))
