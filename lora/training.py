"""The fine-tuning run behind `python -m lora.finetune`, in named steps:

1. set-up: the output folders (lora.run_folder), the data split, the model with its LoRA layers, the
   tokenized examples;
2. the trainer: AdamW, the loss scaler, the learning-rate schedule; a fresh start measures the held-out
   loss first, a resumed run restores its saved state instead (lora.resume);
3. the loop: one optimizer step per `grad_accum` micro-batches, loss weighted per labelled token,
   clipping, a non-finite gradient skips its step; the resume state is saved every
   `checkpoint_every` steps and on SIGTERM;
4. evaluation: the held-out loss after training and the probe generations; a run whose weights or
   losses are not finite stops here with an error and is never marked complete;
5. saving: the adapter, tensorboard logs and run.json (status complete), written as one folder with
   bpe_fast.files.atomic_dir, then the adapter is loaded back and compared with the trained one.
"""

from __future__ import annotations

import copy
import math
import platform
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from bpe_fast.cliutil import UserError
from bpe_fast.files import atomic_dir, atomic_write_json, write_marker
from lora import data as lora_data
from lora import modeling
from lora.adapters import known_peft_warnings_silenced, load_adapter
from lora.config import TOOL, FinetuneConfig, computed_settings
from lora.inference import generate, heldout_loss, labelled_tokens, loss_sum_and_count
from lora.precision import autocast, grad_scaler, resolve_device, resolve_precision
from lora.records import json_safe
from lora.resources import load_eval_prompts
from lora.resume import load_state, save_state, trainable_parameters
from lora.run_folder import RunFolder, TrainingDiverged, TrainingInterrupted, prepare_run_folder
from lora.sources import resolve_model_source

Log = Callable[[str], None]

# Consecutive steps with a non-finite training loss after which the run is declared diverged (a single
# bad step is skipped; a run that keeps producing NaN would only waste hours).
MAX_NONFINITE_STREAK = 8


# ------------------------------------------------------------------------------------------- 1. set-up


@dataclass
class Examples:
    train: List[lora_data.Example]
    held_out: List[lora_data.Example]
    dropped: Dict[str, int]
    pad_id: int
    max_length: int


@dataclass
class AdaptedModel:
    model: object  # the peft model, on the training device
    tokenizer: object
    target_modules: List[str]
    adapted_layers: int
    trainable: int
    total: int


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def adapt_model(
    config: FinetuneConfig, base_model, tokenizer, device: torch.device, log: Log
) -> AdaptedModel:
    """The base model (loaded, or a sweep's copy) with fresh LoRA layers on the requested modules."""
    from peft import get_peft_model

    if base_model is None or tokenizer is None:
        log(f"loading {config.model} ...")
        model, tokenizer = modeling.load_model_and_tokenizer(config.model, config.tokenizer)
    else:
        model = copy.deepcopy(base_model)  # a sweep reuses its base across runs
    lora_config, selected = modeling.lora_config(
        model, config.target_modules, config.r, config.alpha, config.dropout
    )
    expected = modeling.expected_lora_parameters(model, selected, config.r)
    _seed_everything(config.seed)  # LoRA's A init draws from the global generator
    with known_peft_warnings_silenced():
        model = get_peft_model(model, lora_config).to(device)
    trainable, total = modeling.count_parameters(model)
    if trainable != expected:
        raise RuntimeError(f"peft made {trainable} parameters trainable, expected r*(in+out) = {expected}")
    targets = list(lora_config.target_modules)
    log(f"LoRA on {len(selected)} layers ({', '.join(targets)}): {trainable:,} trainable of {total:,}")
    return AdaptedModel(model, tokenizer, targets, len(selected), trainable, total)


def encode_examples(
    config: FinetuneConfig, split: lora_data.DataSplit, adapted: AdaptedModel, log: Log
) -> Examples:
    max_length = config.max_length
    context = modeling.context_length(adapted.model)
    if context is not None and max_length > context:
        log(f"notice: --max-length {max_length} exceeds the model's context {context}; using {context}")
        max_length = context
    tokenizer, fmt, source = adapted.tokenizer, split.data_format, split.source
    train, train_dropped = lora_data.encode_rows(tokenizer, split.train_rows, fmt, max_length, source)
    held_out, eval_dropped = lora_data.encode_rows(tokenizer, split.eval_rows, fmt, max_length, source)
    if not train:
        raise UserError(f"{source}: no training example fits in --max-length {max_length}; raise it")
    if train_dropped or eval_dropped:
        log(
            f"notice: dropped {train_dropped} train / {eval_dropped} held-out rows whose prompt fills --max-length"
        )
    log(f"data: {source}, format {fmt}: {len(train)} train, {len(held_out)} held-out examples")
    dropped = {"train": train_dropped, "eval": eval_dropped}
    return Examples(train, held_out, dropped, lora_data.pad_token_id(tokenizer), max_length)


# ------------------------------------------------------------------------------------------ 2. trainer


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then linear decay to zero (the HF Trainer default the report's runs used)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@dataclass
class Progress:
    """Where the loop stands; the part of the resume state that is not tensors."""

    step: int = 0
    epoch: int = 0
    next_window: int = 0  # first micro-batch of the next window in this epoch
    skipped_steps: int = 0
    nonfinite_streak: int = 0
    loss_before: float = float("nan")
    train_seconds: float = 0.0
    history: List[Dict[str, float]] = field(default_factory=list)

    def to_record(self) -> Dict[str, object]:
        return dict(vars(self))


class Trainer:
    """AdamW, the loss scaler and the schedule for one run, and the loop that drives them."""

    def __init__(
        self, config: FinetuneConfig, adapted: AdaptedModel, examples: Examples, device, precision: str
    ):
        self.config, self.examples, self.device, self.precision = config, examples, device, precision
        self.model = adapted.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = grad_scaler(device, precision)
        micro_batches = math.ceil(len(examples.train) / config.batch_size)
        self.windows_per_epoch = math.ceil(micro_batches / config.grad_accum)
        self.total_steps = self.windows_per_epoch * config.epochs
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.progress = Progress()
        self.stop_requested = False

    # -- model and resume

    def start(self, log: Log) -> None:
        """A fresh start: the held-out loss of the untrained adapter (B = 0, so the base model's)."""
        self.progress.loss_before = self.heldout_loss()
        log(f"held-out loss before: {self.progress.loss_before:.4f}")

    def resume(self, folder: Path, expected: Dict[str, object], log: Log) -> None:
        """Continues from the state in `folder` (its settings were checked by prepare_run_folder)."""
        record = load_state(folder, self.model, self.optimizer, self.scaler)
        if record["data_fingerprint"] != expected["data_fingerprint"]:
            raise UserError(
                f"{folder.parent} was started on other data rows than --data {self.config.data} holds now: "
                "--overwrite to start again"
            )
        self.progress = Progress(**{key: record[key] for key in vars(Progress())})
        log(f"resumed at step {self.progress.step} of {self.total_steps} from {folder.parent}")

    def save(self, folder: Path, identity: Dict[str, object]) -> None:
        save_state(
            folder, self.model, self.optimizer, self.scaler, dict(self.progress.to_record(), **identity)
        )

    # -- the loop

    def epoch_windows(self, shuffler: random.Random) -> List[List[Dict[str, torch.Tensor]]]:
        order = list(range(len(self.examples.train)))
        shuffler.shuffle(order)
        shuffled = [self.examples.train[i] for i in order]
        micro = lora_data.batches(shuffled, self.config.batch_size, self.examples.pad_id)
        accum = self.config.grad_accum
        return [micro[start : start + accum] for start in range(0, len(micro), accum)]

    def train(self, on_step: Callable[[Dict[str, float]], None], checkpoint: Callable[[], None]) -> None:
        """Steps until total_steps, or until SIGTERM (after saving the resume state)."""
        config, progress = self.config, self.progress
        shuffler = random.Random(config.seed)
        for _ in range(progress.epoch):  # replay the shuffles of finished epochs (resume)
            shuffler.shuffle(list(range(len(self.examples.train))))
        self.model.train()
        while progress.epoch < config.epochs and progress.step < self.total_steps:
            windows = self.epoch_windows(shuffler)
            while progress.next_window < len(windows) and progress.step < self.total_steps:
                window = windows[progress.next_window]
                progress.next_window += 1
                started = time.time()
                record = self.train_step(window)
                progress.train_seconds += time.time() - started
                if record is None:
                    continue  # every label masked (e.g. one-token texts): nothing to learn from
                progress.history.append(record)
                on_step(record)
                every = config.checkpoint_every
                if self.stop_requested or (
                    every and progress.step % every == 0 and progress.step < self.total_steps
                ):
                    checkpoint()
                if self.stop_requested:
                    raise TrainingInterrupted(progress.step)
            progress.epoch += 1
            progress.next_window = 0

    def train_step(self, window) -> Optional[Dict[str, float]]:
        """One optimizer step over a window of micro-batches; None when it has no labelled token."""
        window_tokens = sum(labelled_tokens(batch) for batch in window)
        if window_tokens == 0:
            return None
        progress = self.progress
        # The schedule is a function of the step number, set before the update; a LambdaLR stepped
        # after an update that a non-finite gradient skipped made PyTorch warn about the order.
        lr = self.config.lr * lr_factor(progress.step, self.config.warmup_steps, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        window_loss = 0.0
        for batch in window:
            batch = {key: value.to(self.device) for key, value in batch.items()}
            with autocast(self.device, self.precision):
                loss_sum, _ = loss_sum_and_count(self.model, batch)
            loss = loss_sum / window_tokens
            self.scaler.scale(loss).backward()
            window_loss += float(loss.detach())
        self.scaler.unscale_(self.optimizer)
        clip = self.config.clip if self.config.clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if self.scaler.is_enabled():
            self.scaler.step(
                self.optimizer
            )  # the scaler itself skips the update when fp16 gradients overflowed
            self.scaler.update()  # ... and lowers the loss scale for the next step
        elif math.isfinite(grad_norm):
            self.optimizer.step()
        if not math.isfinite(grad_norm):
            # A non-finite gradient (fp16 overflow, or a bf16/fp32 blow-up) would turn the LoRA weights
            # into NaN for good: the step is skipped instead, and counted in run.json.
            progress.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        self.check_finite(window_loss)
        return {"step": progress.step, "loss": window_loss, "lr": lr, "grad_norm": grad_norm}

    def check_finite(self, window_loss: float) -> None:
        """Stops a diverging run: non-finite weights at once, non-finite losses after a streak."""
        progress = self.progress
        progress.nonfinite_streak = 0 if math.isfinite(window_loss) else progress.nonfinite_streak + 1
        for name, parameter in trainable_parameters(self.model).items():
            if not bool(torch.isfinite(parameter).all()):
                raise self.diverged(f"the weight {name} is no longer finite")
        if progress.nonfinite_streak >= MAX_NONFINITE_STREAK:
            raise self.diverged(
                f"the training loss was not finite for {progress.nonfinite_streak} steps in a row"
            )

    def diverged(self, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at step {self.progress.step}: {what}; nothing was saved as complete "
            f"(lower --lr, now {self.config.lr:g}, or keep --clip on)"
        )

    def heldout_loss(self) -> float:
        if not self.examples.held_out:
            return float("nan")
        return heldout_loss(
            self.model, self.examples.held_out, self.examples.pad_id, self.device, self.precision
        )


class StopOnSigterm:
    """While active, SIGTERM asks the trainer to save its state and stop at the next step boundary."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.previous = trainer, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._request)
        return self

    def _request(self, signum, frame) -> None:
        self.trainer.stop_requested = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


# --------------------------------------------------------------------------------- 3. the loop, driven


def run_loop(
    trainer: Trainer, folder: RunFolder, identity: Dict[str, object], log: Log, progress_bar: bool
) -> None:
    """The training loop with its progress bar, tensorboard scalars and resume-state saves."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    resumed = folder.resume_step is not None
    writer = SummaryWriter(
        log_dir=str(folder.tensorboard_dir(trainer.config)),
        purge_step=trainer.progress.step if resumed else None,
    )
    if not resumed:
        writer.add_scalar("eval/loss", trainer.progress.loss_before, 0)
    bar = tqdm(
        total=trainer.total_steps,
        initial=trainer.progress.step,
        desc="lora",
        disable=not progress_bar,
        dynamic_ncols=True,
    )

    def on_step(record: Dict[str, float]) -> None:
        for name in ("loss", "lr", "grad_norm"):
            writer.add_scalar(f"train/{name}", record[name], record["step"])
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}")

    def checkpoint() -> None:
        writer.flush()
        trainer.save(folder.resume_dir, identity)
        if trainer.stop_requested:
            log(
                f"SIGTERM: saved the run at step {trainer.progress.step} in {folder.work}; "
                "run the same command with --resume to continue"
            )

    try:
        with StopOnSigterm(trainer):
            trainer.train(on_step, checkpoint)
    finally:
        bar.close()
        writer.close()


# -------------------------------------------------------------------------------------- 4. evaluation


def evaluate_after(
    trainer: Trainer, adapted: AdaptedModel, folder: RunFolder, log: Log
) -> Tuple[float, Dict]:
    """Held-out loss after training (refusing a diverged run) and the probe generations."""
    progress = trainer.progress
    loss_after = trainer.heldout_loss()
    log(f"held-out loss after:  {loss_after:.4f}  (before {progress.loss_before:.4f})")
    if trainer.examples.held_out and not math.isfinite(loss_after):
        raise trainer.diverged(f"the held-out loss after training is {loss_after}")
    finite_losses = [h["loss"] for h in progress.history if math.isfinite(h["loss"])]
    if progress.history and not finite_losses:
        raise trainer.diverged("no training step had a finite loss")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(folder.tensorboard_dir(trainer.config))) as writer:
        writer.add_scalar("eval/loss", loss_after, progress.step)
    probes: Dict[str, Dict[str, str]] = {}
    if trainer.config.probe_tokens > 0:
        prompts = load_eval_prompts()["training_probe"]
        names = list(prompts)
        texts = generate(
            adapted.model,
            adapted.tokenizer,
            [prompts[n] for n in names],
            trainer.device,
            trainer.config.probe_tokens,
        )
        for name, text in zip(names, texts):
            probes[name] = {"prompt": prompts[name], "generation": text}
            log(f"probe [{name}]: {prompts[name][-60:]!r} -> {text!r}")
    return loss_after, probes


# ------------------------------------------------------------------------------------------ 5. saving


@torch.no_grad()
def check_reload(model, folder: Path, examples, pad_id: int, device, adapter_name: str = "reloaded"):
    """Load the adapter just saved to `folder` next to the trained one (on the same base weights, with
    every tensor checked) and compare the two adapters' fp32 logits on up to 4 examples, in eval mode."""
    batch = lora_data.collate(examples[:4], pad_id)
    inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}
    trained_adapter = model.active_adapter
    was_training = model.training
    model.eval()
    try:
        trained = model(**inputs).logits
        load_adapter(model, folder, adapter_name=adapter_name)
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


def save_output(
    folder: RunFolder,
    config: FinetuneConfig,
    model,
    summary: Dict[str, object],
    check_examples,
    pad_id,
    device,
    log: Log,
) -> Dict[str, object]:
    """Writes OUT in one piece (adapter, tensorboard, run.json with status complete, marker) and removes
    OUT.partial; the adapter is reloaded from the new folder and compared before it becomes OUT."""
    with atomic_dir(folder.out) as temp:
        # LoRA never adapts the embeddings here (modeling.adaptable_modules); peft's "auto" would look
        # for the base's config.json, on the hub if the base is not a local folder.
        model.save_pretrained(str(temp), save_embedding_layers=False)
        reload_check = check_reload(model, temp, check_examples, pad_id, device)
        log(
            f"adapter reloaded: logits identical = {reload_check['identical']} "
            f"(max |diff| {reload_check['max_abs_diff']:.1e} over {reload_check['tokens']} tokens)"
        )
        if not config.logdir and folder.tensorboard_dir(config).is_dir():
            shutil.copytree(folder.tensorboard_dir(config), temp / "tensorboard")
        summary = dict(summary, reload_check=reload_check, status="complete")
        atomic_write_json(temp / "run.json", json_safe(summary), indent=2)
        write_marker(temp, TOOL)
    folder.finish()
    log(f"saved adapter and run.json to {folder.out}")
    return summary


def run_summary(config, split, adapted, examples, trainer, folder, loss_after, probes, started) -> Dict:
    """run.json's data, but for the reload check and status that saving adds."""
    progress = trainer.progress
    history = progress.history
    last_epoch = [record["loss"] for record in history[-max(1, trainer.windows_per_epoch) :]]
    return {
        "settings": config.to_dict(),
        "model_source": resolve_model_source(config.model).describe(),
        "data_source": split.source,
        "data_fingerprint": split.fingerprint,
        "data_format": split.data_format,
        "max_length_used": examples.max_length,
        "precision_used": trainer.precision,
        "device": str(trainer.device),
        "target_modules": adapted.target_modules,
        "adapted_layers": adapted.adapted_layers,
        "trainable_params": adapted.trainable,
        "total_params": adapted.total,
        "train_samples": len(examples.train),
        "eval_samples": len(examples.held_out),
        "dropped_rows": examples.dropped,
        "steps": progress.step,
        "resumed_from_step": folder.resume_step,
        "skipped_steps_nonfinite_grad": progress.skipped_steps,
        "final_train_loss": history[-1]["loss"] if history else float("nan"),
        "last_epoch_mean_train_loss": sum(last_epoch) / len(last_epoch) if history else float("nan"),
        "heldout_loss_before": progress.loss_before,
        "heldout_loss_after": loss_after,
        "train_seconds": round(progress.train_seconds, 3),
        "total_seconds": round(time.time() - started, 3),
        "probes": probes,
        "history": history,
        "versions": _versions(),
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


# -------------------------------------------------------------------------------------------- the run


def finetune_model(
    config: FinetuneConfig,
    base_model=None,
    tokenizer=None,
    log: Log = print,
    progress: bool = True,
    folder: Optional[RunFolder] = None,
    split: Optional[lora_data.DataSplit] = None,
):
    """Fine-tune per `config`; returns (trained peft model, tokenizer, run.json's data).

    base_model / tokenizer may be passed in (a sweep loads them once); the base is deep-copied, never
    modified. `folder` (prepare_run_folder) and `split` (lora.data.split_data) may come from a caller
    that checked the command line before importing torch. Raises TrainingInterrupted after a SIGTERM
    (the state is saved for --resume) and TrainingDiverged when the weights or losses stop being finite.
    """
    started = time.time()
    folder = folder or prepare_run_folder(config, log)
    _seed_everything(config.seed)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device, log)
    split = split or lora_data.split_data(config, log)
    adapted = adapt_model(config, base_model, tokenizer, device, log)
    examples = encode_examples(config, split, adapted, log)

    trainer = Trainer(config, adapted, examples, device, precision)
    identity = {"settings": computed_settings(config.to_dict()), "data_fingerprint": split.fingerprint}
    if folder.resume_step is not None:
        trainer.resume(folder.resume_dir, identity, log)
    else:
        trainer.start(log)
        folder.create()
    run_loop(trainer, folder, identity, log, progress)
    loss_after, probes = evaluate_after(trainer, adapted, folder, log)

    summary = run_summary(config, split, adapted, examples, trainer, folder, loss_after, probes, started)
    check_examples = examples.held_out or examples.train
    summary = save_output(
        folder, config, adapted.model, summary, check_examples, examples.pad_id, device, log
    )
    return adapted.model, adapted.tokenizer, summary


def run_finetune(
    config: FinetuneConfig, base_model=None, tokenizer=None, log: Log = print, progress: bool = True
) -> Dict[str, object]:
    """`finetune_model`, returning run.json's data only."""
    return finetune_model(config, base_model, tokenizer, log, progress)[2]
