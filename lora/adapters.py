"""Reading back what lora.finetune wrote: an adapter folder, its run.json, and the base it needs.

Adapters are loaded only from safetensors (never a pickle file), and every tensor is checked against
what the base model with this adapter's config expects: a missing, extra, misshapen or non-finite
tensor is an error that names it, instead of peft's warning and a silently half-initialised adapter.
This module imports no torch at import time (the command lines check their inputs first).
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from bpe_fast.cliutil import UserError

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


@contextmanager
def known_peft_warnings_silenced():
    """peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` whenever it wraps a model:
    the FutureWarning is between those two libraries, says nothing to a user, and would fail a test
    run with warnings as errors. Only that warning is ignored, only while peft wraps the model."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def read_run_summary(adapter_dir: Path) -> Optional[Dict[str, object]]:
    """run.json of a finetune output folder, or None when absent (e.g. an adapter made elsewhere)."""
    path = Path(adapter_dir) / "run.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(summary, dict):
        raise UserError(f"{path}: expected a JSON object")
    return summary


def check_adapter_dir(adapter_dir: Path) -> Path:
    """`adapter_dir` if it holds a peft adapter in safetensors; a one-line error otherwise."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise UserError(f"{adapter_dir}: no such adapter folder")
    if not (adapter_dir / CONFIG_FILE).is_file():
        raise UserError(f"{adapter_dir}: no {CONFIG_FILE}, so it is not a peft adapter folder")
    if not (adapter_dir / WEIGHTS_FILE).is_file():
        pickled = (adapter_dir / "adapter_model.bin").is_file()
        raise UserError(
            f"{adapter_dir}: no {WEIGHTS_FILE}"
            + (
                " (adapter_model.bin is a pickle file, which is never loaded: re-save the adapter with "
                "safe_serialization=True)"
                if pickled
                else ""
            )
        )
    return adapter_dir


def recorded_base(adapter_dir: Path) -> Tuple[Optional[str], Optional[str]]:
    """(model, tokenizer) an adapter was trained on, as lora.finetune's run.json records them, else
    peft's base_model_name_or_path; None where nothing says."""
    adapter_dir = check_adapter_dir(adapter_dir)
    settings = (read_run_summary(adapter_dir) or {}).get("settings", {})
    settings = settings if isinstance(settings, dict) else {}
    model, tokenizer = settings.get("model"), settings.get("tokenizer")
    if model is None:
        try:
            config = json.loads((adapter_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"{adapter_dir / CONFIG_FILE}: not valid JSON ({error})") from None
        model = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return (str(model) if model else None), tokenizer


def base_model_for(
    adapter_dir: Path, model: Optional[str], tokenizer: Optional[str]
) -> Tuple[str, Optional[str]]:
    """The --model / --tokenizer to load under an adapter: as given, else as recorded (recorded_base)."""
    recorded_model, recorded_tokenizer = recorded_base(adapter_dir)
    model = model if model is not None else recorded_model
    tokenizer = tokenizer if tokenizer is not None else recorded_tokenizer
    if not model:
        raise UserError(f"{adapter_dir}: cannot tell the base model; pass --model")
    return model, tokenizer


def check_adapter_tensors(expected: Mapping[str, object], saved: Mapping[str, object], where: Path) -> None:
    """Every tensor the model expects is in `saved` with the same shape and finite values, and nothing
    else is; otherwise a one-line error naming the first offending tensor."""
    import torch

    missing = [name for name in expected if name not in saved]
    if missing:
        raise UserError(f"{where}: the adapter lacks the tensor {missing[0]} ({len(missing)} missing in all)")
    extra = [name for name in saved if name not in expected]
    if extra:
        raise UserError(
            f"{where}: the tensor {extra[0]} does not belong to this model's adapter ({len(extra)} unexpected)"
        )
    for name, tensor in saved.items():
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise UserError(f"{where}: tensor {name} has shape {tuple(tensor.shape)}, the model needs {want}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{where}: tensor {name} holds NaN or infinite values")


def load_adapter(model, adapter_dir: Path, adapter_name: str = "default"):
    """`model` (a base model, or a PeftModel to add to) with the adapter in `adapter_dir` loaded as
    `adapter_name`, frozen; its tensors checked (see check_adapter_tensors). Returns the PeftModel, in
    eval mode."""
    from peft import PeftConfig, PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    adapter_dir = check_adapter_dir(adapter_dir)
    try:
        config = PeftConfig.from_pretrained(str(adapter_dir))
    except (ValueError, TypeError, KeyError) as error:
        raise UserError(f"{adapter_dir / CONFIG_FILE}: not a usable peft config ({error})") from None
    config.inference_mode = True
    try:
        with known_peft_warnings_silenced():
            if isinstance(model, PeftModel):
                model.add_adapter(adapter_name, config)
            else:
                model = get_peft_model(model, config, adapter_name=adapter_name)
    except ValueError as error:  # e.g. target modules that this base model does not have
        raise UserError(f"{adapter_dir}: the adapter does not fit this base model ({error})") from None
    try:
        saved = load_file(str(adapter_dir / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise UserError(f"{adapter_dir / WEIGHTS_FILE}: not a readable safetensors file ({error})") from None
    # save_embedding_layers=False: LoRA here never adapts embeddings, and "auto" would look for the
    # base config.json (on the hub when the base is not a local folder).
    expected = get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)
    check_adapter_tensors(expected, saved, adapter_dir / WEIGHTS_FILE)
    set_peft_model_state_dict(model, saved, adapter_name=adapter_name)
    return model.eval()  # as peft's own loader: the new layers' dropout modules start in training mode
