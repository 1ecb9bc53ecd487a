"""FinetuneConfig: every numeric flag of every lora command refuses NaN, infinities, negatives and
out-of-range values while parsing, with one line; presets, JSON preset files and sweep YAML files pass
the same checks; run records stay strict JSON."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from bpe_fast.cliutil import UserError
from lora import config as lora_config
from lora import evaluate, merge, sweep, tiny_model
from lora.records import json_safe, restore_nonfinite

NUMERIC_FIELDS = sorted(name for name, f in lora_config.FIELDS.items() if f.metadata["parse"] is not None)
OUT_OF_RANGE = {"dropout": "1", "max_length": "1", "r": "0", "lr": "0", "alpha": "0", "seed": str(2**32)}


def parse_fails(parser, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("name", NUMERIC_FIELDS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e999", "x"])
def test_finetune_numeric_flags_refuse_nonsense(name, value, capsys):
    flag = lora_config.flag(name)
    line = parse_fails(lora_config.build_parser(), ["--model", "m", "--out", "o", f"{flag}={value}"], capsys)
    assert f"argument {flag}:" in line


@pytest.mark.parametrize("name", sorted(OUT_OF_RANGE))
def test_finetune_out_of_range_values(name, capsys):
    flag = lora_config.flag(name)
    line = parse_fails(
        lora_config.build_parser(), ["--model", "m", "--out", "o", f"{flag}={OUT_OF_RANGE[name]}"], capsys
    )
    assert "out of range" in line


@pytest.mark.parametrize(
    "parser, argv",
    [
        (sweep.build_parser(), ["--out", "o", "--r", "2", "nan"]),
        (sweep.build_parser(), ["--out", "o", "--alpha", "inf"]),
        (sweep.build_parser(), ["--out", "o", "--alpha=-1"]),
        (sweep.build_parser(), ["--out", "o", "--lr", "nan"]),
        (sweep.build_parser(), ["--out", "o", "--max-steps", "0"]),
        (evaluate.build_parser(), ["--loss-samples", "inf"]),
        (evaluate.build_parser(), ["--max-length", "1"]),
        (evaluate.build_parser(), ["--seed=-3"]),
        (evaluate.build_parser(), ["--max-new-tokens", "0"]),
        (tiny_model.build_parser(), ["--out", "t", "--width", "nan"]),
        (tiny_model.build_parser(), ["--out", "t", "--layers", "0"]),
        (merge.build_parser(), ["--adapter", "a"]),
    ],
)
def test_other_commands_refuse_nonsense(parser, argv, capsys):
    parse_fails(parser, argv, capsys)


def test_values_from_anywhere_pass_the_same_checks(tmp_path):
    with pytest.raises(
        UserError, match=r"--lr: nan is not a finite number|--lr: 'nan' is not a finite number"
    ):
        lora_config.FinetuneConfig(lr=float("nan"))
    with pytest.raises(UserError, match="--r: '2.5' is not an integer"):
        lora_config.FinetuneConfig(r=2.5)
    with pytest.raises(UserError, match="--resume must be true or false"):
        lora_config.FinetuneConfig(resume="yes")
    with pytest.raises(UserError, match="--precision 'fp8': choose one of fp32, fp16, bf16"):
        dataclasses.replace(lora_config.FinetuneConfig(), precision="fp8")
    assert lora_config.FinetuneConfig(r="4", alpha=1).r == 4  # YAML/JSON spellings convert
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps({"lr": 1e-3, "max-length": 64}))
    assert lora_config.config_from_values({"r": 2}, str(preset)).max_length == 64
    preset.write_text(json.dumps({"learning_rate": 1e-3}))
    with pytest.raises(UserError, match=r"unknown settings \['learning_rate'\]"):
        lora_config.config_from_values({}, str(preset))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("model: m\nr: [2, 4]\ndropout: .nan\n")
    with pytest.raises(UserError, match="--dropout: 'nan' is not a finite number"):
        sweep.grid_from_args(sweep.build_parser().parse_args(["--config", str(sweep_file), "--out", "o"]))
    sweep_file.write_text("model: m\nr: [2, -4]\n")
    with pytest.raises(UserError, match="--r: '-4' is out of range|--r: -4 is out of range"):
        sweep.grid_from_args(sweep.build_parser().parse_args(["--config", str(sweep_file), "--out", "o"]))


def test_every_preset_is_a_valid_config_and_marked_by_size():
    for name in lora_config.PRESETS:
        config = lora_config.config_from_values({"model": "m", "out": "o"}, name)
        assert isinstance(config, lora_config.FinetuneConfig)
        assert lora_config.PRESET_NOTES[name].startswith(("GPU-sized", "CPU-sized"))


def test_records_stay_strict_json_and_round_trip():
    record = {"loss": float("nan"), "history": [{"loss": 1.5}, {"loss": float("inf")}], "ok": 2}
    safe = json_safe(record)
    text = json.dumps(safe, allow_nan=False)
    assert safe["nonfinite"] == {"loss": "nan", "history.1.loss": "inf"}
    back = restore_nonfinite(json.loads(text))
    assert math.isnan(back["loss"]) and back["history"][1]["loss"] == math.inf and back["ok"] == 2
    assert json_safe({"a": 1.0}) == {"a": 1.0}
