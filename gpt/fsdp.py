"""Sharded data parallel for GPT with PyTorch's FSDP2, and sharded checkpoints with torch.distributed.checkpoint.

    from gpt.fsdp import FSDPOptions, shard_model, save_sharded, load_sharded, full_model_state_dict

    model = GPT(config).to(device)                    # the same seed on every rank: the same weights
    shard_model(model, FSDPOptions(param_dtype="bfloat16", activation_checkpointing=True))
    optimizer = model.configure_optimizers(...)       # after sharding: it must hold the sharded parameters

`shard_model` applies `torch.distributed.fsdp.fully_shard` to every transformer block, then to the root
(which then holds the token/position embeddings, the tied LM head and ln_f). Each rank keeps 1/world of
every parameter, gradient and optimizer state as DTensor shards; a block's full parameters exist only
while it runs (all-gathered before, freed after, `reshard_after_forward`). Gradients are reduce-scattered
and averaged over ranks, as DDP averages them, so the same data and seed give the same training.

`checkpoint_activations(model)` (what `activation_checkpointing=True` applies) also works on its own, for
a plain or DDP-wrapped GPT.

Checkpoints (all functions below are collectives: every rank calls them with the same arguments):
- `save_sharded(directory, model, optimizer)` writes each rank's shards of the model and optimizer
  state with DCP (`.metadata` + one `__R_0.distcp` file per rank). `directory` must be the same path on
  every rank and, across nodes, on a shared filesystem (`check_shared_directory` tests that).
- `load_sharded` reads them back into a sharded model and optimizer, at any world size (DCP reshards).
- `full_model_state_dict(model)` gathers the plain, unsharded state dict onto rank 0 (e.g. for export).
- `load_full_model_state(directory, model)` reads a sharded checkpoint into an ordinary GPT in a single
  process, without a process group: the path from an FSDP checkpoint to gpt.sample / gpt.export.

The tied embedding/LM head is one parameter; its checkpoint entry is `transformer.wte.weight` only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

# torch.distributed.fsdp / .checkpoint / .tensor are imported where they are used: DTensor pulls in sympy,
# seconds of start-up that a run without --fsdp (and every one-line CLI error) should not pay.

TIED_KEY = "lm_head.weight"  # the same tensor as EMBEDDING_KEY
EMBEDDING_KEY = "transformer.wte.weight"
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}

# GPT.forward returns logits[..., :real_vocab_size], a view; FSDP2 warns that an in-place op on the root's
# output view would skip its backward hook. Nothing in gpt/ writes into the logits, so the warning
# (emitted for our root class only) is noise. Filtered by the exact class name, nothing else.
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPGPT\) returned a view tensor")


@dataclass(frozen=True)
class FSDPOptions:
    """How `shard_model` shards a GPT.

    param_dtype: the dtype blocks compute in and parameters are all-gathered in ("bfloat16" halves the
        all-gather and the gathered copies); None keeps the parameters' own dtype (fp32). The sharded
        parameters, the gradients the optimizer sees and its state stay fp32 either way.
    reduce_dtype: dtype of the gradient reduce-scatter; "float32" keeps the averaging exact with bf16
        compute. None: the same as param_dtype.
    activation_checkpointing: keep only each block's input in forward and recompute the block in
        backward (less activation memory for ~1/3 more compute).
    reshard_after_forward: free each block's gathered parameters after its forward and gather them again
        for backward (ZeRO-3 memory); False keeps them until backward (ZeRO-2 memory, less traffic). The
        root group (embeddings, tied head, ln_f) always stays gathered from forward to backward.
    compile_blocks: torch.compile each transformer block (`Module.compile`, which keeps parameter names),
        before sharding, so that FSDP's gathers and reduce-scatters stay outside the compiled graphs; the
        way torchtitan compiles under FSDP2.
    """

    param_dtype: Optional[str] = None
    reduce_dtype: Optional[str] = "float32"
    activation_checkpointing: bool = False
    reshard_after_forward: bool = True
    compile_blocks: bool = False

    def __post_init__(self):
        for name in ("param_dtype", "reduce_dtype"):
            value = getattr(self, name)
            if value is not None and value not in _DTYPES:
                raise ValueError(
                    f"FSDPOptions.{name} must be one of {sorted(_DTYPES)} or None, not {value!r}"
                )

    def mixed_precision(self):
        """The torch.distributed.fsdp.MixedPrecisionPolicy these options describe."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        param = _DTYPES[self.param_dtype] if self.param_dtype else None
        reduce = _DTYPES[self.reduce_dtype] if self.reduce_dtype else None
        return MixedPrecisionPolicy(param_dtype=param, reduce_dtype=reduce)


def checkpoint_activations(model: torch.nn.Module) -> torch.nn.Module:
    """Makes every transformer block of a GPT recompute its activations in backward (plain, DDP or
    FSDP alike; for FSDP call it before sharding, as `shard_model` does). Each block's instance gets a
    forward that runs the original one under torch.utils.checkpoint; the module tree is untouched, so
    parameter names, state dicts and checkpoints are the same with and without it, and FSDP's hooks run
    around the call as before and gather the parameters again for the recomputation."""
    for block in model.transformer.h:
        if getattr(block, "_recomputes_activations", False):
            continue
        inner = block.forward

        def forward(x: torch.Tensor, inner=inner) -> torch.Tensor:
            return checkpoint(inner, x, use_reentrant=False)

        block.forward = forward
        block._recomputes_activations = True
    return model


def shard_model(model: torch.nn.Module, options: FSDPOptions = FSDPOptions(), mesh=None) -> torch.nn.Module:
    """Shards a gpt.model.GPT in place over `mesh` (default: all ranks of the default process group) and
    returns it. Call after moving the model to its device and before building the optimizer."""
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise RuntimeError("shard_model needs torch.distributed initialised (run under torchrun)")
    if is_sharded(model):
        raise ValueError("the model is already sharded")
    policy = options.mixed_precision()
    if options.activation_checkpointing:
        checkpoint_activations(model)
    if options.compile_blocks:
        for block in model.transformer.h:
            block.compile()
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=options.reshard_after_forward)
    # The root holds the embeddings, the tied head and ln_f. Its parameters stay gathered after forward:
    # backward starts with the head, so freeing them would only mean gathering them again at once.
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    # GPT.forward returns its logits as a slice of the padded head's output (a view), and FSDP2 warns at
    # every such forward that an in-place op on it would skip a hook. Nothing in this repository changes
    # the logits in place (they are only read, or passed to cross_entropy), so the warning is noise here.
    warnings.filterwarnings(
        "ignore", message=r"FSDP2-wrapped module \(.*\) returned a view tensor", category=UserWarning
    )
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` is FSDP-sharded (if torch's FSDP was never imported, nothing is)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, enabled: bool):
    """Micro-steps of gradient accumulation: for DDP, `enabled=False` skips the all-reduce (`no_sync`).
    FSDP reduce-scatters every micro-step regardless: skipping it would keep full unsharded gradients on
    every rank, the memory FSDP exists to save. The result is the same average either way."""
    if enabled or is_sharded(model) or not hasattr(model, "no_sync"):
        yield
    else:
        with model.no_sync():
            yield


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (e.g. the grad norm FSDP's clip_grad_norm_ returns); others as is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """The global L2 norm of all gradients (sharded or not), without clipping."""
    norms = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    if not norms:
        return torch.zeros(())
    squares = sum(full_tensor(n) ** 2 for n in norms)
    return squares.sqrt()


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ over the model; returns the pre-clip norm as a plain tensor."""
    return full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))


# ------------------------------------------------------------------------------------------ checkpoints


def _untied(state: dict) -> dict:
    """The tied head's entry dropped: DCP would write the embedding twice."""
    return {k: v for k, v in state.items() if k != TIED_KEY}


def _state(model: torch.nn.Module, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return {"model": _untied(get_model_state_dict(model))}
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": _untied(model_state), "optimizer": optimizer_state}


def save_sharded(directory: str | os.PathLike, model: torch.nn.Module, optimizer=None) -> Path:
    """Writes this rank's shards of the model (and optimizer) state into `directory` (collective).

    Not atomic by itself: the caller writes into a temporary directory and renames it on rank 0 after a
    barrier: gpt.checkpoint.save_sharded_checkpoint, what gpt.train --fsdp writes checkpoints with."""
    import torch.distributed.checkpoint as dcp

    directory = Path(directory)
    # overwrite=False: the callers write into a fresh temporary directory, so files already there mean a
    # mistake, and DCP's default (overwrite, with a warning) would mix two checkpoints' shards.
    writer = dcp.FileSystemWriter(str(directory), overwrite=False)
    dcp.save(_state(model, optimizer), storage_writer=writer)
    return directory


def load_sharded(directory: str | os.PathLike, model: torch.nn.Module, optimizer=None) -> None:
    """Loads what `save_sharded` wrote into a sharded model (and optimizer), at any world size (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    state = _state(model, optimizer)
    dcp.load(state, checkpoint_id=str(directory))
    model_state = dict(state["model"])
    model_state[TIED_KEY] = model_state[EMBEDDING_KEY]
    if optimizer is None:
        set_model_state_dict(model, model_state)
    else:
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=state["optimizer"])


def full_model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded model state dict on CPU, on rank 0 (empty on other ranks); a collective.
    Keys and shapes are those of an unwrapped GPT's `state_dict()`, the tied head included."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_model_state(directory: str | os.PathLike, model: torch.nn.Module) -> None:
    """Reads the model part of a sharded checkpoint into an ordinary (unsharded) GPT in this process
    alone, with no process group: for sampling and export."""
    import torch.distributed.checkpoint as dcp

    state = _untied(model.state_dict())
    with warnings.catch_warnings():
        # no_dist=True says so already; DCP still warns that it "assumes" a single process.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninit")
        dcp.load({"model": state}, checkpoint_id=str(directory), no_dist=True)
    # state_dict() tensors share storage with the parameters: the load wrote into the model.


def check_shared_directory(directory: str | os.PathLike) -> None:
    """Raises on every rank unless every rank sees the same `directory` (a collective): rank 0 writes a
    random token there, the others must read it back. Sharded checkpoints need one filesystem for all."""
    directory = Path(directory)
    tokens = [uuid.uuid4().hex]
    dist.broadcast_object_list(tokens, src=0)
    probe = directory / f".shared-probe-{tokens[0]}"
    if dist.get_rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text(tokens[0], encoding="utf-8")
    dist.barrier()
    try:
        seen = probe.read_text(encoding="utf-8") == tokens[0]
    except OSError:
        seen = False
    misses = torch.tensor([0 if seen else 1], dtype=torch.long)
    if dist.get_backend() == "nccl":
        misses = misses.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(misses)
    dist.barrier()
    if dist.get_rank() == 0:
        probe.unlink(missing_ok=True)
    if misses.item():
        raise RuntimeError(
            f"{directory}: {misses.item()} rank(s) do not see the files rank 0 writes there; sharded "
            "checkpoints need --out on a filesystem shared by every node"
        )
