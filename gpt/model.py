"""GPT-2 (124M by default) in plain PyTorch: the model, its optimizer groups and sampling.

This module imports only torch: the conversion to and from transformers' GPT2LMHeadModel lives in
gpt.hf (reached through `GPT.from_hf` and `GPT.save_hf`), checkpoints in gpt.checkpoint.

Architecture (OpenAI's GPT-2, as build-nanogpt reproduces it): learned position embeddings, pre-LayerNorm
blocks (LN -> causal self-attention -> residual, LN -> MLP -> residual), a GELU(tanh) MLP of width 4x,
a final LayerNorm, and an LM head tied to the token embedding (one tensor, one storage).

Vocabulary padding. `vocab_size` is the number of embedding rows; it is usually the tokenizer's size
rounded up to a multiple of 64 (50257 -> 50304) because matmuls with such shapes run faster on GPUs.
`real_vocab_size` is the tokenizer's size. The padded rows can never be an input (no tokenizer produces
those ids) and are never an output: `forward` slices the logits to `real_vocab_size` columns, so the loss
and every sampled token cover the real vocabulary only. The padded rows therefore receive no gradient;
`from_hf` fills them with zeros and `save_hf` drops them.

Loss: mean cross-entropy over positions whose target is not `IGNORE_INDEX` (-100, PyTorch's and HF's
default, the value lora/ uses for label masking).

`forward` depends only on tensor shapes (no data-dependent Python branches), so it compiles with
`torch.compile` without graph breaks; `generate` keeps its input shape fixed so a compiled model compiles
once for a whole generation.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100
VOCAB_MULTIPLE = 64
INIT_STD = 0.02


def padded_vocab_size(real_vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The smallest multiple of `multiple` that is >= `real_vocab_size` (50257 -> 50304)."""
    if real_vocab_size < 1 or multiple < 1:
        raise ValueError(f"vocab size and multiple must be positive, got {real_vocab_size}, {multiple}")
    return -(-real_vocab_size // multiple) * multiple


@dataclass
class GPTConfig:
    """Hyper-parameters of the model; plain data, so `dataclasses.asdict` round-trips it through JSON.

    `real_vocab_size` defaults to `vocab_size` (no padded rows). For a tokenizer of size n use
    `GPTConfig(vocab_size=padded_vocab_size(n), real_vocab_size=n, ...)`.
    """

    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    real_vocab_size: Optional[int] = None

    def __post_init__(self):
        if self.real_vocab_size is None:
            self.real_vocab_size = self.vocab_size
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "real_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.real_vocab_size > self.vocab_size:
            raise ValueError(
                f"GPTConfig.real_vocab_size ({self.real_vocab_size}) exceeds vocab_size ({self.vocab_size})"
            )
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, data: dict) -> GPTConfig:
        """Builds a config from `asdict` output (e.g. a checkpoint's meta["config"]); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s): {', '.join(unknown)}")
        return cls(**data)


def _normal_init(linear: nn.Linear, std: float) -> None:
    nn.init.normal_(linear.weight, mean=0.0, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, residual_std: float):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # query, key, value for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # writes into the residual stream
        self.resid_dropout = nn.Dropout(config.dropout)
        _normal_init(self.c_attn, INIT_STD)
        _normal_init(self.c_proj, residual_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(batch, seq, width)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig, residual_std: float):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)  # writes into the residual stream
        self.dropout = nn.Dropout(config.dropout)
        _normal_init(self.c_fc, INIT_STD)
        _normal_init(self.c_proj, residual_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, residual_std: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, residual_std)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config, residual_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2. Module names follow HF's GPT2LMHeadModel (transformer.h.0.attn.c_attn, ...) so state dicts
    map one to one (up to the Conv1D transposes), and peft target names like "c_attn" mean the same."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # Each block adds two projections into the residual stream; scaling their init by
        # 1/sqrt(2 * n_layer) keeps the stream's variance from growing with depth (GPT-2 paper, 2.3).
        # Every module initialises its own parameters with the std it is given: no name matching.
        residual_std = INIT_STD / math.sqrt(2 * config.n_layer)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, residual_std) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=INIT_STD)
        nn.init.normal_(self.transformer.wpe.weight, mean=0.0, std=INIT_STD)
        # Tie: the head and the embedding are one Parameter (one storage, one gradient).
        self.lm_head.weight = self.transformer.wte.weight

    # ----------------------------------------------------------------------------------------- forward
    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """idx: (B, T) token ids, T <= block_size. Returns (logits (B, T, real_vocab_size), loss or None)."""
        batch, seq = idx.shape
        if seq > self.config.block_size:
            raise ValueError(f"sequence length {seq} exceeds block_size {self.config.block_size}")
        positions = torch.arange(seq, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        # The matmul runs over the padded width (the fast shape); the padded columns are then cut off.
        logits = self.lm_head(x)[..., : self.config.real_vocab_size]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return logits, loss

    # -------------------------------------------------------------------------------------- accounting
    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count (the tied embedding/head counted once). With `non_embedding`, the position
        embedding is left out; the token embedding stays because it is also the LM head's weight
        (nanoGPT's convention, used by `flops_per_token`)."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.transformer.wpe.weight.numel()
        return total

    def flops_per_token(self, seq_len: Optional[int] = None) -> int:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 * L * H * Q * T, with
        N the non-embedding parameters, L layers, H heads, Q head width, T the sequence length trained on
        (default block_size)."""
        cfg = self.config
        seq = cfg.block_size if seq_len is None else seq_len
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * seq

    def estimate_mfu(self, tokens_per_sec: float, peak_flops: float, seq_len: Optional[int] = None) -> float:
        """Model FLOPs utilisation: achieved FLOP/s over `peak_flops` (e.g. 989e12 for H100 SXM bf16 dense,
        312e12 for A100 bf16). Pass the aggregate throughput and the aggregate peak for multi-GPU runs."""
        if peak_flops <= 0:
            raise ValueError(f"peak_flops must be positive, got {peak_flops}")
        return self.flops_per_token(seq_len) * tokens_per_sec / peak_flops

    # --------------------------------------------------------------------------------------- optimizer
    def decay_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(decayed, not decayed): matrices and embeddings (>= 2-D) decay; biases and LayerNorm gains
        (1-D) do not. The tied embedding/head is one Parameter and appears once."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]

    def configure_optimizers(
        self,
        weight_decay: float = 0.1,
        learning_rate: float = 6e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        device_type: str = "cpu",
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on >= 2-D parameters only; the fused CUDA kernel when available."""
        decay, no_decay = self.decay_groups()
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, **extra)

    # -------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Continues each row of idx (B, T) by `max_new_tokens` tokens; see `generate` (module level),
        which also accepts a torch.compile'd model."""
        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)

    # ---------------------------------------------------------------------------------- HF conversion
    # The conversion code lives in gpt.hf (it needs transformers and writes files); these two methods are
    # the entry points DESIGN.md names, and import it only when called, so `import gpt.model` stays light.
    @classmethod
    def from_hf(cls, model_or_dir: Any, vocab_multiple: int = VOCAB_MULTIPLE) -> GPT:
        """A GPT holding the weights of a transformers GPT2LMHeadModel (an object, a local directory, or a
        hub name such as "gpt2"); see `gpt.hf.from_hf`."""
        from gpt.hf import from_hf

        return from_hf(model_or_dir, vocab_multiple=vocab_multiple, model_class=cls)

    def save_hf(
        self, out_dir: str | os.PathLike, vocab_size: Optional[int] = None, eos_token_id: Optional[int] = None
    ) -> Path:
        """Writes a transformers GPT2LMHeadModel directory (config.json, model.safetensors) with the real,
        unpadded vocabulary; see `gpt.hf.save_hf`."""
        from gpt.hf import save_hf

        return save_hf(self, out_dir, vocab_size=vocab_size, eos_token_id=eos_token_id)


@torch.no_grad()
def generate(
    model: Callable[[torch.Tensor], Any],
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    block_size: Optional[int] = None,
    real_vocab_size: Optional[int] = None,
) -> torch.Tensor:
    """Autoregressive sampling; returns idx (B, T) extended to (B, T + max_new_tokens).

    `model` is a GPT or a torch.compile'd GPT (`torch.compile(model)`): anything called as model(x)
    returning (logits, loss) or an object with `.logits`. `block_size` / `real_vocab_size` default to
    model.config's. temperature 0 picks the most likely token (greedy); otherwise the logits are divided
    by `temperature`, restricted to the `top_k` most likely tokens if given (exactly k, ties broken by
    torch.topk), and sampled with `generator` (seed it for reproducible samples; it must live on idx's
    device). Token ids >= real_vocab_size (padded rows) are never produced.

    The forward pass always sees the same shape (B, W), W = min(block_size, T + max_new_tokens): the
    sequence sits left-aligned in a buffer whose unused tail is ignored thanks to causal attention, and
    once it is longer than block_size the window slides over the last block_size tokens. A compiled model
    therefore compiles once per call shape instead of once per length.
    """
    if idx.dim() != 2 or idx.size(1) < 1:
        raise ValueError(f"idx must be (batch, length >= 1), got shape {tuple(idx.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    config = getattr(model, "config", None)
    if block_size is None:
        if config is None:
            raise ValueError(
                "model has no .config (a DDP wrapper?): pass block_size=, or the unwrapped model"
            )
        block_size = config.block_size
    vocab = real_vocab_size if real_vocab_size is not None else getattr(config, "real_vocab_size", None)
    batch, prompt_len = idx.shape
    total = prompt_len + max_new_tokens
    window = min(block_size, total)
    tokens = torch.zeros(batch, total, dtype=torch.long, device=idx.device)
    tokens[:, :prompt_len] = idx
    for length in range(prompt_len, total):
        start = max(0, length - window)
        out = model(tokens[:, start : start + window].contiguous())
        logits = out[0] if isinstance(out, tuple) else out.logits
        logits = logits[:, length - start - 1, :].float()
        if vocab is not None and logits.size(-1) > vocab:
            logits = logits[:, :vocab]  # never sample padded rows, even from a model that returns them
        if temperature == 0:
            next_token = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = F.softmax(logits / temperature, dim=-1)
            if top_k is not None and top_k < probs.size(-1):
                top_probs, top_ids = torch.topk(probs, top_k, dim=-1)
                choice = torch.multinomial(top_probs, 1, generator=generator)
                next_token = torch.gather(top_ids, -1, choice)
            else:
                next_token = torch.multinomial(probs, 1, generator=generator)
        tokens[:, length] = next_token.squeeze(-1)
    return tokens
