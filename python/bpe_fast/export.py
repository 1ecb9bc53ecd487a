"""Exports: a `tiktoken.Encoding`, tiktoken rank files, and a Hugging Face `tokenizer.json`.

Both targets must encode exactly as we do (tests check it on corpora):

* tiktoken has no merge list: it merges the adjacent pair whose *concatenation* has the lowest rank, and
  returns ranks as ids. So rank must be the token id, and exporting is only faithful when merge order and
  result-id order agree (true for every vocab our trainer makes and for GPT-2's files); anything else is
  refused rather than exported wrong.
* HF's BPE model applies listed merges by rank, leftmost first, like us; `ignore_merges` must be off
  (otherwise a chunk that is itself a token skips the merges). Bytes are shown with GPT-2's byte<->unicode
  mapping (ByteLevel pre-tokenizer without its own regex, after a Split with our regex). Exact for the
  built-in patterns and "raw", whatever the ids (GPT-2's permuted bytes, sparse special ids). Refused
  rather than written wrong: a custom regex (HF runs it with Oniguruma, whose syntax and matching differ
  from the judge's), and a special token whose text is also an ordinary token's text in HF's vocab
  (HF would give both one id). `write_hf_tokenizer_dir` writes what `AutoTokenizer.from_pretrained` loads.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from .files import atomic_write_json, atomic_write_text
from .gpt2_files import ENDOFTEXT, bytes_to_gpt2_text
from .patterns import PATTERNS, RAW, pattern_regex
from .tokenizer import Tokenizer

PathLike = Union[str, "os.PathLike[str]"]

# tiktoken needs a regex even for "raw" (one chunk per text): this matches a whole text, newlines included.
_WHOLE_TEXT = r"[\s\S]+"


def _check_rank_order(tok: Tokenizer) -> None:
    """Refuse vocabs whose merge order is not their result-id order (tiktoken would rank them differently)."""
    tokens = tok.tokens()
    id_of_bytes = {value: key for key, value in tokens.items()}
    produced = set()
    previous = -1
    for rank, (left, right) in enumerate(tok.merges):
        result = id_of_bytes[tokens[left] + tokens[right]]
        if result <= previous:
            raise ValueError(
                f"cannot export to tiktoken: merge {rank} ({left}, {right}) makes id {result}, not above the previous "
                f"merge's id {previous}; tiktoken ranks merges by token id"
            )
        previous = result
        produced.add(result)
    unreachable = [i for i, value in tokens.items() if len(value) > 1 and i not in produced]
    if unreachable:
        raise ValueError(
            f"cannot export to tiktoken: token {unreachable[0]} ({tokens[unreachable[0]].hex()}) is made by no merge "
            "(tiktoken would still use it)"
        )


def tiktoken_pattern(tok: Tokenizer) -> str:
    """The regex tiktoken needs to cut text into our chunks."""
    expression = pattern_regex(tok.pattern)
    if expression is None:
        return _WHOLE_TEXT
    if tok.pattern in PATTERNS:
        return expression  # tiktoken's own patterns match every character: no gaps to cover
    # tiktoken drops text its regex does not match, while we keep the text between matches as chunks.
    # The second alternative takes exactly such a gap: characters up to the next place the regex matches.
    # (Exact unless the custom regex can match the empty string, which only a pathological pattern does.)
    return f"(?:{expression})|(?:(?!(?:{expression}))[\\s\\S])+"


def mergeable_ranks(tok: Tokenizer) -> dict[bytes, int]:
    """tiktoken's `mergeable_ranks` (bytes -> rank = id) for `tok`, after checking it is faithful."""
    _check_rank_order(tok)
    return {value: token_id for token_id, value in tok.tokens().items()}


def to_tiktoken(tok: Tokenizer, name: str = "bpe_fast") -> Any:
    """A `tiktoken.Encoding` that encodes and decodes exactly like `tok` (needs the tiktoken package)."""
    import tiktoken

    return tiktoken.Encoding(
        name,
        pat_str=tiktoken_pattern(tok),
        mergeable_ranks=mergeable_ranks(tok),
        special_tokens=tok.special_tokens,
    )


def tiktoken_file_text(tok: Tokenizer) -> str:
    """tiktoken's rank-file text ("base64 rank" lines, by rank). Pattern and special tokens are not part of
    that format: pass them to `Tokenizer.from_tiktoken` / `tiktoken.Encoding` when loading."""
    ranks = mergeable_ranks(tok)
    lines = [
        f"{base64.b64encode(value).decode('ascii')} {rank}"
        for value, rank in sorted(ranks.items(), key=lambda kv: kv[1])
    ]
    return "\n".join(lines) + "\n"


def save_tiktoken(tok: Tokenizer, path: PathLike) -> Path:
    return atomic_write_text(path, tiktoken_file_text(tok))


class HFExportError(ValueError):
    """The tokenizer has no exact Hugging Face equivalent; nothing was written."""


def _hf_regex(tok: Tokenizer) -> Optional[str]:
    if tok.pattern != RAW and tok.pattern not in PATTERNS:
        raise HFExportError(
            f"cannot export a tokenizer with the custom pattern {tok.pattern!r} to Hugging Face: HF runs "
            "pre-tokenizer regexes with Oniguruma, which can split differently; use gpt2, gpt4, o200k or raw"
        )
    expression = pattern_regex(tok.pattern)
    if expression is None:
        return None
    # HF's regex engine (Oniguruma, Ruby syntax) reads `{1,3}+` as "(x{1,3})+", not as a possessive
    # quantifier. In cl100k's pattern `\p{N}{1,3}+` ends its alternative, so possessive and greedy match
    # the same text there and the plain `{1,3}` is exact.
    return expression.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")


def hf_tokenizer_json(tok: Tokenizer) -> dict[str, Any]:
    """The `tokenizer.json` document (as a dict) for `tok`; :class:`HFExportError` when HF cannot encode
    exactly like `tok`."""
    expression = _hf_regex(tok)
    tokens = tok.tokens()
    vocab = {bytes_to_gpt2_text(value): token_id for token_id, value in sorted(tokens.items())}
    for text, special_id in sorted(tok.special_tokens.items(), key=lambda kv: kv[1]):
        if text in vocab:
            raise HFExportError(
                f"cannot export to Hugging Face: special token {text!r} (id {special_id}) has the same text as "
                f"ordinary token {vocab[text]} in HF's vocab, and HF would give both one id; retrain with a "
                "pattern that splits it (gpt2, gpt4, o200k) or with another special-token text"
            )
    merges = [
        [bytes_to_gpt2_text(tokens[left]), bytes_to_gpt2_text(tokens[right])] for left, right in tok.merges
    ]
    # HF gives an added token the model vocab's id for its text when there is one, and otherwise the next
    # id after the model vocab's entry count, whatever id the file says; listing special tokens in the
    # model vocab too (as GPT-2's own tokenizer.json does) keeps their ids. No merge makes their text.
    vocab.update(tok.special_tokens)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    if expression is None:
        pre_tokenizer: dict[str, Any] = byte_level
    else:
        # "Isolated": the regex's matches are chunks and so is any text between them, as in our pre-tokenizer.
        split = {"type": "Split", "pattern": {"Regex": expression}, "behavior": "Isolated", "invert": False}
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, byte_level]}
    added_tokens = [
        {
            "id": token_id,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for text, token_id in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": False,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def save_hf(tok: Tokenizer, path: PathLike) -> Path:
    """Write `tokenizer.json` atomically; loadable by `tokenizers.Tokenizer.from_file` and by
    `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`. Special tokens become added tokens, which
    HF always splits out (like `encode(..., allowed_special="all")`)."""
    return atomic_write_text(path, json.dumps(hf_tokenizer_json(tok), ensure_ascii=False, indent=1) + "\n")


def hf_tokenizer_config(tok: Tokenizer, model_max_length: Optional[int] = None) -> dict[str, Any]:
    """`tokenizer_config.json` for `tok`: the fast tokenizer class, `<|endoftext|>` (when `tok` has it) as
    the end and start of text like GPT-2's, and no clean-up of spaces on decode (which would change text)."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
    }
    if ENDOFTEXT in tok.special_tokens:
        config.update(bos_token=ENDOFTEXT, eos_token=ENDOFTEXT)
    others = sorted((t for t in tok.special_tokens if t != ENDOFTEXT), key=tok.special_tokens.__getitem__)
    if others:
        config["additional_special_tokens"] = others
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    return config


def write_hf_tokenizer_dir(
    tok: Tokenizer, out_dir: PathLike, *, model_max_length: Optional[int] = None
) -> Path:
    """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `out_dir` (made
    if missing; other files there are left alone), so that `transformers.AutoTokenizer.from_pretrained`
    loads a tokenizer whose ids equal `tok.encode(text, allowed_special="all")`. Refuses with
    :class:`HFExportError` before writing anything when no exact equivalent exists. Returns `out_dir`."""
    document = hf_tokenizer_json(tok)  # checks first, so a refused export leaves no partial folder
    config = hf_tokenizer_config(tok, model_max_length)
    special_map = {
        key: config[key] for key in ("bos_token", "eos_token", "additional_special_tokens") if key in config
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tokenizer.json", json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    atomic_write_json(out / "tokenizer_config.json", config, indent=2)
    atomic_write_json(out / "special_tokens_map.json", special_map, indent=2)
    return out


def save_bare(tok: Tokenizer, path: PathLike) -> Path:
    """The report's bare {id: hex} map."""
    return tok.save(path, bare=True)


EXPORT_FORMATS = {"bare": save_bare, "tiktoken": save_tiktoken, "hf": save_hf}

__all__ = [
    "EXPORT_FORMATS",
    "RAW",
    "HFExportError",
    "hf_tokenizer_config",
    "hf_tokenizer_json",
    "mergeable_ranks",
    "save_bare",
    "save_hf",
    "save_tiktoken",
    "tiktoken_file_text",
    "tiktoken_pattern",
    "to_tiktoken",
    "write_hf_tokenizer_dir",
]
