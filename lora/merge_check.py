"""Merging a LoRA adapter into its base model, and checking the merge against the adapter model.

Each adapted layer's W + (alpha / r) * B @ A is computed in float64 and rounded once to W's dtype (peft's
own merge does the product and the sum in the weights' dtype, i.e. two more fp32 roundings).

The check, on the training-probe prompts:
- merged vs adapter model with both computed in float64 from the same saved weights: the merge arithmetic
  is exact when this is at rounding level (<= 1e-9 required; a wrong scale, transpose or layer shows as
  something many orders larger);
- merged vs adapter model in float32 (what a user runs), against a tolerance set by float32 itself: the
  larger of 1e-4 and 4x the float32 noise floor measured on the same tokens (the adapter model's and the
  base model's float32 logits vs their own float64 logits). A correct merge differs from the adapter model
  by about the two models' own rounding errors; a wrong one by far more;
- (lora.merge) the saved folder, loaded back, gives exactly the merged model's float32 logits.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Dict, List, Sequence

import torch

from lora import modeling
from lora.resources import load_eval_prompts

# merged vs adapter in float64: both are the same function of the saved weights, so only float64 rounding
# (~1e-16 relative) may separate them.
FP64_EXACT_BOUND = 1e-9
# merged vs adapter in float32: at least this tolerance, and at least NOISE_MARGIN x the float32 noise floor
# (a 30-layer SmolLM2's base model alone is 5.5e-5 from its float64 logits; docs/RESULTS.md).
FP32_TOLERANCE = 1e-4
NOISE_MARGIN = 4.0


def merge_lora_layers(peft_model):
    """merge_and_unload with each adapted layer merged in float64 and rounded once to its own dtype.

    Returns the plain (unwrapped) model; peft_model's layers are consumed.
    """
    from peft.tuners.lora import LoraLayer

    layers = [module for module in peft_model.modules() if isinstance(module, LoraLayer)]
    if not layers:
        raise ValueError("the model has no LoRA layers to merge")
    for layer in layers:
        dtype = layer.get_base_layer().weight.dtype
        layer.to(torch.float64)
        layer.merge()  # W += transpose(B @ A) * scaling, all in float64
        layer.to(dtype)
    return peft_model.unload()  # the layers are merged already: unload only swaps in the base layers


def check_texts(tokenizer, model) -> List[torch.Tensor]:
    """Token ids of the two training-probe prompts (plain and instruction), cut to the model's context."""
    context = modeling.context_length(model)
    prompts = load_eval_prompts()["training_probe"]
    ids = []
    for name in sorted(prompts):
        encoded = tokenizer(prompts[name], return_tensors="pt")["input_ids"]
        ids.append(encoded[:, -context:] if context else encoded)
    return ids


def _rms_norm_in_input_dtype(module):
    """Llama's RMSNorm formula without its float32 upcast (a forward for `module`)."""

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return module.weight * (hidden_states * torch.rsqrt(variance + module.variance_epsilon))

    return forward


@contextmanager
def float64_norms(model):
    """Make a float64 model compute in float64 throughout.

    transformers' RMSNorm (Llama, Mistral, Qwen: SmolLM2) casts its input to float32 even in a float64
    model, which rounds every normalised activation to float32: "float64" logits would then hide any
    difference below float32 rounding (a merged and an adapter model came out bitwise equal) and the fp32
    noise floor would be measured against a partly-fp32 reference. Inside this context every RMSNorm whose
    float32 output equals Llama's formula bit for bit computes in its input's dtype. Yields how many.
    """
    patched = []
    for module in model.modules():
        if not (type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
            continue
        probe = copy.deepcopy(module).float()
        sample = torch.randn(3, weight.shape[0], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if not torch.equal(probe(sample), _rms_norm_in_input_dtype(probe)(sample)):
                continue  # another formula (e.g. 1 + weight): left as it is
        module.forward = _rms_norm_in_input_dtype(module)
        patched.append(module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward  # back to the class's forward


@torch.no_grad()
def probe_logits(model, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    model.eval()
    return [model(input_ids=ids).logits.double() for ids in inputs]


def _max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@torch.no_grad()
def largest_update(peft_model) -> Dict[str, object]:
    """The adapted layer with the largest ||scaling * B @ A|| / ||W|| (Frobenius), and that ratio."""
    from peft.tuners.lora import LoraLayer

    best = {"layer": None, "relative_norm": 0.0}
    for name, layer in peft_model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        for adapter in layer.active_adapters:
            if adapter not in layer.lora_A:
                continue
            a = layer.lora_A[adapter].weight.double()
            b = layer.lora_B[adapter].weight.double()
            delta = float((b @ a).norm()) * float(layer.scaling[adapter])
            ratio = delta / float(layer.get_base_layer().weight.double().norm())
            if ratio > best["relative_norm"]:
                best = {"layer": name, "relative_norm": ratio}
    return best


def merge_and_check(peft_model, inputs: Sequence[torch.Tensor]):
    """Merge (float64 arithmetic, float32 result) and measure the merge against the adapter model.

    peft_model must be a float32 LoRA model in eval mode; it is consumed. Returns (merged fp32 model,
    report dict). Everything is computed on the CPU.
    """
    peft_model = peft_model.cpu().eval()
    report: Dict[str, object] = {"largest_update": largest_update(peft_model)}
    adapter32 = probe_logits(peft_model, inputs)
    with peft_model.disable_adapter():
        base32 = probe_logits(peft_model, inputs)
    peft_model.to(torch.float64)
    with float64_norms(peft_model) as patched_norms:
        adapter64 = probe_logits(peft_model, inputs)
        with peft_model.disable_adapter():
            base64 = probe_logits(peft_model, inputs)
    merged = merge_lora_layers(peft_model)  # float64 weights: no rounding at all in this merge
    with float64_norms(merged):
        merged64 = probe_logits(merged, inputs)
    merged.to(torch.float32)  # the one rounding of the merged weights
    merged32 = probe_logits(merged, inputs)
    merged.to(torch.float64)
    with float64_norms(merged):
        merged32_weights_in_fp64 = probe_logits(merged, inputs)
    merged.to(torch.float32)
    report.update(
        float64_norms_patched=patched_norms,
        tokens=sum(int(ids.numel()) for ids in inputs),
        max_abs_logit=max(float(x.abs().max()) for x in adapter64),
        fp64_merged_vs_adapter=_max_abs_diff(merged64, adapter64),
        fp32_merged_vs_adapter=_max_abs_diff(merged32, adapter32),
        fp32_noise_adapter=_max_abs_diff(adapter32, adapter64),
        fp32_noise_base=_max_abs_diff(base32, base64),
        fp32_noise_merged=_max_abs_diff(merged32, adapter64),
        fp32_weight_rounding=_max_abs_diff(merged32_weights_in_fp64, adapter64),
    )
    report["fp64_exact"] = report["fp64_merged_vs_adapter"] <= FP64_EXACT_BOUND
    report["fp32_tolerance"] = fp32_tolerance(report)
    report["fp32_within_tolerance"] = report["fp32_merged_vs_adapter"] <= report["fp32_tolerance"]
    return merged, report


def fp32_tolerance(report: Dict[str, object]) -> float:
    """What a correct float32 merge must stay within (see the module notes)."""
    floor = max(report["fp32_noise_adapter"], report["fp32_noise_base"])
    return max(FP32_TOLERANCE, NOISE_MARGIN * floor)


def problems(report: Dict[str, object]) -> List[str]:
    """Why the merge is wrong, or nothing when it is right."""
    found = []
    if not report["fp64_exact"]:
        found.append(
            f"merged != adapter in float64 ({report['fp64_merged_vs_adapter']:.1e} > {FP64_EXACT_BOUND:.0e})"
        )
    if not report["fp32_within_tolerance"]:
        found.append(
            f"float32 difference {report['fp32_merged_vs_adapter']:.1e} over the tolerance "
            f"{report['fp32_tolerance']:.1e}"
        )
    if report.get("saved_logits_equal") is False:
        found.append("the saved model reloads with different logits")
    return found


def verdict(report: Dict[str, object]) -> str:
    """The one line that says whether the merge is right."""
    difference = f"max |merged - adapter| logits difference {report['fp32_merged_vs_adapter']:.1e} in float32"
    wrong = problems(report)
    if wrong:
        return "merge FAILED: " + "; ".join(wrong)
    return f"merge OK: {difference}, within the float32 tolerance {report['fp32_tolerance']:.1e}"


def format_report(report: Dict[str, object]) -> str:
    """The measurements behind the verdict, in one line (all of them are in merge_check.json)."""
    largest = report["largest_update"]
    return (
        f"merge check on {report['tokens']} tokens: float64 |merged - adapter| "
        f"{report['fp64_merged_vs_adapter']:.1e} (exact below {FP64_EXACT_BOUND:.0e}); float32 noise of the "
        f"adapter / base model themselves {report['fp32_noise_adapter']:.1e} / {report['fp32_noise_base']:.1e}; "
        f"largest ||scale*B@A||/||W|| {largest['relative_norm']:.3g}"
    )
