"""The one place gpt/ gets a tokenizer from a spec, and the end-of-text token every document starts with.

A spec is `"gpt2"` (GPT-2's files bundled with bpe_fast: works offline) or the path of a bpe_fast vocab
file. `bpe_fast` is imported when a tokenizer is loaded, not when this module is: the trainer also
runs where the Rust extension is not built (e.g. the GPU check), and only some of its features need one.
"""

from __future__ import annotations

import os
from pathlib import Path

EOT_TEXT = "<|endoftext|>"


def load_tokenizer(spec: str | os.PathLike):
    """`"gpt2"` gives GPT-2's own tokenizer; anything else is a bpe_fast vocab file path.

    A missing or unreadable file is a UserError (one line naming the file); never falls back to gpt2."""
    import bpe_fast
    from bpe_fast.cliutil import UserError

    if str(spec) == "gpt2":
        return bpe_fast.Tokenizer.gpt2()
    path = Path(spec)
    if not path.is_file():
        what = "a folder, not a vocab file" if path.is_dir() else "not 'gpt2' and not an existing vocab file"
        raise UserError(f"tokenizer {str(spec)!r}: {what}; pass 'gpt2' or a vocab.json from `bpe-fast train`")
    try:
        return bpe_fast.load(path)
    except (ValueError, OSError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(message if str(path) in message else f"{path}: {message}") from e


def eot_id(tok) -> int:
    """The id of `<|endoftext|>`, which starts every document in our shards."""
    from bpe_fast.cliutil import UserError

    specials = tok.special_tokens
    if EOT_TEXT not in specials:
        raise UserError(
            f"tokenizer has no {EOT_TEXT!r} special token (has {sorted(specials)}); "
            f'retrain it with `bpe-fast train FILE --vocab N` (older versions: --special "{EOT_TEXT}")'
        )
    return int(specials[EOT_TEXT])


__all__ = ["EOT_TEXT", "eot_id", "load_tokenizer"]
