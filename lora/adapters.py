"""Reading back what lora.finetune wrote: an adapter folder, its run.json, and the base it needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple


def read_run_summary(adapter_dir: Path) -> Optional[Dict[str, object]]:
    """run.json of a finetune output folder, or None when absent (e.g. an adapter made elsewhere)."""
    path = Path(adapter_dir) / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg})") from None


def check_adapter_dir(adapter_dir: Path) -> Path:
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json (not a peft adapter folder)")
    return adapter_dir


def base_model_for(
    adapter_dir: Path, model: Optional[str], tokenizer: Optional[str]
) -> Tuple[str, Optional[str]]:
    """The --model / --tokenizer to load under an adapter: as given, else as recorded by lora.finetune
    (run.json), else peft's base_model_name_or_path."""
    adapter_dir = check_adapter_dir(adapter_dir)
    summary = read_run_summary(adapter_dir) or {}
    settings = summary.get("settings", {}) if isinstance(summary, dict) else {}
    if model is None:
        model = settings.get("model")
    if tokenizer is None:
        tokenizer = settings.get("tokenizer")
    if model is None:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        model = config.get("base_model_name_or_path")
    if not model:
        raise ValueError(f"{adapter_dir}: cannot tell the base model; pass --model")
    return str(model), tokenizer
