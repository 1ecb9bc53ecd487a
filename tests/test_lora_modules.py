"""Target-module resolution and trainable parameter counts on tiny GPT-2 (Conv1D) and Llama (Linear) models."""

import warnings

import pytest

pytest.importorskip("peft")

from peft import get_peft_model  # noqa: E402

from bpe_fast.cliutil import UserError  # noqa: E402
from lora import modeling  # noqa: E402
from lora.adapters import known_peft_warnings_silenced  # noqa: E402
from lora.tiny_model import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2", n_layer=2, n_embd=32, n_head=2)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layer=2, n_embd=32, n_head=2)


def lora_trainable(model, targets, r):
    import copy

    config, selected = modeling.lora_config(copy.deepcopy(model), targets, r=r, alpha=1.0, dropout=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with known_peft_warnings_silenced():
            peft_model = get_peft_model(copy.deepcopy(model), config)
    fan_warnings = [w for w in caught if "fan_in_fan_out" in str(w.message)]
    assert not fan_warnings, [str(w.message) for w in fan_warnings]
    trainable, _ = modeling.count_parameters(peft_model)
    return trainable, selected, config, peft_model


# GPT-2 shapes written out from the config, independent of lora.modeling's own arithmetic.
def gpt2_expected(d, layers, r, groups):
    per_layer = {"attention": r * (d + 3 * d) + r * (d + d), "mlp": r * (d + 4 * d) + r * (4 * d + d)}
    return layers * sum(per_layer[g] for g in groups)


@pytest.mark.parametrize(
    "targets, groups",
    [(["attention"], ["attention"]), (["mlp"], ["mlp"]), (["attention", "mlp"], ["attention", "mlp"])],
)
@pytest.mark.parametrize("r", [1, 4])
def test_gpt2_conv1d_counts(gpt2, targets, groups, r):
    trainable, selected, config, _ = lora_trainable(gpt2, targets, r)
    assert trainable == gpt2_expected(32, 2, r, groups)
    assert config.fan_in_fan_out is True
    assert len(selected) == 2 * 2 * len(groups)


def test_gpt2_c_proj_is_split_between_attention_and_mlp(gpt2):
    _, attention, _, _ = lora_trainable(gpt2, ["attention"], 2)
    _, mlp, _, _ = lora_trainable(gpt2, ["mlp"], 2)
    assert {name.rsplit(".", 2)[-2:][0] for name in attention} == {"attn"}
    assert {name.rsplit(".", 2)[-2:][0] for name in mlp} == {"mlp"}
    assert "transformer.h.0.attn.c_proj" in attention and "transformer.h.0.mlp.c_proj" in mlp


def test_gpt2_all_linear_never_touches_tied_lm_head(gpt2):
    trainable, selected, _, peft_model = lora_trainable(gpt2, ["all-linear"], 2)
    assert trainable == gpt2_expected(32, 2, 2, ["attention", "mlp"])
    assert not any("lm_head" in name for name in selected)
    assert not any("lm_head" in name for name, p in peft_model.named_parameters() if p.requires_grad)


def test_llama_linear_counts(llama):
    config = llama.config
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    assert kv != h  # grouped-query attention makes k/v narrower: a swapped in/out would show
    r = 3
    attention = r * (h + h) + 2 * r * (h + kv) + r * (h + h)
    mlp = 2 * r * (h + inter) + r * (inter + h)
    assert lora_trainable(llama, ["attention"], r)[0] == layers * attention
    assert lora_trainable(llama, ["mlp"], r)[0] == layers * mlp
    assert lora_trainable(llama, ["q_proj,v_proj"], r)[0] == layers * (r * (h + h) + r * (h + kv))
    trainable, _, config_out, _ = lora_trainable(llama, ["all-linear"], r)
    assert trainable == layers * (attention + mlp)
    assert config_out.fan_in_fan_out is False


def test_expected_parameters_helper_matches_peft(llama, gpt2):
    for model, targets in ((llama, ["attention", "mlp"]), (gpt2, ["all-linear"])):
        trainable, selected, _, _ = lora_trainable(model, targets, 5)
        assert modeling.expected_lora_parameters(model, selected, 5) == trainable


def test_unmatched_names_fail_listing_available(llama, gpt2):
    with pytest.raises(UserError, match=r"match no layer.*Available module names: .*q_proj") as error:
        modeling.resolve_target_modules(llama, ["nonexistent"])
    assert "down_proj" in str(error.value)
    # peft would silently adapt q_proj and ignore c_attn; here a partial match is an error.
    with pytest.raises(UserError, match=r"\['c_attn'\] match no layer") as error:
        modeling.resolve_target_modules(llama, ["q_proj", "c_attn"])
    assert "v_proj" in str(error.value)
    with pytest.raises(UserError, match=r"Available module names: .*attn\.c_attn"):
        modeling.resolve_target_modules(gpt2, ["q_proj"])


def test_lm_head_and_non_linear_layers_are_refused(gpt2, llama):
    with pytest.raises(UserError, match="LM head"):
        modeling.resolve_target_modules(gpt2, ["lm_head"])
    with pytest.raises(UserError, match="only Linear/Conv1D"):
        modeling.resolve_target_modules(gpt2, ["attn"])
    with pytest.raises(UserError, match="only Linear/Conv1D"):
        modeling.resolve_target_modules(llama, ["input_layernorm"])


def test_unknown_architecture_group_is_an_error(gpt2):
    import copy

    odd = copy.deepcopy(gpt2)
    odd.config.model_type = "unheard_of"
    with pytest.raises(UserError, match="no 'attention' group is defined for model type 'unheard_of'"):
        modeling.expand_target_modules(odd, ["attention"])
    # all-linear works for any architecture.
    assert modeling.expand_target_modules(odd, ["all-linear"])


def test_gpt_neox_groups_as_in_the_report():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch_model = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    )
    r = 2
    assert lora_trainable(torch_model, ["attention"], r)[0] == 2 * (r * (32 + 96) + r * (32 + 32))
    assert lora_trainable(torch_model, ["mlp"], r)[0] == 2 * (r * (32 + 64) + r * (64 + 32))
    # "dense" alone is the attention output projection only: dense_h_to_4h does not end in ".dense".
    _, selected, _, _ = lora_trainable(torch_model, ["dense"], r)
    assert selected and all(name.endswith("attention.dense") for name in selected)
