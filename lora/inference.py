"""Forward passes shared by training, merge and evaluate: token-weighted loss and text generation."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from lora.data import IGNORE_INDEX, Example, collate
from lora.modeling import context_length
from lora.precision import autocast


def loss_sum_and_count(model, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions, and how many there were.

    Summing (rather than HF's per-batch mean) lets gradient accumulation and held-out loss weight every
    labelled token equally, however the tokens are spread across batches.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    predictions = logits[:, :-1, :].float()
    loss = torch.nn.functional.cross_entropy(
        predictions.reshape(-1, predictions.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((targets != IGNORE_INDEX).sum())


def labelled_tokens(batch: Dict[str, torch.Tensor]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


@torch.no_grad()
def heldout_loss(
    model,
    examples: Sequence[Example],
    pad_id: int,
    device: torch.device,
    precision: str,
    batch_size: int = 8,
    on_batch: Optional[Callable[[], None]] = None,
) -> float:
    """Mean loss per labelled token over the examples (nan when there are none); `on_batch` is called
    after each batch (a progress bar's update)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(examples), batch_size):
            batch = {
                k: v.to(device) for k, v in collate(examples[start : start + batch_size], pad_id).items()
            }
            with autocast(device, precision):
                loss, tokens = loss_sum_and_count(model, batch)
            total += float(loss)
            count += tokens
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    return total / count if count else float("nan")


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    device: torch.device,
    max_new_tokens: int = 40,
    sample: bool = False,
    seed: int = 0,
    temperature: float = 0.8,
    top_p: float = 0.95,
    on_prompt: Optional[Callable[[], None]] = None,
) -> List[str]:
    """The continuation (new text only) of each prompt; greedy unless sample=True (seeded per prompt).
    `on_prompt` is called after each prompt (a progress bar's update)."""
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs = []
    try:
        for prompt in prompts:
            encoded = tokenizer(prompt, return_tensors="pt").to(device)
            context = context_length(model)
            if context is not None:
                # A long prompt (the report's instruction probe is ~80 tokens) on a small-context model:
                # keep its end, so prompt + new tokens fit the learned positions instead of indexing past them.
                keep = max(1, context - max_new_tokens)
                encoded = {name: tensor[:, -keep:] for name, tensor in encoded.items()}
            options = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_id, "do_sample": sample}
            if sample:
                torch.manual_seed(seed)
                options.update(temperature=temperature, top_p=top_p)
            else:
                # Greedy: clear sampling defaults a model's generation_config may carry (avoids warnings).
                options.update(temperature=None, top_p=None, top_k=None)
            generated = model.generate(**encoded, **options)
            new_tokens = generated[0, encoded["input_ids"].shape[1] :]
            outputs.append(tokenizer.decode(new_tokens, skip_special_tokens=True))
            if on_prompt is not None:
                on_prompt()
    finally:
        model.train(was_training)
    return outputs
