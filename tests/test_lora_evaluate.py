"""lora.evaluate: the report's 10 prompts x (base + adapters) table, and held-out loss per data set."""

import json

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from bpe_fast.cliutil import UserError  # noqa: E402
from lora import data as lora_data  # noqa: E402
from lora import evaluate  # noqa: E402
from lora.adapters import known_peft_warnings_silenced  # noqa: E402
from lora.inference import heldout_loss  # noqa: E402
from lora.tiny_model import write_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("models") / "gpt2", "gpt2")


@pytest.fixture(scope="module")
def adapter(tiny_gpt2, tmp_path_factory):
    # A non-identity adapter (random B as well as A) without spending time on training.
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    config = LoraConfig(
        r=4, lora_alpha=64, target_modules=["attn.c_attn"], fan_in_fan_out=True, init_lora_weights=False
    )
    out = tmp_path_factory.mktemp("adapters") / "noisy"
    with known_peft_warnings_silenced():
        get_peft_model(model, config).save_pretrained(str(out))
    return out


def test_report_prompts():
    rows = evaluate.evaluation_prompts("report")
    assert [r["category"] for r in rows] == ["movie"] * 3 + ["general"] * 3 + ["instruction"] * 4
    assert rows[0]["text"] == "I love this movie because"
    assert all(r["text"].startswith("Below is an instruction that describes a task") for r in rows[6:])
    alpaca = evaluate.evaluation_prompts("alpaca")
    assert alpaca[9]["text"] == lora_data.alpaca_prompt(
        "Translate the following English sentence into French.",
        "The sun is shining and the birds are singing.",
    )
    assert alpaca[9]["text"].endswith("### Response:\n")


def test_evaluate_table_and_losses(tiny_gpt2, adapter, tmp_path):
    result = evaluate.evaluate(
        str(tiny_gpt2),
        [adapter],
        names=["Noisy"],
        loss_datasets=["alpaca-sample"],
        loss_samples=3,
        max_length=48,
        max_new_tokens=2,
        device_name="cpu",
        log=lambda _: None,
        progress=False,
    )
    assert result["columns"] == ["Foundation model", "Noisy"]
    assert all(len(result["generations"][c]) == 10 for c in result["columns"])
    markdown = evaluate.render_markdown(result)
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_rows) == 1 + 10 + 1 + 1  # prompts header + 10 prompts + loss header + 1 data set

    # The base column is the plain model (adapter disabled), the adapter column differs from it.
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    rows, _ = lora_data.load_rows("alpaca-sample")
    _, held_out = lora_data.split_rows(rows, 3, None, 0)
    examples, _ = lora_data.encode_rows(tokenizer, held_out, "alpaca", 48)
    plain = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    expected = heldout_loss(plain, examples, tokenizer.eos_token_id, torch.device("cpu"), "fp32")
    losses = result["heldout_loss"]["alpaca-sample"]
    assert losses["Foundation model"] == pytest.approx(expected, rel=1e-6)
    assert losses["Noisy"] != pytest.approx(expected, rel=1e-4)


def test_evaluate_refuses_mismatched_names(tiny_gpt2, adapter):
    with pytest.raises(UserError, match="--names gives 2 names for 1 adapters"):
        evaluate.evaluate(str(tiny_gpt2), [adapter], names=["a", "b"], log=lambda _: None)
    with pytest.raises(UserError, match="no adapter_config.json"):
        evaluate.evaluate(str(tiny_gpt2), [tiny_gpt2], log=lambda _: None)


def _trained_on(folder, rows, eval_samples, seed=0):
    """An adapter folder whose run.json says it trained on `rows`, holding out `eval_samples`."""
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"")
    summary = {
        "data_fingerprint": lora_data.rows_fingerprint(rows),
        "settings": {"data": "alpaca-sample", "seed": seed, "eval_samples": eval_samples},
    }
    (folder / "run.json").write_text(json.dumps(summary))
    return folder


def test_loss_rows_never_include_trained_rows(tmp_path):
    rows, _ = lora_data.load_rows("alpaca-sample")
    quick = _trained_on(tmp_path / "quick", rows, eval_samples=16)
    other = _trained_on(tmp_path / "other", [{"text": "unrelated"}], eval_samples=2)
    notices = []
    limit = evaluate.heldout_rows_limit("alpaca-sample", rows, [quick, other], 32, 0, notices.append)
    assert limit == 16
    assert notices == [
        f"notice: --loss-samples 32 lowered to 16 for alpaca-sample: {quick} held out only 16 rows of it "
        "(it trained on the rest)"
    ]
    # The held-out rows scored are exactly the ones the fine-tune held out with that seed.
    assert lora_data.split_rows(rows, limit, None, 0)[1] == lora_data.split_rows(rows, 16, 24, 0)[1]
    assert evaluate.heldout_rows_limit("alpaca-sample", rows, [quick], 8, 0, notices.append) == 8
    with pytest.raises(UserError, match="--seed 0"):
        evaluate.heldout_rows_limit("alpaca-sample", rows, [quick], 8, 1, notices.append)
