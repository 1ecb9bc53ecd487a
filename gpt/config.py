"""Training configuration: the TrainConfig dataclass, preset files (gpt/presets/*.json) and the CLI.

Precedence: dataclass defaults < preset < command-line flags. Every field is a flag
(`--field-name`), documented by the field's `help` metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def _opt(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


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
    n_layer: int = _opt(12, "transformer blocks")
    n_head: int = _opt(12, "attention heads")
    n_embd: int = _opt(768, "embedding width")
    vocab_size: typing.Optional[int] = _opt(
        50304,
        "embedding rows (padded vocab); unset: the manifest's vocab rounded up to a multiple of 64, else 50304",
    )
    dropout: float = _opt(0.0, "dropout probability (0 for pretraining)")
    # batch
    batch_size: int = _opt(64, "micro-batch size B per process")
    seq_len: int = _opt(1024, "sequence length T (also the model's block size)")
    total_batch_size: int = _opt(524288, "tokens per optimizer step; must be a multiple of B*T*world_size")
    # optimizer and schedule
    max_lr: float = _opt(6e-4, "peak learning rate after warmup")
    min_lr_ratio: float = _opt(0.1, "final learning rate as a fraction of max_lr (cosine decay)")
    warmup_steps: int = _opt(715, "linear warmup steps")
    max_steps: int = _opt(19073, "length of the learning-rate schedule = steps of a full run")
    stop_at_step: typing.Optional[int] = _opt(
        None, "stop (with a checkpoint) after this many steps without changing the schedule; resume later"
    )
    weight_decay: float = _opt(0.1, "AdamW weight decay (2-D weights only)")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.95, "AdamW beta2")
    eps: float = _opt(1e-8, "AdamW epsilon")
    grad_clip: float = _opt(1.0, "clip the global gradient norm to this (0 disables)")
    # evaluation and logging
    log_every: int = _opt(1, "print and log every N steps")
    val_every: int = _opt(250, "validation loss every N steps (0 disables)")
    val_steps: int = _opt(20, "validation batches per evaluation")
    hellaswag: typing.Optional[str] = _opt(
        None, "HellaSwag jsonl path, or 'hub' to download (needs network); unset disables"
    )
    hellaswag_every: int = _opt(250, "HellaSwag every N steps")
    hellaswag_limit: typing.Optional[int] = _opt(None, "evaluate only the first N HellaSwag examples")
    sample_every: int = _opt(250, "generate samples every N steps (0 disables; needs the tokenizer)")
    sample_prompt: str = _opt("I'm a large language model,", "prompt for the samples")
    sample_count: int = _opt(4, "samples per generation")
    sample_tokens: int = _opt(32, "new tokens per sample")
    sample_top_k: int = _opt(50, "top-k for sampling")
    eval_text: typing.Optional[str] = _opt(
        None, "held-out text file for perplexity (e.g. tinyshakespeare.txt)"
    )
    eval_text_every: int = _opt(250, "perplexity on --eval-text every N steps")
    eval_text_tokens: int = _opt(65536, "use at most this many tokens of --eval-text")
    checkpoint_every: int = _opt(
        5000, "checkpoint every N steps (also at the last step and on SIGTERM; 0: only those)"
    )
    resume: bool = _opt(False, "continue from the latest complete checkpoint in --out")
    tensorboard: bool = _opt(
        True, "write TensorBoard events under OUT/tb (skipped if tensorboard is missing)"
    )
    # system
    device: str = _opt("auto", "'auto' (cuda if available), 'cpu' or 'cuda'")
    dtype: str = _opt("auto", "'auto' (bfloat16 autocast on CUDA, float32 on CPU), 'bfloat16' or 'float32'")
    compile: bool = _opt(False, "torch.compile the training forward/backward")
    seed: int = _opt(1337, "seed for initialization, data shuffling and sampling")
    shuffle: bool = _opt(False, "shuffle shard order and document order each epoch (seeded)")
    peak_flops: typing.Optional[float] = _opt(
        None, "peak FLOP/s of one device for MFU (default: H100 989e12, A100 312e12 bf16; CPU: n/a)"
    )
    threads: typing.Optional[int] = _opt(None, "torch CPU threads per process (default: torch's choice)")


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str) -> dict:
    """A preset by name (gpt/presets/NAME.json) or by path; keys must be TrainConfig fields."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(
            f"unknown preset {name_or_path!r}: choose one of {preset_names()} or give a .json path"
        )
    values = json.loads(path.read_text(encoding="utf-8"))
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}")
    return values


def _base_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _parse_optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt.train",
        description="Train GPT-2 on token shards (single process, or under torchrun for DDP).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--preset", help=f"preset name ({', '.join(preset_names())}) or a JSON file of config values"
    )
    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        help_text = f"{f.metadata['help']} (default: {getattr(defaults, f.name)!r})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(
                flag, dest=f.name, type=_parse_optional(kind), metavar=f.name.upper(), help=help_text
            )
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    values = load_preset(args.pop("preset")) if "preset" in args else {}
    values.update(args)
    return TrainConfig(**values)


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
