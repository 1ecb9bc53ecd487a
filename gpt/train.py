"""Train GPT-2 on token shards: `python -m gpt.train ...` or `torchrun --standalone --nproc_per_node=N gpt/train.py ...`.

One process per device; under torchrun each rank reads its slice of every global batch and gradients
are averaged by DDP (nccl on CUDA, gloo on CPU), synchronized only on the last micro-step of the
gradient accumulation. Checkpoints every N steps, at the last step and on SIGTERM; `--resume`
continues the same loss curve. See `--help` for every flag and gpt/presets/ for the presets.

The run, in the order `main` and `train` call its steps:
  start_runtime (gpt.runtime)   distributed job, device, precision, threads
  prepare_out_dir               cleans up after killed checkpoint writers; refuses to mix two runs
  open_data                     shards, manifest, tokenizer, evaluation data; refuses bad data up front
  build_model, resume           the model and optimizer, then the latest checkpoint's state
  wrap_for_training             torch.compile and DDP around the plain model
  run_loop                      evaluate (gpt.evaluation), train_step, log (gpt.trainlog), write_checkpoint
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

if __package__ in (None, ""):
    # Launched by path (torchrun gpt/train.py): Python put gpt/ on sys.path, not the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from bpe_fast.cliutil import UserError, one_line, run_main  # noqa: E402
from gpt import evaluation  # noqa: E402
from gpt.checkpoint import (  # noqa: E402
    first_non_finite,
    latest_checkpoint,
    load_checkpoint,
    recover_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from gpt.config import ConfigError, TrainConfig, config_to_dict, parse_config  # noqa: E402
from gpt.data import (  # noqa: E402
    ManifestError,
    ShardError,
    ShardLoader,
    check_manifest,
    list_shards,
    read_manifest,
)
from gpt.manifest import tokenizer_sha256  # noqa: E402
from gpt.model import GPT, GPTConfig, padded_vocab_size  # noqa: E402
from gpt.runtime import Runtime, peak_flops_for, start_runtime, stop_runtime  # noqa: E402
from gpt.tokenizer import eot_id, load_tokenizer  # noqa: E402
from gpt.trainlog import LogWriter, format_eta  # noqa: E402

PROG = "python -m gpt.train"


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to max_lr, then cosine decay to min_lr_ratio*max_lr at max_steps (build-nanogpt)."""
    min_lr = cfg.max_lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.max_lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return min_lr
    ratio = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.max_lr - min_lr)


# ------------------------------------------------------------------------------------------------ data


@dataclass
class TrainData:
    """Everything the run reads: the loaders, the tokenizer (when something needs it) and eval data."""

    train: ShardLoader
    val: Optional[ShardLoader]
    vocab_size: int  # embedding rows
    real_vocab: Optional[int]  # the tokenizer's size, when known
    tokenizer: Any = None
    tokenizer_record: Optional[dict] = None  # what checkpoints say decodes the model
    eval_tokens: Optional[torch.Tensor] = None
    hellaswag_examples: Optional[list] = None


def choose_tokenizer(cfg: TrainConfig, manifest: dict | None, data_dir: Path) -> tuple[str, Any]:
    """(spec, tokenizer or None). The spec is --tokenizer, else the manifest's (a vocab path is looked
    for beside the manifest, then as written), else gpt2. The tokenizer is loaded only when something
    needs it; a vocab the manifest names but that cannot be found is then an error, never replaced."""
    recorded = manifest["tokenizer"] if manifest is not None else {}
    needed = (
        cfg.sample_every > 0
        or bool(cfg.hellaswag)
        or bool(cfg.eval_text)
        or (cfg.shuffle and "eot_id" not in recorded)
    )
    spec = cfg.tokenizer or recorded.get("spec") or "gpt2"
    if not cfg.tokenizer and spec != "gpt2":
        found = next((p for p in (data_dir / spec, Path(spec)) if p.is_file()), None)
        if found is not None:
            spec = str(found.resolve())  # checkpoints then name it wherever gpt.sample runs from
        elif needed:
            raise UserError(
                f"{data_dir / 'manifest.json'} names the tokenizer {spec}, which is not there (neither beside "
                f"the manifest nor from {Path.cwd()}): pass --tokenizer with that vocab"
            )
    return spec, (open_tokenizer(spec) if needed else None)


def open_tokenizer(spec: str):
    try:
        return load_tokenizer(spec)
    except ImportError as e:
        raise UserError(
            f"samples/HellaSwag/perplexity/shuffling need the tokenizer {spec!r} but bpe_fast is not importable "
            f"({e}); build it (maturin develop) or pass --sample-every 0 and no --hellaswag/--eval-text"
        ) from e
    except (OSError, ValueError) as e:
        raise UserError(f"tokenizer {spec}: {one_line(e)}") from e


def check_data_folder(data_dir: Path) -> None:
    """A missing or empty --data is the user's to fix, in one line, before anything else is read."""
    hint = "make shards with python -m gpt.prepare --out FOLDER, or point --data at such a folder"
    if not data_dir.is_dir():
        raise UserError(f"--data {data_dir}: no such folder; {hint}")
    try:
        list_shards(data_dir, "train")
    except FileNotFoundError:
        raise UserError(f"--data {data_dir}: no train_*.bin shards there; {hint}") from None


def open_data(cfg: TrainConfig, rt: Runtime) -> TrainData:
    """Manifest checks, tokenizer (only when something needs it), shard validation, then eval data.
    This is where bad data is refused, before the model exists."""
    data_dir = Path(cfg.data)
    check_data_folder(data_dir)
    manifest = read_manifest(data_dir)
    recorded = manifest["tokenizer"] if manifest is not None else {}
    tok_spec, tok = choose_tokenizer(cfg, manifest, data_dir)
    real_vocab = recorded.get("vocab_size") or (tok.vocab_size if tok is not None else None)
    vocab_size = cfg.vocab_size or (padded_vocab_size(real_vocab) if real_vocab else 50304)
    if real_vocab is not None and real_vocab > vocab_size:
        raise UserError(
            f"the tokenizer's vocabulary of {real_vocab} exceeds the model's --vocab-size {vocab_size}"
        )
    if manifest is not None:
        check_manifest(
            manifest,
            data_dir,
            model_vocab_size=vocab_size,
            tokenizer_vocab_size=tok.vocab_size if tok is not None else None,
            tokenizer_sha256=tokenizer_sha256(tok_spec) if tok is not None or cfg.tokenizer else None,
        )
    id_limit = real_vocab or vocab_size
    tokenizer_record = None
    if manifest is not None or cfg.tokenizer or tok is not None:
        tokenizer_record = {"spec": tok_spec, "vocab_size": real_vocab, "eot_id": recorded.get("eot_id")}
    eot = recorded.get("eot_id")
    if eot is None and cfg.shuffle:
        eot = eot_id_of(tok)  # document boundaries for shuffling
    train, val = open_loaders(cfg, rt, data_dir, eot, id_limit)
    data = TrainData(train, val, vocab_size, real_vocab, tok, tokenizer_record)
    data.eval_tokens = read_eval_text(cfg, tok)
    if cfg.hellaswag:
        from gpt.hellaswag import load_examples

        # Loaded (or downloaded, for 'hub') once, up front: a bad path fails before any training.
        data.hellaswag_examples = load_examples(None if cfg.hellaswag == "hub" else cfg.hellaswag)
    return data


def eot_id_of(tok) -> int:
    """The tokenizer's end-of-text id, which --shuffle needs when the manifest does not record it."""
    try:
        return eot_id(tok)
    except ValueError as e:
        raise UserError(f"--shuffle needs the end-of-text token: {one_line(e)}") from e


def open_loaders(
    cfg: TrainConfig, rt: Runtime, data_dir: Path, eot: Optional[int], id_limit: int
) -> tuple[ShardLoader, Optional[ShardLoader]]:
    """The train and val loaders. Opening one checks every shard's header, size and ids (the start-up
    shard check: a bad shard is a ShardError naming it); too little data for one step is a UserError."""
    try:
        train = ShardLoader(
            data_dir, "train", cfg.batch_size, cfg.seq_len, rt.rank, rt.world, seed=cfg.seed,
            shuffle=cfg.shuffle, eot_id=eot, vocab_size=id_limit,
        )  # fmt: skip
        val = None
        if cfg.val_every > 0:
            try:
                list_shards(data_dir, "val")
            except FileNotFoundError:
                rt.say(f"no val shards in {data_dir}: validation disabled")
            else:
                val = ShardLoader(
                    data_dir, "val", cfg.batch_size, cfg.seq_len, rt.rank, rt.world, vocab_size=id_limit
                )
    except (ShardError, ManifestError):
        raise
    except ValueError as e:  # the loader's "no shard holds the tokens one step needs"
        raise UserError(one_line(e)) from e
    return train, val


def read_eval_text(cfg: TrainConfig, tok) -> Optional[torch.Tensor]:
    if not cfg.eval_text:
        return None
    try:
        text = Path(cfg.eval_text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--eval-text {cfg.eval_text}: cannot read it ({one_line(e)})") from e
    ids = tok.encode_ordinary(text)[: cfg.eval_text_tokens + 1]
    if len(ids) < cfg.seq_len + 1:
        raise UserError(
            f"--eval-text {cfg.eval_text}: {len(ids)} tokens, fewer than seq_len+1 = {cfg.seq_len + 1}; give a longer text"
        )
    return torch.tensor(ids, dtype=torch.long)


# ------------------------------------------------------------------------------------ model and resume


def model_config(cfg: TrainConfig, data: TrainData) -> GPTConfig:
    return GPTConfig(
        block_size=cfg.seq_len,
        vocab_size=data.vocab_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        dropout=cfg.dropout,
        real_vocab_size=data.real_vocab or data.vocab_size,
    )


def build_model(cfg: TrainConfig, rt: Runtime, data: TrainData) -> tuple[GPT, torch.optim.Optimizer]:
    """The plain model and its optimizer. The same seed on every rank gives the same initial weights."""
    torch.manual_seed(cfg.seed)
    model = GPT(model_config(cfg, data)).to(rt.device)
    optimizer = model.configure_optimizers(
        weight_decay=cfg.weight_decay,
        learning_rate=cfg.max_lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        device_type=rt.device.type,
    )
    return model, optimizer


def prepare_out_dir(cfg: TrainConfig, rt: Runtime) -> None:
    """Cleans up after killed checkpoint writers (rank 0), then refuses to mix two runs in one folder."""
    out_dir = Path(cfg.out)
    if rt.master:
        for name in recover_checkpoints(out_dir):
            rt.say(f"cleaned up {name}: left by a checkpoint write that was interrupted")
    rt.barrier()  # the other ranks look for checkpoints only once the folder is consistent
    existing = latest_checkpoint(out_dir)
    if existing is not None and not cfg.resume:
        # A fresh run here would interleave its checkpoints with the old run's; --resume would then
        # pick whichever has the highest step.
        raise UserError(
            f"{out_dir} already holds checkpoints (latest {existing.name}): pass --resume to continue that "
            "run, or choose another --out"
        )


def resume(cfg: TrainConfig, rt: Runtime, model: GPT, optimizer, loader: ShardLoader) -> int:
    """Restores the latest checkpoint's weights, optimizer, data position and RNG; returns its step
    (0 when there is none to resume from)."""
    if not cfg.resume:
        return 0
    ckpt = latest_checkpoint(cfg.out)
    if ckpt is None:
        rt.say(f"--resume: no complete checkpoint in {cfg.out}; starting from scratch")
        return 0
    meta = load_checkpoint(ckpt, model, optimizer, device=rt.device)
    loader.load_state_dict(meta["loader"])
    rng = meta.get("rng", [])
    if len(rng) == rt.world:
        set_rng_state(rng[rt.rank])
    else:
        rt.say(f"checkpoint has RNG states for {len(rng)} ranks, this run has {rt.world}: RNG not restored")
    changed = {
        k: (v, getattr(cfg, k))
        for k, v in meta.get("config", {}).items()
        if k not in ("resume", "stop_at_step", "out") and hasattr(cfg, k) and getattr(cfg, k) != v
    }
    start = int(meta["step"])
    rt.say(f"resumed from {ckpt} at step {start}" + (f"; config changes: {changed}" if changed else ""))
    return start


def wrap_for_training(model: GPT, cfg: TrainConfig, rt: Runtime) -> torch.nn.Module:
    """What the loop calls forward/backward on: the plain model, compiled and/or under DDP."""
    wrapped = torch.compile(model) if cfg.compile else model
    if rt.distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    return wrapped


# ---------------------------------------------------------------------------------------------- a step


class StopFlag:
    """Set by SIGTERM; the loop checkpoints at the next step boundary, then exits."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    seconds: float
    nonfinite: bool  # on any rank: no optimizer step was taken
    stop: bool  # SIGTERM on any rank


def train_step(
    model,
    optimizer,
    loader: ShardLoader,
    grad_accum: int,
    lr: float,
    grad_clip: float,
    rt: Runtime,
    stop: StopFlag,
) -> StepResult:
    """Forward/backward over `grad_accum` micro-batches, then one optimizer step, unless any rank saw
    a non-finite loss or gradient norm."""
    t0 = time.perf_counter()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=rt.device)
    for micro in range(grad_accum):
        x, y = loader.next_batch()
        x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
        # Gradients are all-reduced only after the last micro-step's backward.
        last_micro = micro == grad_accum - 1
        sync = contextlib.nullcontext() if (not rt.distributed or last_micro) else model.no_sync()
        with sync:
            with rt.autocast():
                _, loss = model(x, y)
            (loss / grad_accum).backward()
        loss_sum += loss.detach().float()
    loss_mean = loss_sum / grad_accum
    if rt.distributed:
        dist.all_reduce(loss_mean, op=dist.ReduceOp.SUM)
        loss_mean /= rt.world
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
        )
    nonfinite, stopping = rt.any_rank(
        not (torch.isfinite(loss_mean) and torch.isfinite(grad_norm)), stop.requested
    )
    if not nonfinite:
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    return StepResult(loss_mean.item(), grad_norm.item(), time.perf_counter() - t0, nonfinite, stopping)


# --------------------------------------------------------------------------------------- checkpointing


class PeerFailed(Exception):
    """Another rank failed (it reports why); this rank just stops."""


@dataclass
class RunState:
    """What a checkpoint records besides the weights and the optimizer."""

    cfg: TrainConfig
    model_config: dict
    tokenizer_record: Optional[dict]
    loader: ShardLoader
    world: int

    def meta(self, step: int, rng_states: list) -> dict:
        return {
            "step": step,
            "tokens_seen": step * self.cfg.total_batch_size,
            "config": config_to_dict(self.cfg),
            "model_config": self.model_config,
            # What gpt.sample/gpt.export decode with; None when nothing said which tokenizer made the shards.
            "tokenizer": self.tokenizer_record,
            "loader": self.loader.state_dict(),
            "rng": rng_states,
            "world_size": self.world,
            "versions": {
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": sys.version.split()[0],
            },
        }


def write_checkpoint(rt: Runtime, model: GPT, optimizer, state: RunState, step: int) -> Optional[Path]:
    """Rank 0 writes `ckpt_{step}` with every rank's RNG state; every rank learns whether it worked.
    Returns the path on rank 0, None elsewhere. Weights that are not finite are never written."""
    bad = first_non_finite(model)
    if rt.any_rank(bad is not None)[0]:
        last = latest_checkpoint(state.cfg.out)
        raise UserError(
            f"step {step}: weight {bad or '(on another rank)'} is not finite: training diverged (try a lower "
            f"--max-lr); no checkpoint written, the last complete one is {last.name if last else 'none'}"
        )
    states = [None] * rt.world
    if rt.distributed:
        dist.all_gather_object(states, rng_state())
    else:
        states = [rng_state()]
    path, failure = None, None
    if rt.master:
        try:
            path = save_checkpoint(state.cfg.out, model, optimizer, state.meta(step, states))
            print(f"checkpoint {path}", flush=True)
        except Exception as error:  # reported after every rank has heard of it, so none waits forever
            failure = error
    if rt.any_rank(failure is not None)[0]:
        if failure is not None:
            raise failure
        raise PeerFailed
    return path


# ---------------------------------------------------------------------------------------------- the loop


def evaluate(cfg: TrainConfig, rt: Runtime, model: GPT, data: TrainData, step: int, last: bool) -> dict:
    """The evaluations due at `step` (before its training step), as log fields; samples are printed."""
    record: dict = {}
    if data.val is not None and (step % cfg.val_every == 0 or last):
        record["val_loss"] = evaluation.validation_loss(
            model, data.val, cfg.val_steps, rt.device, rt.autocast, rt.distributed
        )
    if data.hellaswag_examples is not None and (step % cfg.hellaswag_every == 0 or last):
        record["hellaswag"] = evaluation.hellaswag_accuracy(
            model, data.hellaswag_examples, data.tokenizer, rt.device, rt.bf16, rt.rank, rt.world,
            rt.distributed, cfg.hellaswag_limit,
        )  # fmt: skip
    if data.eval_tokens is not None and (step % cfg.eval_text_every == 0 or last):
        record["ppl"] = evaluation.text_perplexity(
            model, data.eval_tokens, cfg.seq_len, cfg.batch_size, rt.device, rt.autocast, rt.rank, rt.world,
            rt.distributed,
        )  # fmt: skip
    sampling_due = cfg.sample_every > 0 and (step % cfg.sample_every == 0 or last) and step > 0
    if rt.master and data.tokenizer is not None and sampling_due:
        texts = evaluation.write_samples(
            model, data.tokenizer, cfg.sample_prompt, cfg.sample_count, cfg.sample_tokens, cfg.sample_top_k,
            cfg.seed + step, rt.device,
        )  # fmt: skip
        for i, text in enumerate(texts):
            print(f"sample {i}: {text!r}", flush=True)
    return record


@dataclass
class Progress:
    """Throughput bookkeeping for the log and the printed line: tokens/s, MFU, and the ETA from recent
    step times."""

    peak_flops: Optional[float]
    step_times: list = field(default_factory=list)

    def throughput(self, cfg: TrainConfig, rt: Runtime, model: GPT, result: StepResult) -> dict:
        tokens_per_sec = cfg.total_batch_size / result.seconds
        mfu = None
        if self.peak_flops:
            mfu = model.estimate_mfu(tokens_per_sec, self.peak_flops * rt.world, cfg.seq_len)
        return {"tokens_per_sec": tokens_per_sec, "dt_ms": result.seconds * 1000, "mfu": mfu}

    def line(self, cfg: TrainConfig, record: dict, steps_left: int) -> str:
        recent = self.step_times[-20:]
        avg = sum(recent) / len(recent) if recent else record["dt_ms"] / 1000
        mfu = record["mfu"]
        extra = "".join(f" | {k} {record[k]:.4f}" for k in ("val_loss", "hellaswag", "ppl") if k in record)
        return (
            f"step {record['step']:6d}/{cfg.max_steps} | loss {record['loss']:.4f} | lr {record['lr']:.3e} | "
            f"norm {record['grad_norm']:.3f} | {record['dt_ms']:.0f} ms | {record['tokens_per_sec']:,.0f} tok/s | "
            f"MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} | ETA {format_eta(avg * steps_left)}"
            + extra
        )


def run_loop(
    cfg: TrainConfig, rt: Runtime, model: GPT, wrapped, optimizer, data: TrainData, state: RunState,
    start_step: int, logger: LogWriter,
) -> int:  # fmt: skip
    """Steps from `start_step` to the end (or --stop-at-step, or SIGTERM); returns the exit status."""
    end_step = cfg.max_steps if cfg.stop_at_step is None else min(cfg.max_steps, cfg.stop_at_step)
    micro_tokens = cfg.batch_size * cfg.seq_len * rt.world
    grad_accum = cfg.total_batch_size // micro_tokens
    progress = Progress(peak_flops_for(rt.device, cfg.peak_flops))
    n_params = sum(p.numel() for p in model.parameters())
    rt.say(
        f"model {n_params / 1e6:.2f}M params | world {rt.world} | B={cfg.batch_size} T={cfg.seq_len} "
        f"grad_accum={grad_accum} ({cfg.total_batch_size:,} tokens/step) | device {rt.device} "
        f"{'bf16 autocast' if rt.bf16 else 'fp32'}{' | compiled' if cfg.compile else ''} | steps {start_step}->{end_step}"
    )
    stop = StopFlag()
    previous_handler = signal.signal(signal.SIGTERM, stop)
    try:
        for step in range(start_step, end_step):
            record = evaluate(cfg, rt, model, data, step, last=step == end_step - 1)
            lr = lr_at(step, cfg)
            result = train_step(wrapped, optimizer, data.train, grad_accum, lr, cfg.grad_clip, rt, stop)
            if result.nonfinite:
                record.update(step=step, loss=result.loss, error="non-finite")
                logger.write(record)
                rt.error(
                    PROG,
                    f"step {step}: non-finite loss or gradient norm (loss {result.loss}, norm {result.grad_norm}); "
                    "stopped without an optimizer step (the last checkpoint is intact; try a lower --max-lr)",
                )
                return 2
            if step > start_step:  # the first step includes compilation and warm-up
                progress.step_times.append(result.seconds)
            done = step + 1
            if record or step % cfg.log_every == 0 or done == end_step:
                measured = {"step": step, "loss": result.loss, "lr": lr, "grad_norm": result.grad_norm}
                record = {**measured, **progress.throughput(cfg, rt, model, result), **record}
                rt.say(progress.line(cfg, record, steps_left=end_step - done))
                logger.write(record)
            if result.stop:
                rt.say(f"SIGTERM: checkpointing at step {done} and exiting")
                write_checkpoint(rt, model, optimizer, state, done)
                break
            if done == end_step or (cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0):
                write_checkpoint(rt, model, optimizer, state, done)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


# ------------------------------------------------------------------------------------------------ main


def check_batch_geometry(cfg: TrainConfig, world: int) -> None:
    micro_tokens = cfg.batch_size * cfg.seq_len * world
    if cfg.total_batch_size % micro_tokens:
        raise ConfigError(
            f"--total-batch-size {cfg.total_batch_size} is not a multiple of B*T*world_size = "
            f"{cfg.batch_size}*{cfg.seq_len}*{world} = {micro_tokens}"
        )


def train(cfg: TrainConfig, rt: Runtime) -> int:
    check_batch_geometry(cfg, rt.world)
    prepare_out_dir(cfg, rt)
    data = open_data(cfg, rt)
    model, optimizer = build_model(cfg, rt, data)
    start_step = resume(cfg, rt, model, optimizer, data.train)
    logger = LogWriter(Path(cfg.out), rt.master, cfg.tensorboard, start_step if cfg.resume else None)
    state = RunState(cfg, dataclasses.asdict(model.config), data.tokenizer_record, data.train, rt.world)
    try:
        return run_loop(
            cfg, rt, model, wrap_for_training(model, cfg, rt), optimizer, data, state, start_step, logger
        )
    finally:
        logger.close()


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    rt = start_runtime(cfg.device, cfg.dtype, cfg.threads)
    try:
        return train(cfg, rt)
    except PeerFailed:
        return 2
    finally:
        stop_runtime(rt)


def cli(argv: Optional[Sequence[str]] = None) -> None:
    """The command line: user errors as one line on stderr and exit status 2 (bpe_fast.cliutil)."""
    run_main(main, PROG, argv, user_errors=(ShardError, ManifestError))


if __name__ == "__main__":
    cli()
