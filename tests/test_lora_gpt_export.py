"""The pipeline's last link: a model trained by gpt/ (exported with `save_hf`) is fine-tuned by lora/, the
held-out loss drops, and the merged model's logits equal the adapter model's."""

import json

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from gpt.model import GPT, GPTConfig, padded_vocab_size  # noqa: E402
from lora import config as lora_config  # noqa: E402
from lora import training  # noqa: E402
from lora.merge import merge_adapter  # noqa: E402

GPT2_VOCAB = 50257


@pytest.fixture(scope="module")
def exported_gpt(tmp_path_factory):
    torch.manual_seed(0)
    config = GPTConfig(
        block_size=64,
        vocab_size=padded_vocab_size(GPT2_VOCAB),
        real_vocab_size=GPT2_VOCAB,
        n_layer=2,
        n_head=2,
        n_embd=32,
    )
    return GPT(config).save_hf(tmp_path_factory.mktemp("gpt_export") / "hf")


def test_lora_fine_tunes_a_gpt_export_and_merges_exactly(exported_gpt, tmp_path):
    args = ["--model", str(exported_gpt), "--tokenizer", "gpt2-bundled", "--out", str(tmp_path / "run")]
    args += ["--data", "alpaca-sample", "--max-samples", "32", "--eval-samples", "8", "--max-length", "64"]
    args += ["--batch-size", "4", "--lr", "3e-2", "--r", "4", "--alpha", "8", "--probe-tokens", "3"]
    args += ["--target-modules", "all-linear", "--device", "cpu"]
    settings = lora_config.parse_config(args)
    model, tokenizer, summary = training.finetune_model(settings, progress=False, log=lambda _: None)
    assert summary["heldout_loss_after"] < summary["heldout_loss_before"]
    # attn.c_attn (32->96), attn.c_proj (32->32), mlp.c_fc (32->128), mlp.c_proj (128->32) in 2 layers.
    assert summary["trainable_params"] == 2 * 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))

    merged = AutoModelForCausalLM.from_pretrained(
        merge_adapter(tmp_path / "run", tmp_path / "merged", log=lambda _: None)
    ).eval()
    ids = tokenizer("Below is an instruction that describes a task.", return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        difference = (merged(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
    assert difference <= 1e-5
    check = json.loads((tmp_path / "merged" / "merge_check.json").read_text())
    assert check["fp64_exact"] and check["fp64_merged_vs_adapter"] <= 1e-9 and check["saved_logits_equal"]
    assert summary["reload_check"]["identical"]
