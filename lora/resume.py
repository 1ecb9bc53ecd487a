"""The resume state of an unfinished fine-tune (OUT.partial/resume/): everything needed to continue
exactly where it stopped, so that the resumed run follows the same loss curve.

- trainable.safetensors: the trainable (LoRA) parameters, by name;
- optimizer.safetensors: AdamW's per-parameter tensors ("{index}.{name}");
- rng.safetensors: torch's CPU (and CUDA) generator states, for dropout;
- state.json: step, epoch and window position, loss history, optimizer hyper-parameters, loss-scaler
  and Python random states, and the settings and data fingerprint the run was started with.

Tensors go through safetensors and everything else through JSON: loading a resume state never
unpickles anything. The folder is written with bpe_fast.files.atomic_dir, so a kill at any moment
leaves the previous complete state (and no temp litter once the run starts again).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict

import torch
from safetensors.torch import load_file, save_file

from bpe_fast.cliutil import UserError
from bpe_fast.files import atomic_dir
from lora.adapters import check_adapter_tensors
from lora.records import json_safe, restore_nonfinite
from lora.run_folder import STATE_FILE

FORMAT = 1


def trainable_parameters(model) -> Dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _rng_tensors() -> Dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = state
    return tensors


def save_state(folder: Path, model, optimizer, scaler, progress: Dict[str, object]) -> Path:
    """Writes the resume state to `folder` (replacing an older one atomically)."""
    optimizer_state = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value.detach().contiguous().cpu()
        for index, state in optimizer_state["state"].items()
        for key, value in state.items()
    }
    record = dict(
        progress,
        format=FORMAT,
        param_groups=optimizer_state["param_groups"],
        scaler=scaler.state_dict(),
        python_random=random.getstate(),
    )
    with atomic_dir(folder) as temp:
        trainable = {name: p.detach().contiguous().cpu() for name, p in trainable_parameters(model).items()}
        save_file(trainable, str(temp / "trainable.safetensors"))
        save_file(tensors, str(temp / "optimizer.safetensors"))
        save_file(_rng_tensors(), str(temp / "rng.safetensors"))
        (temp / STATE_FILE).write_text(
            json.dumps(json_safe(record), allow_nan=False) + "\n", encoding="utf-8"
        )
    return folder


def _load(folder: Path, name: str) -> Dict[str, torch.Tensor]:
    try:
        return load_file(str(folder / name))
    except Exception as error:  # safetensors raises its own error types, or OSError
        raise UserError(
            f"{folder / name}: unreadable resume state ({error}); use --overwrite to start again"
        ) from None


def load_state(folder: Path, model, optimizer, scaler) -> Dict[str, object]:
    """Restores the parameters, optimizer, loss scaler and random generators from `folder`; returns
    the progress record (step, epoch, history, ...)."""
    try:
        record = restore_nonfinite(json.loads((folder / STATE_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise UserError(
            f"{folder / STATE_FILE}: unreadable resume state ({error}); use --overwrite"
        ) from None
    if record.get("format") != FORMAT:
        raise UserError(f"{folder}: resume state format {record.get('format')!r}, expected {FORMAT}")
    trainable = trainable_parameters(model)
    saved = _load(folder, "trainable.safetensors")
    check_adapter_tensors(trainable, saved, folder / "trainable.safetensors")
    with torch.no_grad():
        for name, parameter in trainable.items():
            parameter.copy_(saved[name])
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, tensor in _load(folder, "optimizer.safetensors").items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    if record["scaler"]:
        scaler.load_state_dict(record["scaler"])
    rng = _load(folder, "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    cuda_states = [rng[f"cuda.{i}"] for i in range(len(rng) - 1) if f"cuda.{i}" in rng]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    version, internal, gauss = record["python_random"]
    random.setstate((version, tuple(internal), gauss))
    return record
