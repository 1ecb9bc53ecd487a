"""Pre-tokenization patterns: names -> tiktoken's regex strings, and validation of a pattern argument.

The regex strings are data copied verbatim from tiktoken (tiktoken_ext/openai_public.py), so that our
chunks are exactly tiktoken's. Python's `regex` module is the judge of what they match (DESIGN.md §3).
"""

from __future__ import annotations

import regex

# GPT-2 / r50k_base / p50k_base.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# GPT-4 / cl100k_base.
GPT4_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""

# GPT-4o / o200k_base.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# "raw" means no split at all: a whole document is one chunk (the course report's algorithm).
RAW = "raw"

PATTERNS: dict[str, str] = {
    "gpt2": GPT2_PATTERN,
    "gpt4": GPT4_PATTERN,
    "o200k": O200K_PATTERN,
}

# Names people reach for that mean the same patterns; normalised to the canonical name.
_ALIASES = {
    "r50k": "gpt2",
    "r50k_base": "gpt2",
    "cl100k": "gpt4",
    "cl100k_base": "gpt4",
    "o200k_base": "o200k",
}

NAMES = (*PATTERNS, RAW)


def canonical_pattern(pattern: str) -> str:
    """Return the canonical name ("gpt2", "gpt4", "o200k", "raw") or the custom regex itself.

    Raises ValueError when `pattern` is not a str, is empty, or is neither a known name nor a regex
    that compiles.
    """
    if not isinstance(pattern, str):
        raise ValueError(
            f"pattern must be a str (one of {', '.join(NAMES)} or a regex), got {type(pattern).__name__}"
        )
    if pattern in PATTERNS or pattern == RAW:
        return pattern
    if pattern in _ALIASES:
        return _ALIASES[pattern]
    if pattern == "":
        raise ValueError(f"pattern must not be empty (use one of {', '.join(NAMES)} or a regex)")
    try:
        regex.compile(pattern)
    except regex.error as err:
        raise ValueError(
            f"unknown pattern {pattern!r}: not one of {', '.join(NAMES)} and not a valid regex ({err})"
        ) from None
    return pattern


def pattern_regex(pattern: str) -> str | None:
    """The regex string for a pattern name or custom regex; None for "raw" (no split)."""
    pattern = canonical_pattern(pattern)
    if pattern == RAW:
        return None
    return PATTERNS.get(pattern, pattern)


def split_text(pattern: str, text: str) -> list[str]:
    """The pre-tokenizer's chunks of `text` under `pattern` (pure Python; "raw" gives the text itself).

    Chunks are the regex's non-empty matches and, for a custom regex that does not match everything, the
    text between matches too, so no text is ever dropped and decode(encode(s)) == s holds for every
    pattern. (tiktoken's patterns match every character, so for them the chunks are just the matches.)
    """
    expression = pattern_regex(pattern)
    if expression is None:
        return [text] if text else []
    chunks: list[str] = []
    position = 0
    for match in regex.finditer(expression, text):
        if match.end() == match.start():
            continue  # an empty match carries no bytes; the text around it stays one gap
        if match.start() > position:
            chunks.append(text[position : match.start()])
        chunks.append(match.group(0))  # group(0), not groups: a custom regex may have groups
        position = match.end()
    if position < len(text):
        chunks.append(text[position:])
    return chunks
