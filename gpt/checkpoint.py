"""Training checkpoints (DESIGN.md section 6) and loading a model for inference.

Layout of `OUT/ckpt_{step:07d}/`: `model.safetensors` (weights; the tied embedding/head stored once),
`optimizer.pt` (the optimizer's state dict: tensors and plain containers only, read with
`torch.load(weights_only=True)`, which refuses any other pickle), `meta.json` (everything else as plain
data: step, configs, data-loader position, RNG states, versions).

A run with --fsdp writes the sharded layout instead: `meta.json` (with `"sharded": true`) and `sharded/`,
torch.distributed.checkpoint's files (`.metadata` and one `__R_0.distcp` per rank: each rank's shards
of the weights and AdamW moments), in place of model.safetensors and optimizer.pt. It resumes at any
world size (DCP reshards), and `load_model` reads it into an ordinary GPT for gpt.sample / gpt.export.

Writing goes through `bpe_fast.files.atomic_dir`: the folder is filled under a temp name owned by the
writing process and renamed when complete; replacing a checkpoint of the same step parks the old one
first, so a complete copy exists at every instant. `recover_checkpoints`, run when the same job starts
again, finishes or undoes a replacement a crash interrupted and removes the temps of writers that died.
Weights that are not finite are never written: nothing broken is marked complete. A sharded checkpoint
keeps the same rules: rank 0 owns the temp folder (its name carries rank 0's pid), every rank writes its
shards into it, and rank 0 adds meta.json and renames it once every rank has finished.

Loading checks every tensor against the model (a missing, unexpected, wrong-shaped or non-finite tensor
is an error naming it) and the optimizer state against the parameters.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors_file
from safetensors.torch import save_model as save_safetensors_model

from bpe_fast.cliutil import UserError, one_line
from bpe_fast.files import TEMP_SUFFIX, DiskFullError, atomic_dir, is_disk_full, recover_dir
from gpt.runtime import PeerFailed

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
META_FILE = "meta.json"
SHARDED_DIR = "sharded"  # torch.distributed.checkpoint's files, in a checkpoint written with --fsdp
SHARDED_INDEX = ".metadata"  # DCP's index of every rank's shards, written once all of them are
_CKPT_NAME = re.compile(r"ckpt_(\d{7,})")
# What atomic_dir leaves beside `ckpt_NNNNNNN` when interrupted: `.ckpt_NNNNNNN.<owner>.bpefast-tmp`.
_CKPT_TEMP = re.compile(r"\.(ckpt_\d{7,})\..*" + re.escape(TEMP_SUFFIX))


class CheckpointError(UserError, ValueError):
    """A checkpoint (or model source) that cannot be used: incomplete, unsafe, or not fitting the model.
    The message names the file or tensor; entry points print it as one line."""


class NonFiniteWeightsError(ValueError):
    """Refused to write a checkpoint: a weight is NaN or infinite (training diverged)."""


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def first_non_finite(model: torch.nn.Module) -> Optional[str]:
    """The name of the first parameter holding a NaN or an infinity, or None when all are finite. For a
    sharded (FSDP) model only this rank's shards are looked at: no communication, so ranks may differ
    and must combine their answers (gpt.train does)."""
    for name, param in unwrap_model(model).named_parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        if not torch.isfinite(local.detach()).all():
            return name
    return None


# ---------------------------------------------------------------------------------------------- writing


def save_checkpoint(out_dir: str | os.PathLike, model: torch.nn.Module, optimizer, meta: dict) -> Path:
    """Writes `out_dir/ckpt_{meta['step']:07d}` atomically and returns its path.

    `meta` must be JSON (no NaN) and hold an int "step". An existing checkpoint of the same step is
    replaced only once the new one is complete. Non-finite weights raise NonFiniteWeightsError before
    anything is written; a full disk raises DiskFullError naming the file, leaving nothing partial.
    """
    bad = first_non_finite(model)
    if bad is not None:
        raise NonFiniteWeightsError(
            f"weight {bad} is not finite: checkpoint at step {meta.get('step')} not written"
        )
    final = Path(out_dir) / f"ckpt_{int(meta['step']):07d}"
    meta_text = json.dumps(meta, indent=1, sort_keys=True, allow_nan=False)
    with atomic_dir(final) as folder:
        _write_or_explain(
            final / MODEL_FILE, lambda: save_safetensors_model(unwrap_model(model), str(folder / MODEL_FILE))
        )
        state = optimizer.state_dict() if optimizer is not None else {}
        _write_or_explain(final / OPTIMIZER_FILE, lambda: torch.save(state, folder / OPTIMIZER_FILE))
        _write_or_explain(
            final / META_FILE, lambda: (folder / META_FILE).write_text(meta_text, encoding="utf-8")
        )
    return final


def _write_or_explain(named: Path, write) -> None:
    # The writers report a full disk each in their own way; DiskFullError names the file being written.
    try:
        write()
    except Exception as error:
        if is_disk_full(error):
            raise DiskFullError(named, error) from error
        raise


def recover_checkpoints(out_dir: str | os.PathLike) -> list[str]:
    """Cleans up after checkpoint writers that were killed, before a job uses `out_dir` again: an
    interrupted same-step replacement is finished or undone (the parked complete copy is put back if the
    new one never arrived), and temps of dead writers are removed. Returns the names found. Only the one
    process that writes checkpoints in `out_dir` should call it."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = sorted(entry.name for entry in os.scandir(out_dir) if _CKPT_TEMP.fullmatch(entry.name))
    for target in sorted({_CKPT_TEMP.fullmatch(name).group(1) for name in found}):
        recover_dir(out_dir / target)
    return found


# ------------------------------------------------------------------------------------ sharded writing


def _collective_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _on_any_rank(flag: bool) -> bool:
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _from_rank0(value):
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _disk_full_file(error: BaseException, written: Path, final: Path) -> Path:
    """Where the shard file that ran out of space will live (`final`/sharded/NAME), from the first
    failure a DCP error names with its file under `written`; else `final`/sharded."""
    causes = [f[0] if isinstance(f, tuple) else f for f in getattr(error, "failures", {}).values()]
    for cause in [*causes, error]:
        name = getattr(cause, "filename", None)
        if is_disk_full(cause) and name and Path(name).parent == written:
            return final / SHARDED_DIR / Path(name).name
    return final / SHARDED_DIR


def _write_shards(folder: Path, final: Path, model: torch.nn.Module, optimizer) -> None:
    """Every rank writes its shards into `folder`/sharded (collective); all ranks learn whether every
    rank succeeded, and those that failed raise their own error (a full disk as DiskFullError)."""
    from torch.distributed.checkpoint.api import CheckpointException

    from gpt.fsdp import save_sharded

    error: Optional[BaseException] = None
    try:
        save_sharded(folder / SHARDED_DIR, model, optimizer)
    except (Exception, CheckpointException) as failure:  # DCP's is a BaseException
        error = failure
    if not _on_any_rank(error is not None):
        return
    if error is None:
        raise PeerFailed
    if is_disk_full(error):
        raise DiskFullError(_disk_full_file(error, folder / SHARDED_DIR, final), error) from error
    raise error


def save_sharded_checkpoint(
    out_dir: str | os.PathLike, model: torch.nn.Module, optimizer, meta: dict
) -> Path:
    """Writes `out_dir/ckpt_{meta['step']:07d}` in the sharded layout (module notes) and returns its path.

    A collective: every rank of the FSDP job calls it with the same `out_dir` and step, and `out_dir`
    is one folder for all ranks (shared storage across nodes). Rank 0 makes the temp folder and tells
    the others its name; each rank writes its shards; rank 0 then writes meta.json and renames the folder.
    Every rank returns only once the checkpoint is complete, or raises: non-finite weights on any rank
    (NonFiniteWeightsError, nothing written), and any rank's failure, which rank 0 raises (a full disk as
    DiskFullError naming the file) while the others raise PeerFailed, so the job reports it once. Nothing
    partial is left: the temp folder goes, a checkpoint of the same step being replaced stays.
    """
    import torch.distributed as dist

    final = Path(out_dir) / f"ckpt_{int(meta['step']):07d}"
    meta_text = json.dumps({**meta, "sharded": True}, indent=1, sort_keys=True, allow_nan=False)
    bad = first_non_finite(model)
    if _on_any_rank(bad is not None):
        raise NonFiniteWeightsError(
            f"weight {bad or '(on another rank)'} is not finite: checkpoint at step {meta.get('step')} not written"
        )
    failure: Optional[BaseException] = None
    if dist.get_rank() == 0:
        told = done = False
        try:
            with atomic_dir(final) as folder:
                _from_rank0(str(folder))
                told = True
                _write_shards(folder, final, model, optimizer)
                _write_or_explain(
                    final / META_FILE, lambda: (folder / META_FILE).write_text(meta_text, encoding="utf-8")
                )
            done = True
        except BaseException as error:  # every rank hears of it below, so none waits forever
            failure = error
            if not told:
                _from_rank0(None)
        reports = failure is not None and not isinstance(failure, PeerFailed)
        _from_rank0((done, reports))
    else:
        folder_name = _from_rank0(None)
        if folder_name is not None:
            try:
                _write_shards(Path(folder_name), final, model, optimizer)
            except BaseException as error:
                failure = error
        done, reports = _from_rank0(None)
        if not done and (reports or failure is None):
            failure = PeerFailed()  # rank 0 says why, once
    if not done:
        raise failure if failure is not None else PeerFailed()
    return final


# ---------------------------------------------------------------------------------------------- finding


def is_sharded(meta: dict) -> bool:
    """Whether a checkpoint's meta says it was written in the sharded layout (by a --fsdp run)."""
    return bool(meta.get("sharded"))


def _is_complete(ckpt_dir: Path) -> bool:
    try:
        meta = json.loads((ckpt_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not (isinstance(meta, dict) and "step" in meta):
        return False
    if is_sharded(meta):
        return (ckpt_dir / SHARDED_DIR / SHARDED_INDEX).is_file()
    return all((ckpt_dir / name).is_file() for name in (MODEL_FILE, OPTIMIZER_FILE))


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


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """`path` itself if it is a checkpoint folder, else the latest complete checkpoint of the training
    output folder `path`; CheckpointError (one line) when it is neither."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such directory (give a checkpoint or a training output folder)")
    if (path / META_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path}: not a training checkpoint, and no complete checkpoint inside it")
    return latest


# ---------------------------------------------------------------------------------------------- loading


def read_meta(ckpt_dir: str | os.PathLike) -> dict:
    path = Path(ckpt_dir) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is not a JSON object")
    return meta


def _tied_groups(model: torch.nn.Module) -> list[list[str]]:
    """State-dict names grouped by the storage they share (the tied embedding/head is one group)."""
    groups: dict[tuple, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def load_weights(path: Path, model: torch.nn.Module, device="cpu") -> None:
    """Loads a safetensors file into `model`, refusing (naming the tensor) a missing, unexpected,
    wrong-shaped or non-finite tensor. Either name of a tied pair may hold it."""
    try:
        tensors = load_safetensors_file(str(path), device=str(device))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}: unreadable weights: {e}") from e
    expected = model.state_dict()
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{path}: tensor {unexpected[0]} is not in the model ({len(unexpected)} unexpected)"
        )
    full = {}
    for group in _tied_groups(model):
        present = [name for name in group if name in tensors]
        if not present:
            raise CheckpointError(f"{path}: tensor {group[0]} is missing")
        tensor = tensors[present[0]]
        want = tuple(expected[group[0]].shape)
        if tuple(tensor.shape) != want:
            raise CheckpointError(
                f"{path}: tensor {present[0]} has shape {tuple(tensor.shape)}, the model needs {want}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {present[0]} holds NaN or infinite values")
        full.update({name: tensor for name in group})
    model.load_state_dict(full, strict=True)


def load_optimizer_state(path: Path, model: torch.nn.Module, optimizer, device="cpu") -> None:
    """Loads optimizer.pt with `weights_only=True` (a pickle naming anything but tensors and plain
    containers is refused) and checks each state tensor against its parameter before using it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused to load the optimizer state: {first}") from e
    if not (isinstance(state, dict) and isinstance(state.get("param_groups"), list)):
        raise CheckpointError(f"{path}: not an optimizer state dict")
    names = {id(p): name for name, p in unwrap_model(model).named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    saved_sizes = [len(group.get("params", ())) for group in state["param_groups"]]
    if saved_sizes != sizes:
        raise CheckpointError(f"{path}: parameter groups of sizes {saved_sizes}, the optimizer has {sizes}")
    for index, entry in (state.get("state") or {}).items():
        if not (isinstance(index, int) and 0 <= index < len(params)):
            raise CheckpointError(f"{path}: state for parameter {index!r}, the optimizer has {len(params)}")
        param = params[index]
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise CheckpointError(
                    f"{path}: optimizer {key} of {names.get(id(param), index)} has shape "
                    f"{tuple(value.shape)}, the parameter {tuple(param.shape)}"
                )
    optimizer.load_state_dict(state)


def load_checkpoint(
    ckpt_dir: str | os.PathLike, model: torch.nn.Module, optimizer=None, device="cpu"
) -> dict:
    """Loads weights into `model` (and state into `optimizer` when given); returns the meta dict."""
    ckpt_dir = Path(ckpt_dir)
    if not _is_complete(ckpt_dir):
        raise CheckpointError(
            f"{ckpt_dir}: not a complete checkpoint (needs {MODEL_FILE}, {OPTIMIZER_FILE}, {META_FILE})"
        )
    meta = read_meta(ckpt_dir)
    if is_sharded(meta):
        raise CheckpointError(
            f"{ckpt_dir}: a sharded checkpoint (written with --fsdp): resume it with --fsdp, or load it "
            "with load_model"
        )
    load_weights(ckpt_dir / MODEL_FILE, unwrap_model(model), device=device)
    if optimizer is not None:
        load_optimizer_state(ckpt_dir / OPTIMIZER_FILE, model, optimizer, device=device)
    return meta


def _dcp_failure(error: BaseException) -> str:
    """One line from a torch.distributed.checkpoint error: the first rank's own exception."""
    for failure in getattr(error, "failures", {}).values():
        cause = failure[0] if isinstance(failure, tuple) else failure
        return one_line(cause)
    return one_line(error)


def load_sharded_checkpoint(ckpt_dir: str | os.PathLike, model: torch.nn.Module, optimizer=None) -> dict:
    """Loads a sharded checkpoint into a sharded (FSDP) model and optimizer, at any world size; returns
    the meta dict. A collective: every rank calls it with the same `ckpt_dir`."""
    from torch.distributed.checkpoint.api import CheckpointException

    from gpt.fsdp import load_sharded

    ckpt_dir = Path(ckpt_dir)
    if not _is_complete(ckpt_dir):
        raise CheckpointError(f"{ckpt_dir}: not a complete checkpoint (needs {META_FILE} and {SHARDED_DIR}/)")
    meta = read_meta(ckpt_dir)
    if not is_sharded(meta):
        raise CheckpointError(
            f"{ckpt_dir}: not a sharded checkpoint (written without --fsdp): resume it without --fsdp"
        )
    try:
        load_sharded(ckpt_dir / SHARDED_DIR, model, optimizer)
    except CheckpointException as e:
        raise CheckpointError(f"{ckpt_dir / SHARDED_DIR}: {_dcp_failure(e)}") from None
    return meta


def load_sharded_weights(ckpt_dir: Path, model: torch.nn.Module) -> None:
    """The weights of a sharded checkpoint into an ordinary GPT, in this process alone; a missing,
    wrong-shaped or non-finite tensor is a CheckpointError naming it."""
    from torch.distributed.checkpoint.api import CheckpointException

    from gpt.fsdp import load_full_model_state

    where = ckpt_dir / SHARDED_DIR
    try:
        load_full_model_state(where, model)
    except (CheckpointException, RuntimeError, ValueError, OSError) as e:
        raise CheckpointError(f"{where}: cannot load the weights: {_dcp_failure(e)}") from None
    bad = first_non_finite(model)
    if bad is not None:
        raise CheckpointError(f"{where}: tensor {bad} holds NaN or infinite values")


def load_model(ckpt_dir: str | os.PathLike, device="cpu"):
    """(GPT, meta) from a checkpoint, for sampling, evaluation and export; the model is in eval mode."""
    from gpt.model import GPT, GPTConfig

    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    if not isinstance(meta.get("model_config"), dict):
        raise CheckpointError(f"{ckpt_dir / META_FILE}: no 'model_config' entry")
    try:
        config = GPTConfig.from_dict(meta["model_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt_dir / META_FILE}: bad model_config: {e}") from e
    model = GPT(config)
    if is_sharded(meta):
        if not _is_complete(ckpt_dir):
            raise CheckpointError(f"{ckpt_dir}: not a complete checkpoint (no {SHARDED_DIR}/{SHARDED_INDEX})")
        load_sharded_weights(ckpt_dir, model)
    else:
        load_checkpoint(ckpt_dir, model, None, device="cpu")
    return model.to(device).eval(), meta


def tokenizer_spec_from_meta(meta: dict) -> Optional[str]:
    """The tokenizer a checkpoint was trained with: meta["tokenizer"] (a spec string or a manifest-style
    {"spec": ...}), else the training config's "tokenizer"; None when neither says."""
    for value in (meta.get("tokenizer"), (meta.get("config") or {}).get("tokenizer")):
        if isinstance(value, dict):
            value = value.get("spec")
        if isinstance(value, str) and value:
            return value
    return None


def tokenizer_for(meta: dict, override: Optional[str] = None):
    """The tokenizer to encode and decode for a model: `override` (a --tokenizer flag), else the one its
    checkpoint records, else GPT-2's. A missing or unreadable vocab file is a one-line UserError."""
    import gpt.tokenizer

    spec = override or tokenizer_spec_from_meta(meta) or "gpt2"
    try:
        return gpt.tokenizer.load_tokenizer(spec)
    except (OSError, ValueError) as e:
        raise UserError(
            f"tokenizer {spec}: {one_line(e)} (pass --tokenizer with the vocab the model was trained with)"
        ) from e


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def looks_like_hub_id(spec: str) -> bool:
    """Whether a missing `spec` can only mean a hub model ("gpt2", "org/name"): a path that looks local
    (., /, ~, a backslash, or a first folder that exists here) never reaches the network."""
    if not _HUB_ID.fullmatch(spec) or spec.endswith((".json", ".safetensors")):
        return False
    return "/" not in spec or not Path(spec.split("/")[0]).exists()


def load_model_for_inference(
    spec: str | os.PathLike, device: Any = "cpu", allow_hub: bool = False
) -> tuple[Any, dict]:
    """(model in eval mode on `device`, checkpoint meta or {}) from: a training checkpoint directory,
    a training output directory (its latest complete checkpoint), a transformers GPT-2 directory
    (config.json), or, with `allow_hub`, a hub name such as "gpt2" (needs network access)."""
    from gpt.model import GPT

    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / META_FILE).is_file() or latest_checkpoint(path) is not None:
            return load_model(find_checkpoint(path), device=device)
        if (path / "config.json").is_file():
            return GPT.from_hf(path).to(device).eval(), {}
        raise CheckpointError(
            f"{path}: neither a checkpoint, a training output folder with one, nor a transformers model folder"
        )
    if path.exists():
        raise CheckpointError(f"{spec}: not a model directory (a file)")
    if not (allow_hub and looks_like_hub_id(spec)):
        raise CheckpointError(
            f"{spec}: no such directory (give a checkpoint, a training output folder or an exported model)"
        )
    try:
        model = GPT.from_hf(spec)
    except OSError as e:  # transformers' "not found" and "cannot connect" are both OSErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{spec}: not a local folder, and the hub model could not be loaded ({first})"
        ) from e
    return model.to(device).eval(), {}


# ------------------------------------------------------------------------------------------- RNG states
# RNG states travel in meta.json: torch's as base64 of their raw bytes (uint8 tensors), numpy's and
# Python's as lists.


def tensor_to_b64(state: torch.Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def b64_to_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def rng_state() -> dict:
    """This process's torch, CUDA, numpy and Python RNG states as JSON-able data."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    numpy_state = [name, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)]
    state = {
        "torch": tensor_to_b64(torch.get_rng_state()),
        "numpy": numpy_state,
        "python": json.loads(json.dumps(random.getstate())),
    }
    if torch.cuda.is_available():
        state["cuda"] = tensor_to_b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict) -> None:
    """Restores what `rng_state` captured."""
    torch.set_rng_state(b64_to_tensor(state["torch"]))
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(b64_to_tensor(state["cuda"]))
