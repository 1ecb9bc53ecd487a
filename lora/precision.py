"""Mixed precision for LoRA training: autocast contexts and fp16 loss scaling.

Weights stay fp32 (the "master" copy; LoRA's A/B and the frozen base alike), and autocast runs the
matmuls in fp16/bf16. fp16 additionally needs loss scaling (torch.amp.GradScaler) — the course report
saw fp16 diverge without it — and gradient clipping on the unscaled gradients.
"""

from __future__ import annotations

import contextlib

import torch

from bpe_fast.cliutil import UserError
from lora.config import PRECISIONS

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


def _autocast_works(device: torch.device, dtype: torch.dtype) -> bool:
    try:
        layer = torch.nn.Linear(4, 4).to(device)
        with torch.autocast(device.type, dtype=dtype):
            return layer(torch.ones(2, 4, device=device)).dtype == dtype
    except (RuntimeError, TypeError, AssertionError):
        return False


def resolve_precision(precision: str, device: torch.device, log=print) -> str:
    """The precision actually used: the requested one, or a stated fallback when this device lacks it."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "fp32":
        return precision
    if _autocast_works(device, _DTYPES[precision]):
        if device.type == "cpu" and precision == "fp16":
            log(
                "notice: fp16 autocast on CPU is emulated and usually slower than fp32; bf16 is the CPU choice"
            )
        return precision
    fallback = "bf16" if precision == "fp16" and _autocast_works(device, torch.bfloat16) else "fp32"
    log(f"notice: {precision} autocast is not supported on {device.type} here; using {fallback} instead")
    return fallback


def autocast(device: torch.device, precision: str):
    """Context manager running the forward pass in the given precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 only; bf16 has fp32's exponent range and needs none."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
