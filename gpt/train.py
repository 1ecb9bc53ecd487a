"""Train GPT-2 on token shards: `python -m gpt.train ...` or `torchrun --standalone --nproc_per_node=N gpt/train.py ...`.

One process per device; under torchrun each rank reads its slice of every global batch and gradients
are averaged by DDP (nccl on CUDA, gloo on CPU), synchronized only on the last micro-step of the
gradient accumulation. Checkpoints every N steps, at the last step and on SIGTERM; `--resume`
continues the same loss curve. See `--help` for every flag and gpt/presets/ for the presets.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Launched by path (torchrun gpt/train.py): Python put gpt/ on sys.path, not the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from gpt.checkpoint import (  # noqa: E402
    b64_to_tensor,
    latest_checkpoint,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
    tensor_to_b64,
)
from gpt.config import TrainConfig, config_to_dict, parse_config  # noqa: E402
from gpt.data import ShardLoader, check_manifest, list_shards, read_manifest  # noqa: E402
from gpt.manifest import tokenizer_sha256  # noqa: E402
from gpt.model import GPT, GPTConfig, padded_vocab_size  # noqa: E402
from gpt.tokenizer import eot_id, load_tokenizer  # noqa: E402

# Dense bf16 peak FLOP/s by device name, for MFU. CPUs have no meaningful single number: pass --peak-flops.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


# ----------------------------------------------------------------------------------------------- helpers


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to max_lr, then cosine decay to min_lr_ratio*max_lr at max_steps (build-nanogpt)."""
    min_lr = cfg.max_lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.max_lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return min_lr
    ratio = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.max_lr - min_lr)


def peak_flops_for(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS.items():
        if key in name:
            return flops
    return None


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    numpy_state = [name, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)]
    state = {
        "torch": tensor_to_b64(torch.get_rng_state()),
        "numpy": numpy_state,
        "python": json.loads(json.dumps(random.getstate())),
    }
    if torch.cuda.is_available():
        state["cuda"] = tensor_to_b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(b64_to_tensor(state["torch"]))
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(b64_to_tensor(state["cuda"]))


def model_config(cfg: TrainConfig, vocab_size: int, real_vocab_size: int | None) -> dict:
    """GPTConfig fields as plain data (they go into every checkpoint's meta.json)."""
    return {
        "block_size": cfg.seq_len,
        "vocab_size": vocab_size,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_embd": cfg.n_embd,
        "dropout": cfg.dropout,
        "real_vocab_size": real_vocab_size or vocab_size,
    }


class LogWriter:
    """log.jsonl (+ TensorBoard) on rank 0. On resume, entries past the checkpoint are dropped so the
    file tells one continuous run."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = out_dir / "log.jsonl"
        self.tb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        elif self.path.exists():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] < resume_step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(out_dir / "tb"), purge_step=resume_step)
            except ImportError:
                print("tensorboard is not installed: TensorBoard logging skipped", flush=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# -------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def validation_loss(model, loader: ShardLoader, steps: int, device, autocast, ddp: bool) -> float:
    model.eval()
    loader.reset()
    total = torch.zeros((), device=device)
    for _ in range(steps):
        x, y = loader.next_batch()
        with autocast():
            _, loss = model(x.to(device), y.to(device))
        total += loss.detach().float()
    if ddp:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    model.train()
    return total.item() / (steps * (dist.get_world_size() if ddp else 1))


@torch.no_grad()
def text_perplexity(
    model, tokens: torch.Tensor, seq_len: int, batch: int, device, autocast, rank, world, ddp
) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of the held-out text, split across ranks."""
    model.eval()
    n_windows = (tokens.numel() - 1) // seq_len
    nll_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    mine = list(range(rank, n_windows, world))
    for i in range(0, len(mine), batch):
        rows = [tokens[w * seq_len : w * seq_len + seq_len + 1] for w in mine[i : i + batch]]
        chunk = torch.stack(rows).to(device)
        with autocast():
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
        nll_sum += loss.double() * chunk[:, 1:].numel()
        count += chunk[:, 1:].numel()
    if ddp:
        dist.all_reduce(nll_sum)
        dist.all_reduce(count)
    model.train()
    return math.exp(nll_sum.item() / max(count.item(), 1.0))


def hellaswag_accuracy(model, examples, tok, device, bf16: bool, rank, world, ddp, limit) -> float:
    """HellaSwag acc_norm: gpt.hellaswag scores this rank's share of the examples; counts are all-reduced."""
    from gpt import hellaswag

    model.eval()
    correct, total = hellaswag.evaluate(
        model,
        examples,
        tokenizer=tok,
        device=device,
        rank=rank,
        world_size=world,
        autocast_dtype=torch.bfloat16 if bf16 else None,
        limit=limit,
    )
    counts = torch.tensor([correct, total], device=device, dtype=torch.long)
    if ddp:
        dist.all_reduce(counts)
    model.train()
    return counts[0].item() / max(counts[1].item(), 1)


@torch.no_grad()
def write_samples(model, tok, cfg: TrainConfig, device, step: int) -> list[str]:
    model.eval()
    prompt = tok.encode(cfg.sample_prompt)
    idx = torch.tensor([prompt] * cfg.sample_count, dtype=torch.long, device=device)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed + step)
    out = model.generate(idx, cfg.sample_tokens, top_k=cfg.sample_top_k, generator=generator)
    model.train()
    return [tok.decode(row.tolist()) for row in out]


# ------------------------------------------------------------------------------------------------ main


class StopFlag:
    """Set by SIGTERM; the loop checkpoints at the next step boundary, then exits."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True


def load_tokenizer_or_explain(spec: str):
    try:
        return load_tokenizer(spec)
    except ImportError as e:
        raise RuntimeError(
            f"samples/HellaSwag/perplexity/shuffling need the tokenizer {spec!r} but bpe_fast is not importable "
            f"({e}); build it (maturin develop) or pass --sample-every 0 and no --hellaswag/--eval-text"
        ) from e


def resolve_tokenizer_spec(cfg: TrainConfig, manifest: dict | None) -> str:
    if cfg.tokenizer:
        return cfg.tokenizer
    if manifest is not None:
        spec = manifest["tokenizer"].get("spec")
        if spec == "gpt2" or (spec and Path(spec).is_file()):
            return spec
    return "gpt2"


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    rank = int(os.environ.get("RANK", "0")) if ddp else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if ddp else 0
    world = int(os.environ.get("WORLD_SIZE", "1")) if ddp else 1
    master = rank == 0

    device_name = cfg.device
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda":
        device_name = f"cuda:{local_rank}"  # an explicit index: set_device and DDP need one
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if ddp:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    try:
        return _train(cfg, ddp, rank, world, master, device)
    finally:
        torch.set_num_threads(previous_threads)  # main() may run in-process (tests): leave no trace
        if ddp and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, ddp: bool, rank: int, world: int, master: bool, device: torch.device) -> int:
    def say(text: str) -> None:
        if master:
            print(text, flush=True)

    use_bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda")
    if cfg.dtype not in ("auto", "bfloat16", "float32"):
        raise ValueError(f"--dtype must be auto, bfloat16 or float32, not {cfg.dtype!r}")

    def autocast():
        if use_bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    micro_tokens = cfg.batch_size * cfg.seq_len * world
    if cfg.total_batch_size % micro_tokens:
        raise ValueError(
            f"--total-batch-size {cfg.total_batch_size} is not a multiple of B*T*world_size = "
            f"{cfg.batch_size}*{cfg.seq_len}*{world} = {micro_tokens}"
        )
    grad_accum = cfg.total_batch_size // micro_tokens
    out_dir = Path(cfg.out)
    existing = latest_checkpoint(out_dir)
    if existing is not None and not cfg.resume:
        # A fresh run here would interleave its checkpoints with the old run's; --resume would then
        # pick whichever has the highest step.
        raise FileExistsError(
            f"{out_dir} already holds checkpoints (latest {existing.name}): pass --resume to continue that "
            "run, or choose another --out"
        )

    # Data: manifest checks, tokenizer (only when something needs it), then shard validation.
    data_dir = Path(cfg.data)
    manifest = read_manifest(data_dir)
    recorded = manifest["tokenizer"] if manifest is not None else {}
    needs_tokenizer = cfg.sample_every > 0 or bool(cfg.hellaswag) or bool(cfg.eval_text)
    tok_spec = resolve_tokenizer_spec(cfg, manifest)
    tok = None
    if needs_tokenizer or (cfg.shuffle and "eot_id" not in recorded):
        tok = load_tokenizer_or_explain(tok_spec)
    real_vocab = recorded.get("vocab_size") or (tok.vocab_size if tok is not None else None)
    vocab_size = cfg.vocab_size or (padded_vocab_size(real_vocab) if real_vocab else 50304)
    if real_vocab is not None and real_vocab > vocab_size:
        raise ValueError(f"tokenizer vocab {real_vocab} exceeds the model's --vocab-size {vocab_size}")
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
        eot = eot_id(tok)  # document boundaries for shuffling
    train_loader = ShardLoader(
        data_dir, "train", cfg.batch_size, cfg.seq_len, rank, world, seed=cfg.seed, shuffle=cfg.shuffle,
        eot_id=eot, vocab_size=id_limit,
    )  # fmt: skip
    val_loader = None
    if cfg.val_every > 0:
        try:
            list_shards(data_dir, "val")
        except FileNotFoundError:
            say(f"no val shards in {data_dir}: validation disabled")
        else:
            val_loader = ShardLoader(
                data_dir, "val", cfg.batch_size, cfg.seq_len, rank, world, vocab_size=id_limit
            )
    eval_tokens = None
    if cfg.eval_text:
        text = Path(cfg.eval_text).read_text(encoding="utf-8")
        ids = tok.encode_ordinary(text)[: cfg.eval_text_tokens + 1]
        if len(ids) < cfg.seq_len + 1:
            raise ValueError(
                f"--eval-text {cfg.eval_text}: {len(ids)} tokens, fewer than seq_len+1 = {cfg.seq_len + 1}"
            )
        eval_tokens = torch.tensor(ids, dtype=torch.long)

    hellaswag_examples = None
    if cfg.hellaswag:
        from gpt.hellaswag import load_examples

        # Loaded (or downloaded, for 'hub') once, up front: a bad path fails before any training.
        hellaswag_examples = load_examples(None if cfg.hellaswag == "hub" else cfg.hellaswag)

    # Model and optimizer. The same seed on every rank gives the same initial weights.
    torch.manual_seed(cfg.seed)
    model_cfg = model_config(cfg, vocab_size, real_vocab)
    raw_model = GPT(GPTConfig(**model_cfg)).to(device)
    optimizer = raw_model.configure_optimizers(
        weight_decay=cfg.weight_decay,
        learning_rate=cfg.max_lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        device_type=device.type,
    )

    if master:
        for leftover in remove_partial_checkpoints(out_dir):
            say(f"removed {leftover.name}: a checkpoint write that never completed")
    start_step = 0
    if cfg.resume:
        ckpt = latest_checkpoint(out_dir)
        if ckpt is None:
            say(f"--resume: no complete checkpoint in {out_dir}; starting from scratch")
        else:
            meta = load_checkpoint(ckpt, raw_model, optimizer, device=device)
            start_step = int(meta["step"])
            train_loader.load_state_dict(meta["loader"])
            rng = meta.get("rng", [])
            if len(rng) == world:
                set_rng_state(rng[rank])
            else:
                say(f"checkpoint has RNG states for {len(rng)} ranks, this run has {world}: RNG not restored")
            changed = {
                k: (v, getattr(cfg, k))
                for k, v in meta.get("config", {}).items()
                if k not in ("resume", "stop_at_step", "out") and hasattr(cfg, k) and getattr(cfg, k) != v
            }
            say(
                f"resumed from {ckpt} at step {start_step}"
                + (f"; config changes: {changed}" if changed else "")
            )
    logger = LogWriter(out_dir, master, cfg.tensorboard, start_step if cfg.resume else None)

    model = torch.compile(raw_model) if cfg.compile else raw_model
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    stop = StopFlag()
    previous_handler = signal.signal(signal.SIGTERM, stop)
    end_step = cfg.max_steps if cfg.stop_at_step is None else min(cfg.max_steps, cfg.stop_at_step)
    peak = peak_flops_for(device, cfg.peak_flops)
    fpt = raw_model.flops_per_token(cfg.seq_len)
    n_params = sum(p.numel() for p in raw_model.parameters())
    say(
        f"model {n_params / 1e6:.2f}M params | world {world} | B={cfg.batch_size} T={cfg.seq_len} "
        f"grad_accum={grad_accum} ({cfg.total_batch_size:,} tokens/step) | device {device} "
        f"{'bf16 autocast' if use_bf16 else 'fp32'}{' | compiled' if cfg.compile else ''} | steps {start_step}->{end_step}"
    )

    def checkpoint(step: int) -> Path | None:
        states = [None] * world
        if ddp:
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        path = None
        if master:
            meta = {
                "step": step,
                "tokens_seen": step * cfg.total_batch_size,
                "config": config_to_dict(cfg),
                "model_config": model_cfg,
                # What gpt.sample/gpt.export decode with; None when nothing said which tokenizer made the shards.
                "tokenizer": tokenizer_record,
                "loader": train_loader.state_dict(),
                "rng": states,
                "world_size": world,
                "versions": {
                    "torch": torch.__version__,
                    "numpy": np.__version__,
                    "python": sys.version.split()[0],
                },
            }
            path = save_checkpoint(out_dir, raw_model, optimizer, meta)
            print(f"checkpoint {path}", flush=True)
        if ddp:
            dist.barrier()
        return path

    step = start_step
    step_times: list[float] = []
    status = 0
    try:
        while step < end_step:
            last = step == end_step - 1
            record: dict = {}
            if val_loader is not None and (step % cfg.val_every == 0 or last):
                record["val_loss"] = validation_loss(
                    raw_model, val_loader, cfg.val_steps, device, autocast, ddp
                )
            if cfg.hellaswag and (step % cfg.hellaswag_every == 0 or last):
                record["hellaswag"] = hellaswag_accuracy(
                    raw_model,
                    hellaswag_examples,
                    tok,
                    device,
                    use_bf16,
                    rank,
                    world,
                    ddp,
                    cfg.hellaswag_limit,
                )
            if eval_tokens is not None and (step % cfg.eval_text_every == 0 or last):
                record["ppl"] = text_perplexity(
                    raw_model, eval_tokens, cfg.seq_len, cfg.batch_size, device, autocast, rank, world, ddp
                )
            if (
                master
                and tok is not None
                and cfg.sample_every > 0
                and (step % cfg.sample_every == 0 or last)
                and step > 0
            ):
                for i, text in enumerate(write_samples(raw_model, tok, cfg, device, step)):
                    print(f"sample {i}: {text!r}", flush=True)

            t0 = time.perf_counter()
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            for micro in range(grad_accum):
                x, y = train_loader.next_batch()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                # Gradients are all-reduced only after the last micro-step's backward.
                sync = contextlib.nullcontext() if (not ddp or micro == grad_accum - 1) else model.no_sync()
                with sync:
                    with autocast():
                        _, loss = model(x, y)
                    (loss / grad_accum).backward()
                loss_sum += loss.detach().float()
            loss_mean = loss_sum / grad_accum
            if ddp:
                dist.all_reduce(loss_mean, op=dist.ReduceOp.SUM)
                loss_mean /= world
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            else:
                grad_norm = torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
                )
            # One all_reduce tells every rank whether any rank saw a non-finite loss or got SIGTERM.
            flags = torch.tensor(
                [
                    0.0 if torch.isfinite(loss_mean) and torch.isfinite(grad_norm) else 1.0,
                    float(stop.requested),
                ],
                device=device,
            )
            if ddp:
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            if flags[0].item():
                say(
                    f"step {step}: non-finite loss or gradient norm (loss {loss_mean.item()}, norm {grad_norm.item()}); "
                    "stopping without an optimizer step (the last checkpoint is intact)"
                )
                record.update(step=step, loss=loss_mean.item(), error="non-finite")
                logger.write(record)
                status = 2
                break
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if step > start_step:  # the first step includes compilation and warm-up
                step_times.append(dt)
            step += 1

            if record or (step - 1) % cfg.log_every == 0 or step == end_step:
                tokens_per_sec = cfg.total_batch_size / dt
                mfu = fpt * tokens_per_sec / (peak * world) if peak else None
                avg = sum(step_times[-20:]) / len(step_times[-20:]) if step_times else dt
                record = {
                    "step": step - 1,
                    "loss": loss_mean.item(),
                    "lr": lr,
                    "grad_norm": grad_norm.item(),
                    "tokens_per_sec": tokens_per_sec,
                    "dt_ms": dt * 1000,
                    "mfu": mfu,
                    **record,
                }
                logger.write(record)
                extra = "".join(
                    f" | {k} {record[k]:.4f}" for k in ("val_loss", "hellaswag", "ppl") if k in record
                )
                say(
                    f"step {step - 1:6d}/{cfg.max_steps} | loss {record['loss']:.4f} | lr {lr:.3e} | "
                    f"norm {record['grad_norm']:.3f} | {dt * 1000:.0f} ms | {tokens_per_sec:,.0f} tok/s | "
                    f"MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} | ETA {format_eta(avg * (end_step - step))}"
                    + extra
                )

            if flags[1].item():
                say(f"SIGTERM: checkpointing at step {step} and exiting")
                checkpoint(step)
                break
            if step == end_step or (cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0):
                checkpoint(step)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        logger.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
