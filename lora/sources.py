"""Where a model or tokenizer named on the command line comes from: a local folder, a .gguf file,
`smollm2`, or a hub id; decided before anything slow is imported.

A name that looks local (starts with '.', '/' or '~', holds a backslash, has more than one '/', or
whose first folder exists here) is a path: if it is missing, that is the error, and the network is
never tried. Any other name ('gpt2', 'org/name') is a hub id; when the hub cannot be reached, only a
copy already in the local cache is used, and without one the error says so at once instead of
retrying the network.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bpe_fast.cliutil import UserError

SMOLLM2_ALIAS = "smollm2"
BUNDLED_GPT2_TOKENIZER = "gpt2-bundled"
HUB_HOST = "huggingface.co"

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass
class ModelSource:
    """Where from_pretrained reads a model: a directory or hub id, a GGUF file name inside it, and
    whether only the local hub cache may be used (the hub is unreachable)."""

    name_or_path: str
    gguf_file: Optional[str] = None
    local_files_only: bool = False

    def describe(self) -> str:
        return str(Path(self.name_or_path) / self.gguf_file) if self.gguf_file else self.name_or_path

    def from_pretrained_kwargs(self) -> dict:
        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        if self.local_files_only:
            kwargs["local_files_only"] = True
        return kwargs


def hub_offline_by_setting() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.cache
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether huggingface.co answers (once per process): loaders can take minutes to give up offline."""
    if hub_offline_by_setting():
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def looks_local(name: str) -> bool:
    """Whether `name` can only be meant as a path (see the module notes)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    if not _HUB_ID.fullmatch(name):
        return True
    return Path(name).exists() or ("/" in name and Path(name.split("/")[0]).exists())


def _hub_source(name: str, option: str, probe_file: str) -> ModelSource:
    """A hub id: used online as it is; offline, only from the local cache."""
    if hub_reachable():
        return ModelSource(name)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, probe_file)
    if isinstance(cached, str):
        return ModelSource(name, local_files_only=True)
    why = "HF_HUB_OFFLINE is set" if hub_offline_by_setting() else f"{HUB_HOST} cannot be reached"
    raise UserError(
        f"{option} {name}: no such local folder, and it cannot come from the hub ({why}; not in the local "
        "cache): give a local model folder, a .gguf file or 'smollm2'"
    )


def resolve_model_source(model: str, option: str = "--model") -> ModelSource:
    """The source for --model (see the module notes); a missing local path is a one-line error."""
    if model == SMOLLM2_ALIAS:
        from lora.resources import smollm2_gguf_path

        gguf = smollm2_gguf_path()
        return ModelSource(str(gguf.parent), gguf.name)
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UserError(f"{option} {model}: no such GGUF file")
        return ModelSource(str(path.resolve().parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"{option} {model}: the folder has no config.json, so it is not a model folder "
                "(give an HF model folder, e.g. one written by python -m gpt.export)"
            )
        return ModelSource(str(path.resolve()))
    if path.exists():
        raise UserError(
            f"{option} {model}: a file that is not .gguf; give a model folder, a .gguf or a hub id"
        )
    if looks_local(model):
        raise UserError(f"{option} {model}: no such model folder (the path does not exist)")
    return _hub_source(model, option, "config.json")


def resolve_tokenizer_source(tokenizer: Optional[str]) -> Optional[ModelSource]:
    """The source for --tokenizer, or None for the bundled GPT-2 files or the model's own tokenizer."""
    if tokenizer is None or tokenizer == BUNDLED_GPT2_TOKENIZER:
        return None
    path = Path(tokenizer).expanduser()
    if path.is_dir():
        return ModelSource(str(path.resolve()))
    if path.exists() or looks_local(tokenizer):
        raise UserError(
            f"--tokenizer {tokenizer}: no such tokenizer folder; give a folder with tokenizer files, a hub id "
            f"or {BUNDLED_GPT2_TOKENIZER}"
        )
    return _hub_source(tokenizer, "--tokenizer", "tokenizer_config.json")


def local_path(name: Optional[str]) -> Optional[Path]:
    """`name` as an existing local path, else None (hub ids, aliases)."""
    if not name or name == SMOLLM2_ALIAS:
        return None
    path = Path(name).expanduser()
    return path if path.exists() else None
