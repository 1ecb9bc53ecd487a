"""lora.evaluate: the report's 10 prompts x (base + adapters) table, and held-out loss per data set."""

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from lora import data as lora_data  # noqa: E402
from lora import evaluate  # noqa: E402
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
    with pytest.raises(ValueError, match="--names gives 2 names for 1 adapters"):
        evaluate.evaluate(str(tiny_gpt2), [adapter], names=["a", "b"], log=lambda _: None)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        evaluate.evaluate(str(tiny_gpt2), [tiny_gpt2], log=lambda _: None)
