"""End to end on a tiny GPT-2 and a tiny Llama: training lowers held-out loss, the saved adapter reloads
with identical logits, the merged model matches the adapter model, and the CLI refuses bad input."""

import dataclasses
import json

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from bpe_fast.cliutil import UserError  # noqa: E402
from bpe_fast.files import OverwriteRefused  # noqa: E402
from lora import config as lora_config  # noqa: E402
from lora import finetune, training  # noqa: E402
from lora.adapters import known_peft_warnings_silenced  # noqa: E402
from lora.merge import merge_adapter  # noqa: E402
from lora.tiny_model import write_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("models") / "gpt2", "gpt2")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("models") / "llama", "llama")


def settings_for(model, out, **overrides):
    args = ["--model", str(model), "--out", str(out)]
    args += ["--data", "alpaca-sample", "--max-samples", "32", "--eval-samples", "8", "--max-length", "64"]
    args += ["--batch-size", "4", "--lr", "3e-2", "--r", "4", "--alpha", "8", "--probe-tokens", "3"]
    args += ["--device", "cpu"]  # the equality checks below compare against CPU models
    return dataclasses.replace(lora_config.parse_config(args), **overrides)


@pytest.fixture(scope="module")
def gpt2_run(tiny_gpt2, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gpt2-alpaca"
    model, tokenizer, summary = training.finetune_model(
        settings_for(tiny_gpt2, out), progress=False, log=lambda _: None
    )
    return out, model, tokenizer, summary


def test_training_lowers_heldout_loss_and_writes_run_json(gpt2_run):
    out, _, _, summary = gpt2_run
    assert summary["heldout_loss_after"] < summary["heldout_loss_before"]
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not out.with_name(out.name + ".partial").exists()
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["status"] == "complete"
    assert recorded["trainable_params"] == 2 * (4 * (32 + 96) + 4 * (32 + 32))
    assert recorded["steps"] == len(recorded["history"]) == 8  # 32 samples / batch 4
    assert recorded["train_samples"] == 32 and recorded["eval_samples"] == 8
    assert set(recorded["probes"]) == {"plain", "instruction"}
    assert recorded["reload_check"]["identical"] is True and recorded["reload_check"]["max_abs_diff"] == 0.0
    assert recorded["settings"]["r"] == 4 and recorded["settings"]["target_modules"] == ["attention"]
    assert all(set(h) == {"step", "loss", "lr", "grad_norm"} for h in recorded["history"])
    # Linear decay from the peak learning rate, as logged.
    assert recorded["history"][0]["lr"] == pytest.approx(3e-2)
    assert recorded["history"][-1]["lr"] < recorded["history"][0]["lr"]
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and config["r"] == 4


def test_adapter_reloads_with_identical_logits(gpt2_run, tiny_gpt2):
    out, model, tokenizer, _ = gpt2_run
    ids = tokenizer("I love this movie because it is", return_tensors="pt")["input_ids"]
    model.eval()
    with known_peft_warnings_silenced():  # peft's own loader, as a user would call it
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gpt2), str(out)).eval()
    with torch.no_grad():
        trained_logits = model(input_ids=ids).logits
        reloaded_logits = reloaded(input_ids=ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(tiny_gpt2)(input_ids=ids).logits
    assert torch.equal(trained_logits, reloaded_logits)
    assert not torch.allclose(trained_logits, base_logits)  # the adapter does change the model


def test_merged_model_matches_adapter_model(gpt2_run, tiny_gpt2, tmp_path):
    out, model, tokenizer, _ = gpt2_run
    merged_dir = merge_adapter(out, tmp_path / "merged", log=lambda _: None)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    ids = tokenizer("The plot was boring, but the acting", return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        difference = (merged(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
    assert difference <= 1e-5
    check = json.loads((merged_dir / "merge_check.json").read_text())
    assert check["fp64_exact"] and check["fp64_merged_vs_adapter"] <= 1e-9 and check["saved_logits_equal"]
    assert check["fp32_merged_vs_adapter"] <= 1e-5
    assert (merged_dir / "tokenizer_config.json").is_file()
    with pytest.raises(OverwriteRefused, match="--overwrite"):
        merge_adapter(out, merged_dir, log=lambda _: None)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_llama_text_mixed_precision_runs(tiny_llama, tmp_path, precision):
    settings = settings_for(
        tiny_llama,
        tmp_path / precision,
        data="imdb-sample",
        precision=precision,
        max_samples=8,
        eval_samples=4,
        probe_tokens=0,
        target_modules=["attention", "mlp"],
        grad_accum=2,
    )
    summary = training.run_finetune(settings, progress=False, log=lambda _: None)
    assert summary["data_format"] == "text"
    assert summary["precision_used"] in ("fp16", "bf16", "fp32")
    assert summary["steps"] == 1  # 8 samples / (batch 4 x accumulation 2)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in summary["history"])
    assert torch.isfinite(torch.tensor(summary["heldout_loss_after"]))


def test_gradient_accumulation_weights_tokens_not_batches(tiny_gpt2, tmp_path):
    # One step over 8 samples must not depend on how they are split into micro-batches.
    results = []
    for batch_size, accum in ((8, 1), (2, 4)):
        settings = settings_for(
            tiny_gpt2,
            tmp_path / f"b{batch_size}",
            max_samples=8,
            eval_samples=4,
            batch_size=batch_size,
            grad_accum=accum,
            dropout=0.0,
            probe_tokens=0,
        )
        summary = training.run_finetune(settings, progress=False, log=lambda _: None)
        results.append((summary["history"][0]["loss"], summary["heldout_loss_after"]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-4)


def test_bad_targets_fail_before_training(tiny_gpt2, tmp_path):
    settings = settings_for(tiny_gpt2, tmp_path / "bad", target_modules=["c_attn", "q_proj"])
    with pytest.raises(UserError, match=r"\['q_proj'\] match no layer.*attn\.c_attn"):
        training.run_finetune(settings, progress=False, log=lambda _: None)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


def test_existing_out_needs_overwrite(gpt2_run, tiny_gpt2):
    out = gpt2_run[0]
    with pytest.raises(OverwriteRefused, match="--overwrite"):
        training.run_finetune(settings_for(tiny_gpt2, out), progress=False, log=lambda _: None)


def test_presets_fill_unset_flags_only():
    settings = lora_config.parse_config(
        ["--model", "m", "--out", "o", "--preset", "report-alpaca", "--r", "2"]
    )
    assert settings.r == 2  # explicit flag wins
    assert (settings.alpha, settings.lr, settings.epochs) == (1.0, 3e-2, 2)
    assert (settings.batch_size, settings.grad_accum, settings.max_samples) == (1, 8, 1024)
    assert settings.data == "alpaca"
    assert lora_config.parse_config(["--model", "m", "--out", "o", "--preset", "report-imdb"]).r == 4


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.main(["--help"])  # argparse exits after printing the help
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--data", "--r", "--alpha", "--dropout", "--target-modules", "--lr", "--epochs",
                 "--batch-size", "--grad-accum", "--max-samples", "--max-length", "--precision", "--clip",
                 "--preset", "--logdir", "--out", "--eval-samples"):  # fmt: skip
        assert flag in text


def test_non_finite_gradient_skips_the_step(tiny_gpt2, tmp_path, monkeypatch):
    # Poison the first training window's loss: that step must be skipped, not turn the adapter into NaN.
    real = training.loss_sum_and_count
    calls = {"training": 0}

    def poisoned(model, batch):
        loss, count = real(model, batch)
        if model.training:
            calls["training"] += 1
            if calls["training"] == 1:
                loss = loss * float("nan")
        return loss, count

    monkeypatch.setattr(training, "loss_sum_and_count", poisoned)
    settings = settings_for(tiny_gpt2, tmp_path / "nan", max_samples=8, eval_samples=2, probe_tokens=0)
    model, _, summary = training.finetune_model(settings, progress=False, log=lambda _: None)
    assert summary["steps"] == 2 and summary["skipped_steps_nonfinite_grad"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(torch.tensor(summary["heldout_loss_after"]))
