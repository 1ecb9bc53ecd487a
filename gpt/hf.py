"""Conversion between gpt.model.GPT and transformers' GPT2LMHeadModel (weights and config).

    model = GPT.from_hf("gpt2")          # or a local directory, or a GPT2LMHeadModel object
    model.save_hf("exported/")           # config.json + model.safetensors, unpadded vocabulary

Module names are the same on both sides (transformer.h.0.attn.c_attn, ...), so a state dict maps one to
one, except that HF keeps the four projections below as Conv1D modules storing their weight as
(in, out) where nn.Linear stores (out, in): those are transposed on the way in and out. The LM head is
tied to the token embedding on both sides and is never stored separately. Our embedding may have padded
rows (see gpt.model); HF's has exactly the real vocabulary.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Optional

import torch

from bpe_fast.files import atomic_path, atomic_write_text
from gpt.model import GPT, VOCAB_MULTIPLE, GPTConfig, padded_vocab_size

CONV1D_WEIGHT_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def check_hf_config_supported(hf_config: Any) -> None:
    """Refuses GPT-2 variants GPT does not implement (the logits would silently differ)."""
    problems = []
    if getattr(hf_config, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function={hf_config.activation_function!r} (only GELU-tanh)")
    n_inner = getattr(hf_config, "n_inner", None)
    if n_inner is not None and n_inner != 4 * hf_config.n_embd:
        problems.append(f"n_inner={n_inner} (only 4 * n_embd)")
    if not getattr(hf_config, "scale_attn_weights", True):
        problems.append("scale_attn_weights=False")
    if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx=True")
    if getattr(hf_config, "add_cross_attention", False):
        problems.append("add_cross_attention=True")
    if not getattr(hf_config, "tie_word_embeddings", True):
        problems.append("tie_word_embeddings=False")
    eps = getattr(hf_config, "layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        problems.append(f"layer_norm_epsilon={eps} (only 1e-5)")
    if problems:
        raise ValueError("unsupported GPT-2 configuration: " + "; ".join(problems))


def hub_offline(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub is out of reach: HF_HUB_OFFLINE is set, or (when no proxy is
    configured) its host cannot be connected to within `timeout` seconds. Offline, huggingface_hub
    would retry each file for about half a minute before giving up."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if any(os.environ.get(name) for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return False  # only the proxy can tell
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return True
    return False


def from_hf(model_or_dir: Any, vocab_multiple: int = VOCAB_MULTIPLE, model_class: type = GPT) -> GPT:
    """A GPT holding the weights of a transformers GPT2LMHeadModel (an object, a local directory, or a
    hub name such as "gpt2", which needs network access, or the hub cache when offline). The vocabulary
    is padded up to a multiple of `vocab_multiple` with zero rows; `config.real_vocab_size` remembers
    the real size."""
    hf_model = model_or_dir
    if isinstance(model_or_dir, (str, os.PathLike)):
        from transformers import GPT2LMHeadModel

        local = Path(model_or_dir).is_dir()
        hf_model = GPT2LMHeadModel.from_pretrained(str(model_or_dir), local_files_only=local or hub_offline())
    hf_config = hf_model.config
    check_hf_config_supported(hf_config)
    config = GPTConfig(
        block_size=hf_config.n_positions,
        vocab_size=padded_vocab_size(hf_config.vocab_size, vocab_multiple),
        real_vocab_size=hf_config.vocab_size,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
    )
    model = model_class(config)
    source = {k: v for k, v in hf_model.state_dict().items() if k != "lm_head.weight"}
    target = model.state_dict()
    expected = {k for k in target if k != "lm_head.weight"}  # the head is the tied embedding
    # Older transformers versions keep the causal mask as buffers named attn.bias / attn.masked_bias.
    source = {
        k: v
        for k, v in source.items()
        if k.split(".")[-2:] not in (["attn", "bias"], ["attn", "masked_bias"])
    }
    if set(source) != expected:
        missing, extra = sorted(expected - set(source)), sorted(set(source) - expected)
        raise ValueError(
            f"GPT2LMHeadModel state dict mismatch: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    with torch.no_grad():
        for name, tensor in source.items():
            if name.endswith(CONV1D_WEIGHT_SUFFIXES):
                tensor = tensor.t()
            if name == "transformer.wte.weight":
                target[name].zero_()  # the padded rows stay zero
                target[name][: tensor.shape[0]].copy_(tensor)
                continue
            if target[name].shape != tensor.shape:
                raise ValueError(
                    f"{name}: shape {tuple(tensor.shape)} != expected {tuple(target[name].shape)}"
                )
            target[name].copy_(tensor)
    return model


def hf_state_dict(model: GPT, vocab_size: Optional[int] = None) -> dict[str, torch.Tensor]:
    """The weights under GPT2LMHeadModel's names and layouts, with the first `vocab_size` (default
    real_vocab_size) embedding rows. `lm_head.weight` is left out: HF ties it to the embedding."""
    vocab = model.config.real_vocab_size if vocab_size is None else vocab_size
    if not 1 <= vocab <= model.config.vocab_size:
        raise ValueError(f"vocab_size {vocab} must be between 1 and {model.config.vocab_size}")
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        tensor = tensor.detach()
        if name.endswith(CONV1D_WEIGHT_SUFFIXES):
            tensor = tensor.t()
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab]
        out[name] = tensor.to("cpu").contiguous().clone()
    return out


def hf_config_dict(config: GPTConfig, vocab_size: int, eos_token_id: Optional[int]) -> dict:
    """config.json of the GPT2LMHeadModel matching `config`, with `vocab_size` embedding rows."""
    from transformers import GPT2Config

    hf_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=True,
    )
    hf_config.architectures = ["GPT2LMHeadModel"]
    return hf_config.to_dict()


def save_hf(
    model: GPT,
    out_dir: str | os.PathLike,
    vocab_size: Optional[int] = None,
    eos_token_id: Optional[int] = None,
) -> Path:
    """Writes a directory that `GPT2LMHeadModel.from_pretrained(out_dir)` loads with no missing or
    unexpected keys: config.json and model.safetensors, with `vocab_size` (default the real, unpadded
    size) embedding rows. `eos_token_id` (also used as bos) defaults to 50256 for GPT-2's 50257-token
    vocabulary and to none otherwise. Each file is written atomically."""
    from safetensors.torch import save_file

    vocab = model.config.real_vocab_size if vocab_size is None else vocab_size
    if eos_token_id is None and vocab == 50257:
        eos_token_id = 50256
    if eos_token_id is not None and not 0 <= eos_token_id < vocab:
        raise ValueError(f"eos_token_id {eos_token_id} is outside the vocabulary of {vocab}")
    config = hf_config_dict(model.config, vocab, eos_token_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = hf_state_dict(model, vocab)
    with atomic_path(out_dir / "model.safetensors") as temp_name:
        save_file(tensors, temp_name, metadata={"format": "pt"})
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out_dir
