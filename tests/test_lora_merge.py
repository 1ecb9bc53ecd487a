"""lora.merge's check: merged and adapter models agree in float64 to rounding level, and a merge that is
wrong (even by far less than float32 logits could show) is caught; float64 really is float64 (RMSNorm's
float32 upcast is lifted); a dequantized GGUF model can be saved."""

import copy
import json

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from peft import get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

from lora import merge, merge_check, modeling  # noqa: E402
from lora.adapters import known_peft_warnings_silenced  # noqa: E402
from lora.tiny_model import tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def trained_looking(arch, targets=("attention", "mlp")):
    """A tiny model with LoRA layers whose B is non-zero (a fresh adapter's B is zero: nothing to merge)."""
    model = tiny_model(arch, n_layer=2, n_embd=32, n_head=2)
    config, _ = modeling.lora_config(model, list(targets), r=4, alpha=8.0, dropout=0.0)
    with known_peft_warnings_silenced():
        peft_model = get_peft_model(model, config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return peft_model


def sample_ids():
    return [
        torch.randint(0, 50257, (1, 24), generator=torch.Generator().manual_seed(2)),
        torch.tensor([[464, 3290]]),
    ]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_merge_is_exact_in_float64_and_within_bound_in_float32(arch):
    merged, report = merge_check.merge_and_check(trained_looking(arch), sample_ids())
    assert report["fp64_exact"] and report["fp64_merged_vs_adapter"] <= merge_check.FP64_EXACT_BOUND
    assert report["fp32_within_tolerance"] and report["fp32_merged_vs_adapter"] <= 1e-5
    assert report["fp32_tolerance"] == merge_check.FP32_TOLERANCE  # tiny models: noise far below 1e-4
    assert merge_check.verdict(report).startswith("merge OK: max |merged - adapter| logits difference")
    assert report["float64_norms_patched"] == (5 if arch == "llama" else 0)  # 2 per layer + the final one
    assert report["largest_update"]["relative_norm"] > 0.01  # the adapter does change the weights
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    assert not any(isinstance(module, LoraLayer) for module in merged.modules())


def _wrong_scale(layers):
    for layer in layers:
        for adapter in layer.scaling:
            layer.scaling[adapter] *= 1 + 1e-6  # far below what float32 logits can tell apart


def _one_layer_left_out(layers):
    layers[0].merge = lambda *args, **kwargs: None


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("corrupt", [_wrong_scale, _one_layer_left_out])
def test_a_wrong_merge_is_caught(arch, corrupt, monkeypatch):
    real = merge_check.merge_lora_layers

    def wrong_merge(peft_model):
        corrupt([module for module in peft_model.modules() if isinstance(module, LoraLayer)])
        return real(peft_model)

    monkeypatch.setattr(merge_check, "merge_lora_layers", wrong_merge)
    _, report = merge_check.merge_and_check(trained_looking(arch), sample_ids())
    assert not report["fp64_exact"]
    assert merge_check.verdict(report).startswith("merge FAILED: merged != adapter in float64")
    if corrupt is _wrong_scale:
        # A float32-only comparison would have passed this merge; the float64 one does not.
        assert report["fp32_within_tolerance"]
        assert report["fp64_merged_vs_adapter"] > 100 * merge_check.FP64_EXACT_BOUND
    else:
        assert not report["fp32_within_tolerance"]  # a layer left out shows in float32 too


def test_merge_adapter_refuses_to_save_a_wrong_merge(tmp_path, monkeypatch):
    model = tiny_model("gpt2", n_layer=2, n_embd=32, n_head=2)
    model.save_pretrained(tmp_path / "base")
    peft_model = trained_looking("gpt2", targets=("attention",))
    peft_model.save_pretrained(tmp_path / "adapter")
    args = (tmp_path / "adapter", tmp_path / "merged", str(tmp_path / "base"), "gpt2-bundled")

    good = merge.merge_adapter(*args, log=lambda _: None)
    report = json.loads((good / "merge_check.json").read_text())
    assert report["fp64_exact"] and report["saved_logits_equal"]

    real = merge_check.merge_lora_layers

    def wrong_merge(peft_model):
        _wrong_scale([module for module in peft_model.modules() if isinstance(module, LoraLayer)])
        return real(peft_model)

    monkeypatch.setattr(merge_check, "merge_lora_layers", wrong_merge)
    with pytest.raises(merge.MergeCheckFailed, match="merge FAILED: merged != adapter in float64"):
        merge.merge_adapter(*args[:1], tmp_path / "bad", *args[2:], log=lambda _: None)
    assert not (tmp_path / "bad").exists()


def test_float64_norms_lift_the_float32_upcast_and_restore_it():
    model = tiny_model("llama", n_layer=1, n_embd=32, n_head=2).double()
    norm = model.model.norm
    x = torch.randn(2, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 1e3 + 1 / 3
    with torch.no_grad():
        upcast = norm(x)
        with merge_check.float64_norms(model) as patched:
            exact = norm(x)
        again = norm(x)
    reference = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight
    assert patched == 3
    assert torch.equal(exact, reference) and not torch.equal(upcast, reference)
    assert torch.equal(again, upcast)  # the class's own forward is back


def test_dequantized_gguf_model_can_be_saved(tmp_path):
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.utils.quantization_config import GgufConfig

    # What transformers leaves on a GGUF model it dequantized to fp32 (e.g. --model smollm2).
    model = copy.deepcopy(tiny_model("llama", n_layer=1, n_embd=32, n_head=2))
    quantizer = GgufHfQuantizer(GgufConfig())
    model.hf_quantizer, model.config.quantization_config = quantizer, quantizer.quantization_config
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")
    modeling._drop_dequantized_gguf_quantizer(model)
    model.save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())
