"""Where a gpt.train process runs: its rank in the torchrun job, its device, its precision.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them the process is a job of one. Ranks talk
through torch.distributed (nccl on CUDA, gloo on CPU). A job of one joins no process group, unless it
shards its model (FSDP needs a group even of one process, as `torchrun --nproc_per_node 1` gives it).
The helpers here are no-ops without a group, so the trainer's code reads the same either way.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Dense bf16 peak FLOP/s by device name, for MFU. CPUs have no meaningful single number: pass --peak-flops.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


class PeerFailed(Exception):
    """Another rank failed and reports why itself; this rank just stops (exit status 2, silently)."""


@dataclass
class Runtime:
    rank: int
    local_rank: int
    world: int
    device: torch.device
    bf16: bool
    previous_threads: int
    distributed: bool  # in a process group: more than one rank, or one rank that shards its model
    local_world: int = 1  # ranks on this node (torchrun's LOCAL_WORLD_SIZE)

    @property
    def multi_node(self) -> bool:
        """Whether ranks of this job run on other machines (checkpoints must then be on shared storage)."""
        return self.world > self.local_world

    @property
    def master(self) -> bool:
        """Rank 0: the one that prints, logs and writes checkpoints."""
        return self.rank == 0

    def say(self, text: str) -> None:
        if self.master:
            print(text, flush=True)

    def warn(self, text: str) -> None:
        """A warning or notice line on stderr, from rank 0 only (every rank sees the same data)."""
        if self.master:
            print(text, file=sys.stderr, flush=True)

    def error(self, prog: str, text: str) -> None:
        """One error line on stderr, from rank 0 only (every rank reaches the same decision)."""
        if self.master:
            print(f"{prog}: error: {text}", file=sys.stderr, flush=True)

    def autocast(self):
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def any_rank(self, *flags: bool) -> list[bool]:
        """For each flag, whether it is true on any rank (one all-reduce for all of them)."""
        values = torch.tensor([1.0 if f else 0.0 for f in flags], device=self.device)
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def from_master(self, value):
        """Rank 0's `value` on every rank (any picklable object): decisions one rank takes for all."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start_runtime(device_choice: str, dtype: str, threads: int | None, sharded: bool = False) -> Runtime:
    """Reads the torchrun environment, picks and prepares the device, sets the CPU thread count and
    joins the process group (with more than one rank, or with `sharded` under torchrun)."""
    launched = under_torchrun()
    distributed = launched and (int(os.environ["WORLD_SIZE"]) > 1 or sharded)
    rank = int(os.environ["RANK"]) if distributed else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
    world = int(os.environ["WORLD_SIZE"]) if distributed else 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world))) if distributed else 1
    name = device_choice
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"  # an explicit index: set_device and DDP need one
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    if distributed:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    return Runtime(rank, local_rank, world, device, bf16, previous_threads, distributed, local_world)


def stop_runtime(rt: Runtime) -> None:
    """Leaves no trace: main() may run in-process (tests)."""
    torch.set_num_threads(rt.previous_threads)
    if rt.distributed and dist.is_initialized():
        # FSDP's modules and DTensors form reference cycles that hold the process group and its pending
        # work: freed now, while the group is alive, rather than by interpreter shutdown after it.
        gc.collect()
        dist.destroy_process_group()


def peak_flops_for(device: torch.device, override: float | None) -> float | None:
    """The device's peak FLOP/s for MFU: `override`, else the table for known GPUs, else None."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS.items():
        if key in name:
            return flops
    return None
