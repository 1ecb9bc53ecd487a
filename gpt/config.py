"""Training configuration: the TrainConfig dataclass, preset files (gpt/presets/*.json) and the CLI.

Precedence: dataclass defaults < preset < command-line flags. Every field is a flag
(`--field-name`), documented by the field's `help` metadata. A field's `check` (a bpe_fast.cliutil
argument type) bounds it: the same check parses its flag and validates a preset's value, so NaN,
infinities and out-of-range numbers are refused in one line before any work, wherever they come from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from bpe_fast.cliutil import (
    ArgumentParser,
    UserError,
    bounded,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)

PRESET_DIR = Path(__file__).resolve().parent / "presets"
SEED = bounded(int, minimum=0, maximum=2**63 - 1)  # what numpy's and torch's generators all accept
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float32")


class ConfigError(UserError, ValueError):
    """A bad preset or config value; the message is one line naming it."""


def _opt(
    default, help_text: str, check: Optional[Callable[[str], object]] = None, choices: Sequence[str] = ()
):
    return field(default=default, metadata={"help": help_text, "check": check, "choices": tuple(choices)})


@dataclass
class TrainConfig:
    # data and output
    data: str = _opt("edu_fineweb10B", "folder of {val,train}_NNNNNN.bin shards (from gpt.prepare)")
    out: str = _opt("out", "output folder: log.jsonl, tb/, checkpoints")
    tokenizer: typing.Optional[str] = _opt(
        None,
        "'gpt2' or a vocab.json path, for samples/HellaSwag/perplexity (default: the shards' manifest, else gpt2)",
    )
    # model
    n_layer: int = _opt(12, "transformer blocks", check=positive_int)
    n_head: int = _opt(12, "attention heads", check=positive_int)
    n_embd: int = _opt(768, "embedding width", check=positive_int)
    vocab_size: typing.Optional[int] = _opt(
        50304,
        "embedding rows (padded vocab); unset: the manifest's vocab rounded up to a multiple of 64, else 50304",
        check=positive_int,
    )
    dropout: float = _opt(0.0, "dropout probability (0 for pretraining)", check=fraction)
    # batch
    batch_size: int = _opt(64, "micro-batch size B per process", check=positive_int)
    seq_len: int = _opt(1024, "sequence length T (also the model's block size)", check=positive_int)
    total_batch_size: int = _opt(
        524288, "tokens per optimizer step; must be a multiple of B*T*world_size", check=positive_int
    )
    # optimizer and schedule
    max_lr: float = _opt(6e-4, "peak learning rate after warmup", check=positive_float)
    min_lr_ratio: float = _opt(
        0.1, "final learning rate as a fraction of max_lr (cosine decay)", check=probability
    )
    warmup_steps: int = _opt(715, "linear warmup steps", check=non_negative_int)
    max_steps: int = _opt(
        19073, "length of the learning-rate schedule = steps of a full run", check=positive_int
    )
    stop_at_step: typing.Optional[int] = _opt(
        None,
        "stop (with a checkpoint) after this many steps without changing the schedule; resume later",
        check=positive_int,
    )
    weight_decay: float = _opt(0.1, "AdamW weight decay (2-D weights only)", check=non_negative_float)
    beta1: float = _opt(0.9, "AdamW beta1", check=fraction)
    beta2: float = _opt(0.95, "AdamW beta2", check=fraction)
    eps: float = _opt(1e-8, "AdamW epsilon", check=positive_float)
    grad_clip: float = _opt(
        1.0, "clip the global gradient norm to this (0 disables)", check=non_negative_float
    )
    # evaluation and logging
    log_every: int = _opt(1, "print and log every N steps", check=positive_int)
    val_every: int = _opt(250, "validation loss every N steps (0 disables)", check=non_negative_int)
    val_steps: int = _opt(20, "validation batches per evaluation", check=positive_int)
    hellaswag: typing.Optional[str] = _opt(
        None, "HellaSwag jsonl path, or 'hub' to download (needs network); unset disables"
    )
    hellaswag_every: int = _opt(250, "HellaSwag every N steps", check=positive_int)
    hellaswag_limit: typing.Optional[int] = _opt(
        None, "evaluate only the first N HellaSwag examples", check=positive_int
    )
    sample_every: int = _opt(
        250, "generate samples every N steps (0 disables; needs the tokenizer)", check=non_negative_int
    )
    sample_prompt: str = _opt("I'm a large language model,", "prompt for the samples")
    sample_count: int = _opt(4, "samples per generation", check=positive_int)
    sample_tokens: int = _opt(32, "new tokens per sample", check=positive_int)
    sample_top_k: int = _opt(50, "top-k for sampling", check=positive_int)
    eval_text: typing.Optional[str] = _opt(
        None, "held-out text file for perplexity (e.g. tinyshakespeare.txt)"
    )
    eval_text_every: int = _opt(250, "perplexity on --eval-text every N steps", check=positive_int)
    eval_text_tokens: int = _opt(65536, "use at most this many tokens of --eval-text", check=positive_int)
    checkpoint_every: int = _opt(
        5000,
        "checkpoint every N steps (also at the last step and on SIGTERM; 0: only those)",
        check=non_negative_int,
    )
    resume: bool = _opt(False, "continue from the latest complete checkpoint in --out")
    tensorboard: bool = _opt(
        True, "write TensorBoard events under OUT/tb (skipped if tensorboard is missing)"
    )
    # system
    device: str = _opt("auto", "'auto' (cuda if available), 'cpu' or 'cuda'", choices=DEVICES)
    dtype: str = _opt(
        "auto", "'auto' (bfloat16 autocast on CUDA, float32 on CPU), 'bfloat16' or 'float32'", choices=DTYPES
    )
    compile: bool = _opt(False, "torch.compile the training forward/backward")
    fsdp: bool = _opt(
        False,
        "shard parameters, gradients and optimizer state over the ranks (FSDP2; needs torchrun, even for "
        "one process). With bf16 the weights are gathered in bf16 and gradients reduced in fp32. "
        "Checkpoints are sharded: resume them with --fsdp (any world size); gpt.export/gpt.sample read them",
    )
    activation_checkpointing: bool = _opt(
        False, "recompute each block's activations in backward: less memory, ~1/3 more compute"
    )
    seed: int = _opt(1337, "seed for initialization, data shuffling and sampling", check=SEED)
    shuffle: bool = _opt(False, "shuffle shard order and document order each epoch (seeded)")
    peak_flops: typing.Optional[float] = _opt(
        None,
        "peak FLOP/s of one device for MFU (default: H100 989e12, A100 312e12 bf16; CPU: n/a)",
        check=positive_float,
    )
    threads: typing.Optional[int] = _opt(
        None, "torch CPU threads per process (default: torch's choice)", check=positive_int
    )


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str) -> dict:
    """A preset by name (gpt/presets/NAME.json) or by path; keys must be TrainConfig fields and values
    must pass their field's check."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset {name_or_path!r}: choose one of {', '.join(preset_names())} or give a .json path"
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"preset {path}: not readable JSON ({e})") from e
    if not isinstance(values, dict):
        raise ConfigError(f"preset {path}: expected a JSON object of config values")
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"preset {path}: unknown config keys {unknown}")
    for name, value in values.items():
        _check_value(name, value, f"preset {path}: {name}")
    return values


def _base_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


_HINTS = typing.get_type_hints(TrainConfig)
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _optional(name: str) -> bool:
    return type(None) in typing.get_args(_HINTS[name])


def _check_value(name: str, value, where: str) -> None:
    """Raises ConfigError unless `value` is valid for field `name` (the same checks as its flag)."""
    meta, kind = _FIELDS[name].metadata, _base_type(_HINTS[name])
    if value is None:
        if not _optional(name):
            raise ConfigError(f"{where}: must be set (null is not allowed)")
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    elif (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and isinstance(value, float))
    ):
        raise ConfigError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta["check"] is not None:
        try:
            meta["check"](repr(value) if isinstance(value, float) else str(value))
        except argparse.ArgumentTypeError as e:
            raise ConfigError(f"{where}: {e}") from None


def _flag_type(name: str):
    """The argparse type of a field's flag: its check, and for Optional fields also 'none'."""
    kind = _base_type(_HINTS[name])
    check = _FIELDS[name].metadata["check"] or kind
    if not _optional(name):
        return check

    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else check(text)

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m gpt.train",
        description="Train GPT-2 on token shards (single process, or under torchrun for DDP, or FSDP with --fsdp).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--preset", help=f"preset name ({', '.join(preset_names())}) or a JSON file of config values"
    )
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {getattr(defaults, f.name)!r})"
        if _base_type(_HINTS[f.name]) is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        elif f.metadata["choices"]:
            parser.add_argument(flag, dest=f.name, choices=f.metadata["choices"], help=help_text)
        else:
            parser.add_argument(
                flag, dest=f.name, type=_flag_type(f.name), metavar=f.name.upper(), help=help_text
            )
    return parser


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Checks every field and the relations between fields; raises ConfigError naming the flag."""
    for name in FIELD_NAMES:
        _check_value(name, getattr(cfg, name), "--" + name.replace("_", "-"))
    if cfg.n_embd % cfg.n_head:
        raise ConfigError(f"--n-embd {cfg.n_embd} must be a multiple of --n-head {cfg.n_head}")
    return cfg


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    values = load_preset(args.pop("preset")) if "preset" in args else {}
    values.update(args)
    return check_config(TrainConfig(**values))


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
