"""lora.sweep: a 3x2 grid on a tiny GPT-2 writes the table and one PNG per swept dimension, and a re-run
skips the finished runs."""

import csv
import json

import pytest

pytest.importorskip("peft")
pytest.importorskip("matplotlib")

from bpe_fast.cliutil import UserError  # noqa: E402
from lora import sweep  # noqa: E402
from lora.tiny_model import write_tiny_model  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("models") / "gpt2", "gpt2")


def sweep_args(model, out, *extra):
    # Each run: 4 training samples in 2 steps, 2 held-out samples, 2 probe tokens.
    argv = ["--model", str(model), "--out", str(out), "--data", "alpaca-sample", "--max-samples", "4"]
    argv += ["--eval-samples", "2", "--batch-size", "2", "--max-length", "48", "--probe-tokens", "2"]
    argv += ["--lr", "3e-2", "--device", "cpu", *extra]
    return sweep.build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def finished_sweep(tiny_gpt2, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    messages = []
    rows = sweep.run_sweep(
        sweep_args(tiny_gpt2, out, "--r", "1", "2", "4", "--target-modules", "attention", "mlp"),
        log=messages.append,
        progress=False,
    )
    return out, rows, messages


def test_sweep_writes_table_csv_and_plots(finished_sweep):
    out, rows, messages = finished_sweep
    assert len(rows) == 6
    assert sum("training" in m for m in messages) == 6
    names = {row["name"] for row in rows}
    assert names == {f"r{r}-alpha16-{t}" for r in (1, 2, 4) for t in ("attention", "mlp")}
    for name in names:
        assert json.loads((out / "runs" / name / "run.json").read_text())["status"] == "complete"

    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 6
    by_name = {row["run"]: row for row in table}
    # Trainable parameters follow r * (in + out): attention on d=32 is 2 layers x (r*128 + r*64).
    assert int(by_name["r4-alpha16-attention"]["trainable_params"]) == 2 * (4 * 128 + 4 * 64)
    assert int(by_name["r1-alpha16-mlp"]["trainable_params"]) == 2 * (1 * 160 + 1 * 160)
    for row in table:
        assert float(row["heldout_loss_after"]) > 0 and int(row["steps"]) == 2

    markdown = (out / "results.md").read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| r") and "-alpha16-" in line]
    assert len(table_lines) == 6
    assert "generation (instruction probe)" in markdown
    for dimension in ("r", "target_modules"):
        png = out / f"loss_by_{dimension}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert png.name in markdown
    assert not (out / "loss_by_alpha.png").exists()  # alpha was not swept


def test_rerun_skips_finished_runs(finished_sweep, tiny_gpt2):
    out, rows, _ = finished_sweep
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/adapter_model.safetensors")}
    messages = []
    again = sweep.run_sweep(
        sweep_args(tiny_gpt2, out, "--r", "1", "2", "4", "--target-modules", "attention", "mlp"),
        log=messages.append,
        progress=False,
    )
    assert sum("skipped" in m for m in messages) == 6
    assert not any("training" in m or "loading" in m for m in messages)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [r["summary"]["heldout_loss_after"] for r in again] == [
        r["summary"]["heldout_loss_after"] for r in rows
    ]


def test_incomplete_run_is_redone_and_changed_settings_refused(finished_sweep, tiny_gpt2):
    out, _, _ = finished_sweep
    run_json = out / "runs" / "r1-alpha16-attention" / "run.json"
    run_json.unlink()  # as if interrupted before the end
    messages = []
    sweep.run_sweep(
        sweep_args(tiny_gpt2, out, "--r", "1", "--target-modules", "attention"),
        log=messages.append,
        progress=False,
    )
    assert any("r1-alpha16-attention: training" in m for m in messages)
    assert run_json.is_file()
    with pytest.raises(UserError, match="finished with different settings.*lr"):
        sweep.run_sweep(
            sweep_args(tiny_gpt2, out, "--r", "1", "--target-modules", "attention", "--lr", "1e-3"),
            log=lambda _: None,
            progress=False,
        )


def test_yaml_config_and_cli_precedence(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "r: [2, 8]\nalpha: [1, 4]\ntarget_modules: [attention, [q_proj, v_proj]]\nmodel: some-model\nlr: 0.01\n"
    )
    args = sweep.build_parser().parse_args(["--config", str(config), "--out", str(tmp_path), "--alpha", "2"])
    settings, grid = sweep.grid_from_args(args)
    assert grid == {"r": [2, 8], "alpha": [2.0], "target_modules": ["attention", "q_proj,v_proj"]}
    assert settings.model == "some-model" and settings.lr == 0.01
    config.write_text("r: [2]\nlearning_rate: 0.1\n")
    with pytest.raises(UserError, match="unknown settings \\['learning_rate'\\]"):
        sweep.grid_from_args(
            sweep.build_parser().parse_args(["--config", str(config), "--out", str(tmp_path)])
        )


def test_bad_target_in_grid_fails_before_any_run(tiny_gpt2, tmp_path):
    with pytest.raises(UserError, match="match no layer"):
        sweep.run_sweep(
            sweep_args(tiny_gpt2, tmp_path, "--target-modules", "attention", "q_proj"),
            log=lambda _: None,
            progress=False,
        )
    assert not list((tmp_path / "runs").iterdir())


def test_an_interrupted_sweep_resumes_its_run(tiny_gpt2, tmp_path, monkeypatch):
    import os
    import signal

    from lora import training
    from lora.run_folder import TrainingInterrupted

    real = training.loss_sum_and_count
    calls = {"n": 0}

    def sigterm_on_first_step(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(model, batch)

    monkeypatch.setattr(training, "loss_sum_and_count", sigterm_on_first_step)
    with pytest.raises(TrainingInterrupted):
        sweep.run_sweep(sweep_args(tiny_gpt2, tmp_path, "--r", "2"), log=lambda _: None, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "runs" / "r2-alpha16-attention.partial" / "resume" / "state.json").is_file()
    messages = []
    rows = sweep.run_sweep(sweep_args(tiny_gpt2, tmp_path, "--r", "2"), log=messages.append, progress=False)
    assert "[1/1] r2-alpha16-attention: training (resuming at step 1)" in messages
    assert rows[0]["summary"]["resumed_from_step"] == 1 and rows[0]["summary"]["steps"] == 2
    assert not any("notice: --resume" in m for m in messages)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r2-alpha16-attention"]
