"""The tokenizer the trainer decodes samples with and HellaSwag/perplexity encode with.

`bpe_fast` is imported lazily: the trainer runs on machines where the Rust extension is not built
(e.g. the GPU check), and only sampling/evaluation need a tokenizer.
"""

from __future__ import annotations

import os
from pathlib import Path

EOT_TEXT = "<|endoftext|>"


def load_tokenizer(spec: str | os.PathLike):
    """`"gpt2"` gives GPT-2's own tokenizer; anything else is a bpe-fast vocab file path."""
    import bpe_fast

    if str(spec) == "gpt2":
        return bpe_fast.Tokenizer.gpt2()
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {spec!r}: not 'gpt2' and not an existing vocab file")
    return bpe_fast.load(path)


def eot_id(tok) -> int:
    """The id of `<|endoftext|>`, which starts every document in our shards."""
    specials = tok.special_tokens
    if EOT_TEXT not in specials:
        raise ValueError(
            f"tokenizer has no {EOT_TEXT!r} special token (has {sorted(specials)}); "
            f'train it with --special "{EOT_TEXT}"'
        )
    return int(specials[EOT_TEXT])
