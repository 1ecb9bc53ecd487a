"""Train GPT-2 on token shards: `python -m gpt.train ...` or `torchrun --standalone --nproc_per_node=N gpt/train.py ...`.

One process per device; under torchrun each rank reads its slice of every global batch and gradients
are averaged by DDP (nccl on CUDA, gloo on CPU), synchronized only on the last micro-step of the
gradient accumulation. With `--fsdp` the model is sharded instead (FSDP2, gpt.fsdp): each rank keeps
1/world of the parameters, gradients and AdamW state, and checkpoints are sharded. Checkpoints every N
steps, at the last step and on SIGTERM; `--resume` continues the same loss curve. See `--help` for
every flag and gpt/presets/ for the presets.

The run, in the order `main` and `train` call its steps:
  start_runtime (gpt.runtime)   distributed job, device, precision, threads
  prepare_out_dir               cleans up after killed checkpoint writers; refuses to mix two runs or
                                two checkpoint layouts; rank 0 picks the checkpoint every rank resumes
  open_data                     shards, manifest, tokenizer, evaluation data; refuses bad data up front
  build_model, resume           the model (sharded with --fsdp), its optimizer, then the checkpoint's state
  wrap_for_training             torch.compile and DDP around the plain model (FSDP needs neither wrapper)
  run_loop                      evaluate (gpt.evaluation), train_step, log (gpt.trainlog), write_checkpoint
"""

from __future__ import annotations

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
    is_sharded,
    latest_checkpoint,
    load_checkpoint,
    load_sharded_checkpoint,
    read_meta,
    recover_checkpoints,
    rng_state,
    save_checkpoint,
    save_sharded_checkpoint,
    set_rng_state,
)
from gpt.config import ConfigError, TrainConfig, config_to_dict, parse_config  # noqa: E402
from gpt.data import ManifestError, ShardError, ShardLoader, ShardSet, open_shards, resolve_tokenizer  # noqa: E402
from gpt.fsdp import clip_grad_norm, grad_norm, gradient_sync  # noqa: E402
from gpt.model import GPT, GPTConfig, padded_vocab_size  # noqa: E402
from gpt.runtime import (  # noqa: E402
    PeerFailed,
    Runtime,
    peak_flops_for,
    start_runtime,
    stop_runtime,
    under_torchrun,
)
from gpt.tokenizer import eot_id  # noqa: E402
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

    shards: ShardSet
    train: ShardLoader
    val: Optional[ShardLoader]
    vocab_size: int  # embedding rows
    real_vocab: Optional[int]  # the tokenizer's size, when known
    tokenizer: Any = None
    tokenizer_record: Optional[dict] = None  # what checkpoints say decodes the model
    eval_tokens: Optional[torch.Tensor] = None
    hellaswag_examples: Optional[list] = None


def open_tokenizer(cfg: TrainConfig, load: bool) -> tuple[str, Any]:
    """(spec, tokenizer or None) from gpt.data.resolve_tokenizer, the one place that decides: the
    manifest's vocab (found beside the manifest from any working directory, checked by sha256), or
    --tokenizer (which must then be the manifest's), or gpt2 for shards without a manifest. Never a
    substitute. The tokenizer is loaded only when `load`; the spec is "gpt2" or an absolute path."""
    try:
        return resolve_tokenizer(cfg.data, cfg.tokenizer, load=load)
    except UserError:
        raise
    except ImportError as e:
        raise UserError(
            f"samples/HellaSwag/perplexity/shuffling need the tokenizer but bpe_fast is not importable ({e}); "
            "build it (maturin develop) or pass --sample-every 0 and no --hellaswag/--eval-text"
        ) from e
    except (OSError, ValueError) as e:
        raise UserError(f"tokenizer {cfg.tokenizer or 'of ' + str(cfg.data)}: {one_line(e)}") from e


def open_data(cfg: TrainConfig, rt: Runtime) -> TrainData:
    """The shards (every header read once, exactly the manifest's list: gpt.data.open_shards), the
    tokenizer, the model's vocab checked against both, then the loaders and the evaluation data. This is
    where bad data is refused, before the model exists."""
    shards = open_shards(cfg.data, notify=rt.warn)
    if not shards.has("train"):
        listed = " listed in its manifest.json" if shards.manifest is not None else " there"
        raise UserError(
            f"--data {cfg.data}: no train_*.bin shards{listed}; make shards with python -m gpt.prepare "
            "--out FOLDER, or point --data at such a folder"
        )
    recorded = shards.manifest["tokenizer"] if shards.manifest is not None else {}
    needed = (
        cfg.sample_every > 0
        or bool(cfg.hellaswag)
        or bool(cfg.eval_text)
        or (cfg.shuffle and "eot_id" not in recorded)
    )
    tok_spec, tok = open_tokenizer(cfg, load=needed)
    real_vocab = recorded.get("vocab_size") or (tok.vocab_size if tok is not None else None)
    vocab_size = cfg.vocab_size or (padded_vocab_size(real_vocab) if real_vocab else 50304)
    if real_vocab is not None and real_vocab > vocab_size:
        raise UserError(
            f"the tokenizer's vocabulary of {real_vocab} exceeds the model's --vocab-size {vocab_size}"
        )
    shards.check_model(vocab_size, tokenizer_vocab_size=tok.vocab_size if tok is not None else None)
    tokenizer_record = None
    if shards.manifest is not None or cfg.tokenizer or tok is not None:
        tokenizer_record = {"spec": tok_spec, "vocab_size": real_vocab, "eot_id": recorded.get("eot_id")}
    eot = recorded.get("eot_id")
    if eot is None and cfg.shuffle:
        eot = eot_id_of(tok)  # document boundaries for shuffling
    id_limit = real_vocab or vocab_size
    train = ShardLoader(
        shards, "train", cfg.batch_size, cfg.seq_len, rt.rank, rt.world, seed=cfg.seed, shuffle=cfg.shuffle,
        eot_id=eot, vocab_size=id_limit, notify=rt.warn,
    )  # fmt: skip
    val = None
    if cfg.val_every > 0 and shards.has("val"):
        val = ShardLoader(
            shards, "val", cfg.batch_size, cfg.seq_len, rt.rank, rt.world, vocab_size=id_limit, notify=rt.warn
        )
    elif cfg.val_every > 0:
        rt.say(f"no val shards in {cfg.data}: validation disabled")
    data = TrainData(shards, train, val, vocab_size, real_vocab, tok, tokenizer_record)
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
    except (UserError, ValueError) as e:
        raise UserError(f"--shuffle needs the end-of-text token: {one_line(e)}") from e


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
    """The model and its optimizer. The same seed on every rank gives the same initial weights; with
    --fsdp each rank then keeps only its shards, and the optimizer is built after sharding so that it
    holds (and keeps state for) the shards."""
    torch.manual_seed(cfg.seed)
    model = GPT(model_config(cfg, data)).to(rt.device)
    if cfg.fsdp:
        from gpt.fsdp import FSDPOptions, shard_model

        options = FSDPOptions(
            param_dtype="bfloat16" if rt.bf16 else None,  # blocks compute in bf16 from bf16 gathers
            reduce_dtype="float32",  # gradients averaged in fp32, as DDP averages them
            activation_checkpointing=cfg.activation_checkpointing,
            compile_blocks=cfg.compile,
        )
        shard_model(model, options)
    elif cfg.activation_checkpointing:
        from gpt.fsdp import checkpoint_activations

        checkpoint_activations(model)
    optimizer = model.configure_optimizers(
        weight_decay=cfg.weight_decay,
        learning_rate=cfg.max_lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        device_type=rt.device.type,
    )
    return model, optimizer


def check_out_dir_is_shared(cfg: TrainConfig, rt: Runtime) -> None:
    """Sharded checkpoints are written by every rank, and on other nodes every rank reads the checkpoint
    rank 0 wrote: then --out must be one folder for all (a shared filesystem). A collective."""
    if not (cfg.fsdp or rt.multi_node) or not rt.distributed:
        return
    from gpt.fsdp import check_shared_directory

    try:
        check_shared_directory(cfg.out)
    except RuntimeError as e:
        if rt.master:
            raise UserError(f"--out {e}") from None
        raise PeerFailed from None


def prepare_out_dir(cfg: TrainConfig, rt: Runtime) -> Optional[Path]:
    """Cleans up after killed checkpoint writers and picks the checkpoint to resume (rank 0, for every
    rank: all resume from the same one); refuses to mix two runs, or two checkpoint layouts, in one
    folder. Returns the checkpoint to resume from, or None."""
    check_out_dir_is_shared(cfg, rt)
    out_dir = Path(cfg.out)
    latest = None
    if rt.master:
        for name in recover_checkpoints(out_dir):
            rt.say(f"cleaned up {name}: left by a checkpoint write that was interrupted")
        found = latest_checkpoint(out_dir)
        latest = str(found) if found is not None else None
    latest = rt.from_master(latest)
    existing = Path(latest) if latest is not None else None
    if existing is not None and not cfg.resume:
        # A fresh run here would interleave its checkpoints with the old run's; --resume would then
        # pick whichever has the highest step.
        raise UserError(
            f"{out_dir} already holds checkpoints (latest {existing.name}): pass --resume to continue that "
            "run, or choose another --out"
        )
    if existing is not None and is_sharded(read_meta(existing)) != cfg.fsdp:
        if cfg.fsdp:
            raise UserError(
                f"--fsdp: {existing} was written without --fsdp (whole model.safetensors + optimizer.pt), "
                "and gpt.train cannot turn it into sharded state: resume it without --fsdp, or start the "
                "--fsdp run in another --out"
            )
        raise UserError(
            f"{existing} is a sharded checkpoint of a --fsdp run: resume it with --fsdp (under torchrun), "
            "or start the run without --fsdp in another --out (python -m gpt.export reads it either way)"
        )
    return existing


def resume(
    cfg: TrainConfig, rt: Runtime, model: GPT, optimizer, loader: ShardLoader, ckpt: Optional[Path]
) -> int:
    """Restores checkpoint `ckpt`'s weights, optimizer, data position and RNG (every rank the same
    checkpoint, picked by rank 0); returns its step (0 when there is none to resume from)."""
    if not cfg.resume:
        return 0
    if ckpt is None:
        rt.say(f"--resume: no complete checkpoint in {cfg.out}; starting from scratch")
        return 0
    if cfg.fsdp:
        meta = load_sharded_checkpoint(ckpt, model, optimizer)
    else:
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
    """What the loop calls forward/backward on: the plain model, compiled and/or under DDP. A sharded
    model is its own wrapper (its blocks were compiled before sharding, when --compile)."""
    if cfg.fsdp:
        return model
    wrapped = torch.compile(model) if cfg.compile else model
    if rt.distributed:
        # The gradients are views into DDP's all-reduce buckets: no second fp32 copy of them (gpt.memory).
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped,
            device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            gradient_as_bucket_view=True,
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
        # DDP all-reduces the gradients only after the last micro-step's backward (FSDP reduce-scatters
        # each one: it keeps no unsharded gradients between micro-steps).
        with gradient_sync(model, enabled=micro == grad_accum - 1):
            with rt.autocast():
                loss = model(x, y)[1]  # the logits are not kept alive through backward
            (loss / grad_accum).backward()
        loss_sum += loss.detach().float()
    loss_mean = loss_sum / grad_accum
    if rt.distributed:
        dist.all_reduce(loss_mean, op=dist.ReduceOp.SUM)
        loss_mean /= rt.world
    # The global norm over all ranks' shards under FSDP; a plain tensor either way.
    norm = clip_grad_norm(model, grad_clip) if grad_clip > 0 else grad_norm(model)
    nonfinite, stopping = rt.any_rank(
        not (torch.isfinite(loss_mean) and torch.isfinite(norm)), stop.requested
    )
    if not nonfinite:
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    return StepResult(loss_mean.item(), norm.item(), time.perf_counter() - t0, nonfinite, stopping)


# --------------------------------------------------------------------------------------- checkpointing


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
    """`ckpt_{step}` with every rank's RNG state: rank 0 writes it (with --fsdp every rank writes its
    shards and rank 0 completes it); every rank learns whether it worked, and a failure is reported by
    one rank. Returns the path on rank 0, None elsewhere. Weights that are not finite are never written."""
    bad = first_non_finite(model)  # this rank's shards under FSDP
    if rt.any_rank(bad is not None)[0]:
        if not rt.master and bad is None:
            raise PeerFailed
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
    if state.cfg.fsdp:
        path = save_sharded_checkpoint(state.cfg.out, model, optimizer, state.meta(step, states))
        rt.say(f"checkpoint {path}")
        return path if rt.master else None
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
    # Under FSDP every forward is a collective (it all-gathers the weights): every rank makes the same
    # calls, in lockstep, and every rank samples although only rank 0 prints.
    lockstep = cfg.fsdp
    if data.hellaswag_examples is not None and (step % cfg.hellaswag_every == 0 or last):
        record["hellaswag"] = evaluation.hellaswag_accuracy(
            model, data.hellaswag_examples, data.tokenizer, rt.device, rt.bf16, rt.rank, rt.world,
            rt.distributed, cfg.hellaswag_limit, lockstep=lockstep,
        )  # fmt: skip
    if data.eval_tokens is not None and (step % cfg.eval_text_every == 0 or last):
        record["ppl"] = evaluation.text_perplexity(
            model, data.eval_tokens, cfg.seq_len, cfg.batch_size, rt.device, rt.autocast, rt.rank, rt.world,
            rt.distributed, lockstep=lockstep,
        )  # fmt: skip
    sampling_due = cfg.sample_every > 0 and (step % cfg.sample_every == 0 or last) and step > 0
    if (rt.master or lockstep) and data.tokenizer is not None and sampling_due:
        texts = evaluation.write_samples(
            model, data.tokenizer, cfg.sample_prompt, cfg.sample_count, cfg.sample_tokens, cfg.sample_top_k,
            cfg.seed + step, rt.device,
        )  # fmt: skip
        for i, text in enumerate(texts):
            rt.say(f"sample {i}: {text!r}")
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
        measured = {"tokens_per_sec": tokens_per_sec, "dt_ms": result.seconds * 1000, "mfu": mfu}
        if rt.device.type == "cuda":  # rank 0's allocator high-water mark since the start
            measured["max_mem_gib"] = torch.cuda.max_memory_allocated(rt.device) / 2**30
        return measured

    def line(self, cfg: TrainConfig, record: dict, steps_left: int) -> str:
        recent = self.step_times[-20:]
        avg = sum(recent) / len(recent) if recent else record["dt_ms"] / 1000
        mfu = record["mfu"]
        extra = "".join(f" | {k} {record[k]:.4f}" for k in ("val_loss", "hellaswag", "ppl") if k in record)
        return (
            f"step {record['step']:6d}/{cfg.max_steps} | loss {record['loss']:.4f} | lr {record['lr']:.3e} | "
            f"norm {record['grad_norm']:.3f} | {record['dt_ms']:.0f} ms | {record['tokens_per_sec']:,.0f} tok/s | "
            f"MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} | ETA {format_eta(avg * steps_left)}"
            + (f" | mem {record['max_mem_gib']:.2f} GiB" if "max_mem_gib" in record else "")
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
    n_params = sum(p.numel() for p in model.parameters())  # whole tensors, also when sharded
    parallel = ("FSDP" if cfg.fsdp else "DDP" if rt.distributed else "") + (
        " + activation checkpointing" if cfg.activation_checkpointing else ""
    )
    rt.say(
        f"model {n_params / 1e6:.2f}M params | world {rt.world} | B={cfg.batch_size} T={cfg.seq_len} "
        f"grad_accum={grad_accum} ({cfg.total_batch_size:,} tokens/step) | device {rt.device} "
        f"{'bf16 autocast' if rt.bf16 else 'fp32'}{' | compiled' if cfg.compile else ''}"
        f"{' | ' + parallel.strip(' +') if parallel else ''} | steps {start_step}->{end_step}"
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
    checkpoint = prepare_out_dir(cfg, rt)
    data = open_data(cfg, rt)
    model, optimizer = build_model(cfg, rt, data)
    start_step = resume(cfg, rt, model, optimizer, data.train, checkpoint)
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
    if cfg.fsdp and not under_torchrun():
        raise UserError(
            "--fsdp shards the model over the ranks of a torchrun job: launch with torchrun "
            "--standalone --nproc_per_node N -m gpt.train --fsdp ... (N=1 is allowed), or drop --fsdp"
        )
    rt = start_runtime(cfg.device, cfg.dtype, cfg.threads, sharded=cfg.fsdp)
    try:
        status = train(cfg, rt)
        rt.barrier()  # no rank closes its connections while another still reads from them
        return status
    except PeerFailed:
        return 2
    finally:
        stop_runtime(rt)


def cli(argv: Optional[Sequence[str]] = None) -> None:
    """The command line: user errors as one line on stderr and exit status 2 (bpe_fast.cliutil)."""
    run_main(main, PROG, argv, user_errors=(ShardError, ManifestError))


if __name__ == "__main__":
    cli()
