"""Training checkpoints (DESIGN.md section 6): one directory per checkpoint, written atomically.

Layout of `ckpt_{step:07d}/`: `model.safetensors` (weights; safetensors handles the tied embedding),
`optimizer.pt` (the optimizer's state dict: tensors and plain containers only, so it loads with
`torch.load(weights_only=True)`), `meta.json` (everything else as plain data). The directory is
written under a hidden temporary name and renamed when complete, so a process killed mid-write leaves
only a `.tmp-*` folder that `latest_checkpoint` never picks.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
META_FILE = "meta.json"
_CKPT_NAME = re.compile(r"ckpt_(\d{7,})")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_checkpoint(out_dir: str | os.PathLike, model: torch.nn.Module, optimizer, meta: dict) -> Path:
    """Writes `out_dir/ckpt_{meta['step']:07d}` atomically and returns its path.

    `meta` must be JSON-serializable and hold an int "step". An existing checkpoint of the same step
    is replaced (only after the new one is complete).
    """
    out_dir = Path(out_dir)
    step = int(meta["step"])
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"ckpt_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-ckpt_{step:07d}-", dir=out_dir))
    try:
        # mkdtemp makes the folder owner-only; a checkpoint gets the usual permissions (per umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        save_safetensors_model(unwrap_model(model), str(tmp / MODEL_FILE))
        torch.save(optimizer.state_dict() if optimizer is not None else {}, tmp / OPTIMIZER_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        for name in (MODEL_FILE, OPTIMIZER_FILE, META_FILE):
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
        if final.exists():
            # Move the old one aside first: a crash between the two renames keeps a complete copy.
            old = Path(tempfile.mkdtemp(prefix=f".old-ckpt_{step:07d}-", dir=out_dir))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _is_complete(ckpt_dir: Path) -> bool:
    if not all((ckpt_dir / name).is_file() for name in (MODEL_FILE, OPTIMIZER_FILE, META_FILE)):
        return False
    try:
        meta = json.loads((ckpt_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "step" in meta


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `out_dir`, oldest step first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for path in out_dir.iterdir():
        match = _CKPT_NAME.fullmatch(path.name)
        if match and path.is_dir() and _is_complete(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def remove_partial_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Deletes what interrupted writes left (`.tmp-ckpt_*`, `.old-ckpt_*`); returns what was removed.

    Only for the one process that owns `out_dir` (the trainer's rank 0, at start): a concurrent
    writer's temporary folder would be removed too.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    leftovers = [
        p for p in out_dir.iterdir() if p.is_dir() and p.name.startswith((".tmp-ckpt_", ".old-ckpt_"))
    ]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def read_meta(ckpt_dir: str | os.PathLike) -> dict:
    path = Path(ckpt_dir) / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable checkpoint metadata: {e}") from e


def load_checkpoint(
    ckpt_dir: str | os.PathLike, model: torch.nn.Module, optimizer=None, device="cpu"
) -> dict:
    """Loads weights into `model` (and state into `optimizer` when given); returns the meta dict."""
    ckpt_dir = Path(ckpt_dir)
    if not _is_complete(ckpt_dir):
        raise FileNotFoundError(f"{ckpt_dir}: not a complete checkpoint")
    meta = read_meta(ckpt_dir)
    missing, unexpected = load_safetensors_model(
        unwrap_model(model), str(ckpt_dir / MODEL_FILE), device=str(device)
    )
    if missing or unexpected:
        raise ValueError(
            f"{ckpt_dir / MODEL_FILE}: weights do not fit the model (missing {missing}, unexpected {unexpected})"
        )
    if optimizer is not None:
        state = torch.load(ckpt_dir / OPTIMIZER_FILE, map_location=device, weights_only=True)
        optimizer.load_state_dict(state)
    return meta


def load_model(ckpt_dir: str | os.PathLike, device="cpu"):
    """(GPT, meta) from a checkpoint, for sampling, evaluation and export; the model is in eval mode."""
    from gpt.model import GPT, GPTConfig

    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    if "model_config" not in meta:
        raise ValueError(f"{ckpt_dir / META_FILE}: no 'model_config' entry")
    model = GPT(GPTConfig(**meta["model_config"]))
    load_checkpoint(ckpt_dir, model, None, device="cpu")
    model.to(device)
    model.eval()
    return model, meta


# RNG states travel in meta.json as base64 of their raw bytes (they are uint8 tensors).


def tensor_to_b64(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def b64_to_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()
