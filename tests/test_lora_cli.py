"""Every lora command answers a user's mistake in one line: exit status 2, one line on stderr naming the
problem, no traceback, well under 10 s, and no network for a path that looks local. Each case runs the
real command line (python -m lora.X) in a subprocess with the hub offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpe_fast.files import MARKER_NAME
from conftest import CHILD_PYTHONPATH

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    """Folders that pass the cheap checks without any model being loaded: a model folder (config.json),
    an adapter folder naming it, an unrelated folder with a file, an earlier sweep's folder."""
    root = tmp_path_factory.mktemp("cli")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapter = root / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    (adapter / "run.json").write_text(json.dumps({"settings": {"model": str(model)}}))
    unrelated = root / "thesis"
    unrelated.mkdir()
    (unrelated / "precious_thesis.tex").write_text("years of work")
    pickled = root / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text("{}")
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    return {"root": root, "model": model, "adapter": adapter, "unrelated": unrelated, "pickled": pickled}


def run_cli(module: str, args, cwd: Path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200", PYTHONPATH=CHILD_PYTHONPATH)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", module, *[str(a) for a in args]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


FT = ["--model", "{model}", "--out", "{root}/run"]
CASES = [
    # (id, module, args, expected words on stderr)
    ("finetune-missing-model-name", "lora.finetune", ["--model", "nosuchdir", "--out", "o"], "nosuchdir: no such local folder"),
    ("finetune-missing-model-path", "lora.finetune", ["--model", "./nosuchdir", "--out", "o"], "no such model folder"),
    ("finetune-missing-model-deep", "lora.finetune", ["--model", "{root}/nosuch/dir", "--out", "o"], "path does not exist"),
    ("finetune-hub-model-offline", "lora.finetune", ["--model", "gpt2", "--out", "o"], "HF_HUB_OFFLINE is set"),
    ("finetune-model-not-a-model", "lora.finetune", ["--model", "{root}", "--out", "o"], "has no config.json"),
    ("finetune-missing-gguf", "lora.finetune", ["--model", "nosuch.gguf", "--out", "o"], "no such GGUF file"),
    ("finetune-no-model", "lora.finetune", ["--out", "o"], "--model is required"),
    ("finetune-no-out", "lora.finetune", ["--model", "{model}"], "--out is required"),
    ("finetune-unknown-preset", "lora.finetune", [*FT, "--preset", "gpu-fast"], "not a preset name"),
    ("finetune-missing-preset-file", "lora.finetune", [*FT, "--preset", "nosuch.json"], "no such file"),
    ("finetune-missing-data", "lora.finetune", [*FT, "--data", "nosuch.jsonl"], "nosuch.jsonl: no such file"),
    ("finetune-data-type", "lora.finetune", [*FT, "--data", "{root}/notes.txt"], "unsupported file type '.txt'"),
    ("finetune-data-content", "lora.finetune", [*FT, "--data", "{model}/config.json"], "expected a list of objects"),
    ("finetune-existing-out", "lora.finetune", ["--model", "{model}", "--out", "{unrelated}"], "pass --overwrite"),
    ("finetune-overwrite-foreign", "lora.finetune", ["--model", "{model}", "--out", "{unrelated}", "--overwrite"], "will not delete it"),
    ("finetune-out-is-input", "lora.finetune", ["--model", "{model}", "--out", "{model}", "--overwrite"], "overlaps the input"),
    ("finetune-missing-tokenizer", "lora.finetune", [*FT, "--tokenizer", "./tok"], "no such tokenizer folder"),
    ("finetune-lr-inf", "lora.finetune", [*FT, "--lr", "inf"], "argument --lr: 'inf' is not a finite number"),
    ("finetune-lr-nan", "lora.finetune", [*FT, "--lr", "nan"], "'nan' is not a finite number"),
    ("finetune-lr-negative", "lora.finetune", [*FT, "--lr=-1e-3"], "must be > 0"),
    ("finetune-r-zero", "lora.finetune", [*FT, "--r", "0"], "argument --r: 0 is out of range"),
    ("finetune-dropout-one", "lora.finetune", [*FT, "--dropout", "1"], "must be in [0, 1)"),
    ("finetune-epochs-fraction", "lora.finetune", [*FT, "--epochs", "1.5"], "'1.5' is not an integer"),
    ("finetune-seed-negative", "lora.finetune", [*FT, "--seed", "-1"], "argument --seed"),
    ("finetune-max-length-one", "lora.finetune", [*FT, "--max-length", "1"], "must be >= 2"),
    ("finetune-device", "lora.finetune", [*FT, "--device", "gpu"], "'gpu' is not a device"),
    ("finetune-precision", "lora.finetune", [*FT, "--precision", "fp8"], "invalid choice"),
    ("finetune-bad-preset-value", "lora.finetune", [*FT, "--preset", "{root}/bad.json"], "bad.json: --lr: 'inf' is not a finite number"),
    ("sweep-r-zero", "lora.sweep", ["--model", "{model}", "--out", "{root}/s", "--r", "4", "0"], "argument --r"),
    ("sweep-alpha-inf", "lora.sweep", ["--model", "{model}", "--out", "{root}/s", "--alpha", "inf"], "not a finite number"),
    ("sweep-missing-model", "lora.sweep", ["--model", "./nosuch", "--out", "{root}/s"], "no such model folder"),
    ("sweep-missing-config", "lora.sweep", ["--config", "nosuch.yaml", "--out", "{root}/s"], "cannot be read"),
    ("sweep-foreign-out", "lora.sweep", ["--model", "{model}", "--out", "{unrelated}"], "not made by lora.sweep"),
    ("sweep-no-model", "lora.sweep", ["--out", "{root}/s"], "--model is required"),
    ("evaluate-missing-adapter", "lora.evaluate", ["--adapters", "nosuch"], "nosuch: no such adapter folder"),
    ("evaluate-loss-samples-zero", "lora.evaluate", ["--adapters", "{adapter}", "--loss-samples", "0"], "out of range"),
    ("evaluate-tokens-nan", "lora.evaluate", ["--adapters", "{adapter}", "--max-new-tokens", "nan"], "is not an integer"),
    ("evaluate-missing-model", "lora.evaluate", ["--model", "~/nosuch", "--adapters", "{adapter}"], "no such model folder"),
    ("evaluate-no-model", "lora.evaluate", [], "--model is required"),
    ("evaluate-missing-data", "lora.evaluate", ["--adapters", "{adapter}", "--loss-datasets", "x.csv"], "x.csv: no such file"),
    ("evaluate-out-folder", "lora.evaluate", ["--adapters", "{adapter}", "--out", "{root}"], "is a folder"),
    ("merge-missing-adapter", "lora.merge", ["--adapter", "nosuch", "--out", "m"], "no such adapter folder"),
    ("merge-not-adapter", "lora.merge", ["--adapter", "{model}", "--out", "m"], "not a peft adapter folder"),
    ("merge-pickle-adapter", "lora.merge", ["--adapter", "{pickled}", "--out", "m"], "pickle file, which is never loaded"),
    ("merge-out-is-adapter", "lora.merge", ["--adapter", "{adapter}", "--out", "{adapter}", "--overwrite"], "overlaps the input"),
    ("merge-overwrite-foreign", "lora.merge", ["--adapter", "{adapter}", "--out", "{unrelated}", "--overwrite"], "will not delete it"),
    ("merge-missing-base", "lora.merge", ["--adapter", "{adapter}", "--model", "./gone", "--out", "m"], "no such model folder"),
    ("tiny-model-layers", "lora.tiny_model", ["--out", "t", "--layers", "0"], "argument --layers"),
    ("tiny-model-exists", "lora.tiny_model", ["--out", "{unrelated}"], "already exists"),
]  # fmt: skip


@pytest.mark.parametrize(
    "module, args, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_user_error_is_one_line(fakes, module, args, expected):
    (fakes["root"] / "bad.json").write_text('{"lr": "inf"}')
    (fakes["root"] / "notes.txt").write_text("text")
    args = [arg.format(**fakes) for arg in args]
    before = sorted(p.name for p in fakes["root"].rglob("*"))
    result, seconds = run_cli(module, args, cwd=fakes["root"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"python -m {module}: error: "), lines[0]
    assert expected in lines[0], lines[0]
    assert seconds < 10, f"{seconds:.1f} s"
    assert sorted(p.name for p in fakes["root"].rglob("*")) == before  # nothing made, nothing deleted
    assert (fakes["unrelated"] / "precious_thesis.tex").read_text() == "years of work"


def test_every_command_has_one_line_help_for_each_flag(fakes):
    result, _ = run_cli("lora.finetune", ["--help"], cwd=fakes["root"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "report-alpaca: GPU-sized" in text and "cpu-quick: CPU-sized" in text
    for flag in ("--resume", "--checkpoint-every", "--overwrite", "--lr", "--preset", "--target-modules"):
        assert flag in text


def test_foreign_folders_are_never_marked(fakes):
    assert not (fakes["unrelated"] / MARKER_NAME).exists()
