"""lora.finetune after an interruption: SIGTERM saves the state and --resume continues on the same loss
curve (to the last bit, dropout included); a crash resumes from the last periodic save; --overwrite
replaces only its own output; a run whose weights or losses stop being finite is refused, not saved."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from bpe_fast.cliutil import UserError  # noqa: E402
from bpe_fast.files import MARKER_NAME, OverwriteRefused  # noqa: E402
from lora import config as lora_config  # noqa: E402
from lora import training  # noqa: E402
from lora.run_folder import TrainingDiverged, TrainingInterrupted  # noqa: E402
from lora.tiny_model import write_tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")
QUIET = {"progress": False, "log": lambda _: None}


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("models") / "gpt2", "gpt2")


def config_for(model, out, **overrides):
    # 8 steps of 4 samples; LoRA dropout on, so an exact resume needs the generator state too.
    args = ["--model", str(model), "--out", str(out), "--data", "alpaca-sample", "--max-samples", "32"]
    args += ["--eval-samples", "4", "--max-length", "48", "--batch-size", "4", "--lr", "1e-2", "--r", "2"]
    args += ["--dropout", "0.1", "--probe-tokens", "0", "--device", "cpu", "--checkpoint-every", "3"]
    return dataclasses.replace(lora_config.parse_config(args), **overrides)


def stop_at(monkeypatch, training_call: int, how):
    """Make the loss function act on its `training_call`-th call in training mode."""
    real = training.loss_sum_and_count
    calls = {"n": 0}

    def patched(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == training_call:
                how()
        return real(model, batch)

    monkeypatch.setattr(training, "loss_sum_and_count", patched)


@pytest.fixture(scope="module")
def uninterrupted(tiny_gpt2, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    model, _, summary = training.finetune_model(config_for(tiny_gpt2, out), **QUIET)
    return out, summary


def adapter_tensors(out):
    return load_file(str(out / "adapter_model.safetensors"))


def test_sigterm_saves_and_resume_continues_the_same_curve(tiny_gpt2, tmp_path, monkeypatch, uninterrupted):
    whole_out, whole = uninterrupted
    out = tmp_path / "run"
    stop_at(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingInterrupted):
        training.finetune_model(config_for(tiny_gpt2, out), **QUIET)
    partial = tmp_path / "run.partial"
    assert not out.exists()
    state = json.loads((partial / "resume" / "state.json").read_text())
    assert state["step"] == 5 and len(state["history"]) == 5  # saved at the step the signal arrived in
    assert json.loads((partial / MARKER_NAME).read_text()) == {"tool": "lora.finetune"}

    monkeypatch.undo()
    with pytest.raises(UserError, match="holds an interrupted run saved at step 5: pass --resume"):
        training.finetune_model(config_for(tiny_gpt2, out), **QUIET)
    with pytest.raises(UserError, match=r"different settings \(lr\)"):
        training.finetune_model(config_for(tiny_gpt2, out, resume=True, lr=2e-2), **QUIET)
    _, _, resumed = training.finetune_model(config_for(tiny_gpt2, out, resume=True), **QUIET)
    assert resumed["resumed_from_step"] == 5
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in whole["history"]]
    assert resumed["heldout_loss_before"] == whole["heldout_loss_before"]
    assert resumed["heldout_loss_after"] == whole["heldout_loss_after"]
    expected = adapter_tensors(whole_out)
    assert all(torch.equal(tensor, expected[name]) for name, tensor in adapter_tensors(out).items())
    assert not partial.exists()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_a_crash_resumes_from_the_last_periodic_save(tiny_gpt2, tmp_path, monkeypatch, uninterrupted):
    _, whole = uninterrupted
    out = tmp_path / "run"

    def crash():
        raise KeyboardInterrupt  # as if killed during step 5: steps 4-5 were never saved

    stop_at(monkeypatch, 5, crash)
    with pytest.raises(KeyboardInterrupt):
        training.finetune_model(config_for(tiny_gpt2, out), **QUIET)
    monkeypatch.undo()
    assert json.loads((tmp_path / "run.partial" / "resume" / "state.json").read_text())["step"] == 3
    _, _, resumed = training.finetune_model(config_for(tiny_gpt2, out, resume=True), **QUIET)
    assert resumed["resumed_from_step"] == 3
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]


def test_overwrite_replaces_only_its_own_output(tiny_gpt2, tmp_path, uninterrupted):
    whole_out, _ = uninterrupted
    out = tmp_path / "copy"
    training.finetune_model(config_for(tiny_gpt2, out, max_samples=4, eval_samples=2), **QUIET)
    first = (out / "run.json").read_text()
    training.finetune_model(
        config_for(tiny_gpt2, out, max_samples=8, eval_samples=2, overwrite=True), **QUIET
    )
    assert (out / "run.json").read_text() != first
    assert json.loads((out / "run.json").read_text())["train_samples"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temp, no parked old copy

    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "precious_thesis.tex").write_text("years of work")
    with pytest.raises(OverwriteRefused, match="will not delete it"):
        training.finetune_model(config_for(tiny_gpt2, foreign, overwrite=True), **QUIET)
    assert (foreign / "precious_thesis.tex").read_text() == "years of work"
    with pytest.raises(OverwriteRefused, match="overlaps the input"):
        training.finetune_model(config_for(tiny_gpt2, tiny_gpt2, overwrite=True), **QUIET)


def test_huge_learning_rate_diverges_and_is_not_saved(tiny_gpt2, tmp_path):
    out = tmp_path / "diverged"
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+: .*lower --lr, now 1e\+30"):
        training.finetune_model(config_for(tiny_gpt2, out, lr=1e30, clip=0.0), **QUIET)
    assert not out.exists()


def test_non_finite_weights_stop_the_run_naming_the_tensor(tiny_gpt2, tmp_path, monkeypatch):
    real_step = torch.optim.AdamW.step

    def poisoning_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"at step 1: the weight .*lora_A.* is no longer finite"):
        training.finetune_model(config_for(tiny_gpt2, out), **QUIET)
    assert not out.exists()
    assert not (tmp_path / "nan.partial" / "resume").exists()  # nothing non-finite was saved either


def test_run_json_is_strict_json_with_non_finite_values_flagged(tiny_gpt2, tmp_path):
    out = tmp_path / "no-heldout"
    training.finetune_model(config_for(tiny_gpt2, out, eval_samples=0, max_samples=4), **QUIET)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    recorded = json.loads((out / "run.json").read_text(), parse_constant=refuse)
    assert recorded["heldout_loss_before"] is None and recorded["heldout_loss_after"] is None
    assert recorded["nonfinite"] == {"heldout_loss_before": "nan", "heldout_loss_after": "nan"}
    assert math.isfinite(recorded["final_train_loss"])
