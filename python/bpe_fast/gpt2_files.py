"""GPT-2's own tokenizer files (encoder.json + vocab.bpe): byte<->unicode mapping and parsing.

GPT-2 stores byte strings as unicode strings: every byte maps to one printable character, so that the
JSON and the merges file need no escaping. Printable Latin-1 bytes map to themselves; the other 68
bytes map to U+0100 onwards, in byte order.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]

ENDOFTEXT = "<|endoftext|>"
"""The end-of-text special token (GPT-2's, and what `bpe-fast train` adds by default); public as
`bpe_fast.ENDOFTEXT`, the one definition of it."""


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's mapping of each byte value to one printable character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    next_code_point = 256
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(next_code_point)
            next_code_point += 1
    return mapping


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {char: b for b, char in byte_to_unicode().items()}


def bytes_to_gpt2_text(value: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in value)


def gpt2_text_to_bytes(text: str, where: str) -> bytes:
    table = unicode_to_byte()
    try:
        return bytes(table[char] for char in text)
    except KeyError as err:
        raise ValueError(
            f"{where}: character {err.args[0]!r} is not in GPT-2's byte<->unicode table"
        ) from None


def read_gpt2_files(
    encoder_json: PathLike, vocab_bpe: PathLike
) -> tuple[dict[int, bytes], list[tuple[int, int]], dict[str, int]]:
    """Parse GPT-2's files into (tokens id->bytes, merges in rank order, special tokens).

    `<|endoftext|>` (id 50256 in GPT-2) is the one special token; every other encoder entry is a token.
    """
    encoder_path, merges_path = Path(encoder_json), Path(vocab_bpe)
    try:
        encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError(f"{encoder_path}: not a GPT-2 encoder.json (JSON nested too deeply)") from None
    except ValueError as err:  # bad UTF-8, bad JSON, or a number too long for int()
        message = str(err).splitlines()[0]
        raise ValueError(f"{encoder_path}: not a GPT-2 encoder.json ({message})") from None
    if not isinstance(encoder, dict):
        raise ValueError(f"{encoder_path}: not a GPT-2 encoder.json (top level is not an object)")
    tokens: dict[int, bytes] = {}
    specials: dict[str, int] = {}
    id_of_text: dict[str, int] = {}
    for text, token_id in encoder.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise ValueError(
                f"{encoder_path}: entry {text!r} has id {token_id!r}, not a non-negative integer"
            )
        if text == ENDOFTEXT:
            specials[text] = token_id
            continue
        tokens[token_id] = gpt2_text_to_bytes(text, f"{encoder_path}: entry {text!r}")
        id_of_text[text] = token_id

    merges: list[tuple[int, int]] = []
    lines = merges_path.read_text(encoding="utf-8").split("\n")
    for line_number, line in enumerate(lines, start=1):
        if line.startswith("#version") or not line.strip():
            continue  # the header line and the trailing empty line
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{merges_path}:{line_number}: {line!r} is not 'left right'")
        try:
            merges.append((id_of_text[parts[0]], id_of_text[parts[1]]))
        except KeyError as err:
            raise ValueError(
                f"{merges_path}:{line_number}: merge {line!r} names {err.args[0]!r}, which is not in {encoder_path}"
            ) from None
    return tokens, merges, specials
