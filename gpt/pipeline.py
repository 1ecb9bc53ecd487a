"""The whole path in one command: a corpus -> bpe_fast tokenizer -> token shards -> a tiny GPT trained on
CPU -> samples and a loss-curve PNG.

    python -m gpt.pipeline                      # the bundled tinyshakespeare.txt: about a minute on 2 idle cores
    python -m gpt.pipeline --threads 2          # more threads per tool (default 1)
    python -m gpt.pipeline --corpus my.txt --vocab 2048 --out out/mine

Each stage runs the public command a user would type (printed before it runs), so the pipeline doubles as
a worked example. Each stage is fingerprinted by its inputs: the corpus's content hash, the settings it
uses and the fingerprints of the stages it reads from. A re-run reuses every stage whose fingerprint is
unchanged (and says so), rebuilds the ones that changed and everything after them, and resumes a stage
that was interrupted (the trainer from its last checkpoint). `--threads` never changes a fingerprint:
the results do not depend on it. The record is OUT/pipeline.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from bpe_fast import samples
from bpe_fast.cliutil import ArgumentParser, UserError, fraction, positive_int, run_main
from bpe_fast.files import (
    MARKER_NAME,
    OverwriteRefused,
    atomic_write_json,
    atomic_write_text,
    marker_tool,
    write_marker,
)
from gpt.shards.format import file_sha256
from gpt.tokenizer import EOT_TEXT

PROG = "python -m gpt.pipeline"
TOOL = "gpt.pipeline"
STATE_NAME = "pipeline.json"
STATE_VERSION = 1


@dataclass
class PipelineConfig:
    """What the stages are built from (the command line's flags)."""

    corpus: Path
    out: Path = Path("out/pipeline")
    doc_sep: str = "\\n\\n"
    vocab: int = 1024
    shard_size: int = 200_000
    val_fraction: float = 0.1
    preset: str = "tiny-cpu"
    max_steps: int = 300
    checkpoint_every: int = 100
    val_every: int = 25
    val_steps: int = 4
    prompt: str = "ROMEO:"
    num_samples: int = 3
    sample_tokens: int = 80
    threads: int = 1
    fresh: bool = False


@dataclass
class Stage:
    name: str
    title: str
    command: list[str]
    inputs: dict  # everything the result depends on (fingerprinted)
    outputs: list[Path] = field(default_factory=list)
    resume_flag: Optional[str] = None  # added when an interrupted run of the same stage is continued
    capture: Optional[Path] = None  # stdout is also saved here

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"stage": self.name, **self.inputs}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def build_stages(cfg: PipelineConfig, corpus_sha256: str) -> list[Stage]:
    python, out = sys.executable, cfg.out
    vocab, shards, run = out / "vocab.json", out / "shards", out / "run"
    threads = ["--threads", str(cfg.threads)]
    tokenizer = Stage(
        "tokenizer", "train the tokenizer (bpe_fast, Rust)",
        [python, "-m", "bpe_fast", "train", str(cfg.corpus), "--vocab", str(cfg.vocab), "--special", EOT_TEXT,
         "--doc-sep", cfg.doc_sep, *threads, "--no-progress", "-o", str(vocab)],
        {"corpus": corpus_sha256, "vocab": cfg.vocab, "doc_sep": cfg.doc_sep, "special": EOT_TEXT},
        [vocab],
    )  # fmt: skip
    check = Stage(
        "check", "check encode -> decode is lossless",
        [python, "-m", "bpe_fast", "roundtrip", "--tokenizer", str(vocab), str(cfg.corpus)],
        {"corpus": corpus_sha256, "tokenizer": tokenizer.fingerprint},
    )  # fmt: skip
    shard = Stage(
        "shards", "tokenize the corpus into shards",
        [python, "-m", "gpt.prepare", "--files", str(cfg.corpus), "--doc-sep", cfg.doc_sep, "--tokenizer", str(vocab),
         "--out", str(shards), "--shard-size", str(cfg.shard_size), "--val-fraction", str(cfg.val_fraction),
         *threads, "--no-progress"],
        {"corpus": corpus_sha256, "tokenizer": tokenizer.fingerprint, "doc_sep": cfg.doc_sep,
         "shard_size": cfg.shard_size, "val_fraction": cfg.val_fraction},
        [shards],
    )  # fmt: skip
    train_flags = {"preset": cfg.preset, "max_steps": cfg.max_steps, "val_every": cfg.val_every,
                   "val_steps": cfg.val_steps}  # fmt: skip
    train = Stage(
        "train", "train a tiny GPT on CPU",
        [python, "-m", "gpt.train", "--preset", cfg.preset, "--data", str(shards), "--out", str(run),
         "--tokenizer", str(vocab), "--max-steps", str(cfg.max_steps), "--val-every", str(cfg.val_every),
         "--val-steps", str(cfg.val_steps), "--sample-every", "0", "--checkpoint-every", str(cfg.checkpoint_every),
         *threads],
        {"shards": shard.fingerprint, **train_flags},
        [run],
        resume_flag="--resume",
    )  # fmt: skip
    sample = Stage(
        "sample", "sample from the trained model",
        [python, "-m", "gpt.sample", "--checkpoint", str(run), "--tokenizer", str(vocab), "--prompt", cfg.prompt,
         "--num-samples", str(cfg.num_samples), "--max-new-tokens", str(cfg.sample_tokens)],
        {"train": train.fingerprint, "prompt": cfg.prompt, "num_samples": cfg.num_samples,
         "tokens": cfg.sample_tokens},
        [out / "samples.txt"],
        capture=out / "samples.txt",
    )  # fmt: skip
    plot = Stage(
        "plot", "plot the loss curves",
        [python, "-m", "gpt.plot", str(run), "-o", str(out / "loss.png")],
        {"train": train.fingerprint},
        [out / "loss.png"],
    )  # fmt: skip
    return [tokenizer, check, shard, train, sample, plot]


# ------------------------------------------------------------------------------------------ the record


def load_state(out: Path) -> dict:
    path = out / STATE_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); pass --fresh to start over") from e
    if (
        not isinstance(data, dict)
        or data.get("version") != STATE_VERSION
        or not isinstance(data.get("stages"), dict)
    ):
        raise UserError(f"{path}: not a record of this gpt.pipeline; pass --fresh to start over")
    return data["stages"]


def save_state(out: Path, stages: dict) -> None:
    atomic_write_json(out / STATE_NAME, {"version": STATE_VERSION, "stages": stages})


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def prepare_out(cfg: PipelineConfig, stages: list[Stage]) -> None:
    """Makes OUT ready: --fresh empties a previous pipeline output (and nothing else)."""
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: choose another --out")
    ours = {STATE_NAME, MARKER_NAME} | {p.name for stage in stages for p in stage.outputs}
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if cfg.fresh and present:
        foreign = [name for name in present if name not in ours]
        if marker_tool(out) not in (TOOL, None) or foreign:
            raise OverwriteRefused(
                f"--out {out} holds files gpt.pipeline did not make ({', '.join(foreign[:3]) or 'another tool'}), "
                "so --fresh will not delete it: choose another --out"
            )
        for name in present:
            _remove(out / name)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, TOOL)


# ------------------------------------------------------------------------------------------ running


def _environment(threads: int) -> dict:
    env = dict(os.environ)
    if threads:
        # torch and BLAS read these at start-up (gpt.sample and gpt.plot have no --threads of their own).
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def run_stage(number: int, total: int, stage: Stage, resume: bool, threads: int) -> int:
    """Prints the command as a user would type it and runs it; returns its exit status."""
    command = stage.command + ([stage.resume_flag] if resume and stage.resume_flag else [])
    note = " (continuing the interrupted run)" if resume and stage.resume_flag else ""
    print(f"\n=== {number}/{total} {stage.title}{note}\n$ {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    if stage.capture is None:
        status = subprocess.run(command, env=_environment(threads)).returncode
    else:
        result = subprocess.run(command, env=_environment(threads), stdout=subprocess.PIPE, text=True)
        print(result.stdout, end="", flush=True)
        status = result.returncode
        if status == 0:
            atomic_write_text(stage.capture, result.stdout)
    if status == 0:
        print(f"=== {stage.name}: done in {time.perf_counter() - started:.1f} s", flush=True)
    return status


def run_pipeline(cfg: PipelineConfig) -> int:
    if not cfg.corpus.is_file():
        what = "is a folder, not a text file" if cfg.corpus.is_dir() else "does not exist"
        raise UserError(f"--corpus {cfg.corpus} {what}: pass a UTF-8 .txt file")
    if cfg.corpus.stat().st_size == 0:
        raise UserError(f"--corpus {cfg.corpus} is empty: pass a UTF-8 .txt file with text in it")
    stages = build_stages(cfg, file_sha256(cfg.corpus))
    prepare_out(cfg, stages)
    record = load_state(cfg.out)
    reused, rebuilt = [], []
    started = time.perf_counter()
    for number, stage in enumerate(stages, 1):
        previous = record.get(stage.name, {})
        same = previous.get("fingerprint") == stage.fingerprint
        if same and previous.get("done") and all(p.exists() for p in stage.outputs):
            print(
                f"=== {number}/{len(stages)} {stage.title}: reused (fingerprint {stage.fingerprint} unchanged)"
            )
            reused.append(stage.name)
            continue
        resume = same and not previous.get("done")
        if not resume:
            unrecorded = [p for p in stage.outputs if p.exists() and not previous]
            if unrecorded:
                raise UserError(
                    f"{unrecorded[0]} exists but {cfg.out / STATE_NAME} does not record it (an older pipeline, or "
                    "not the pipeline's): pass --fresh to start over, or choose another --out"
                )
            for path in stage.outputs:
                _remove(path)  # the pipeline's own output of other inputs
        record[stage.name] = {"fingerprint": stage.fingerprint, "done": False, "inputs": stage.inputs}
        save_state(cfg.out, record)
        status = run_stage(number, len(stages), stage, resume, cfg.threads)
        if status != 0:
            print(
                f"{PROG}: error: stage '{stage.name}' failed with exit status {status} (its message is above); "
                "fix it and run the same command to continue",
                file=sys.stderr,
            )
            return status
        record[stage.name]["done"] = True
        save_state(cfg.out, record)
        rebuilt.append(stage.name)
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\nreused: {', '.join(reused) or 'none'}; rebuilt: {', '.join(rebuilt) or 'none'} ({minutes:.1f} min)"
    )
    print(
        f"All outputs are in {cfg.out}/: vocab.json, shards/, run/ (log.jsonl, checkpoints), samples.txt, loss.png"
    )
    return 0


# ------------------------------------------------------------------------------------------ command line


def build_parser() -> ArgumentParser:
    defaults = PipelineConfig(corpus=Path("-"))
    parser = ArgumentParser(
        prog=PROG,
        description="Corpus -> bpe_fast tokenizer -> shards -> tiny GPT on CPU -> samples, in one command. A re-run "
        "reuses the stages whose inputs did not change.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--corpus", type=Path, default=argparse.SUPPRESS,
                        help="UTF-8 text file to learn from (default: the bundled tinyshakespeare.txt)")  # fmt: skip
    parser.add_argument("--doc-sep", default=defaults.doc_sep,
                        help="documents are the blocks between these separators (escapes like \\n understood)")  # fmt: skip
    parser.add_argument("--vocab", type=positive_int, default=defaults.vocab,
                        help="tokenizer vocab size, <|endoftext|> included (at least 257)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=defaults.out, help="folder for every output")
    parser.add_argument("--preset", default=defaults.preset, help="gpt.train preset")
    parser.add_argument("--max-steps", type=positive_int, default=defaults.max_steps, help="training steps")
    parser.add_argument("--val-every", type=positive_int, default=defaults.val_every,
                        help="validation loss every N steps")  # fmt: skip
    parser.add_argument("--val-steps", type=positive_int, default=defaults.val_steps,
                        help="validation batches per evaluation")  # fmt: skip
    parser.add_argument("--val-fraction", type=fraction, default=defaults.val_fraction,
                        help="share of the documents held out for validation, in (0, 1)")  # fmt: skip
    parser.add_argument(
        "--shard-size", type=positive_int, default=defaults.shard_size, help="tokens per shard"
    )
    parser.add_argument("--prompt", default=defaults.prompt, help="prompt for the final samples")
    parser.add_argument("--threads", type=positive_int, default=defaults.threads,
                        help="threads for tokenizer training, encoding and torch: the tiny model gains little from "
                        "more, and on a busy machine oversubscribed torch threads can be 10x slower")  # fmt: skip
    parser.add_argument("--fresh", action="store_true",
                        help="delete a previous pipeline output in OUT first and run every stage again")  # fmt: skip
    return parser


def parse_config(argv: Optional[Sequence[str]]) -> PipelineConfig:
    args = build_parser().parse_args(argv)
    if args.vocab < 257:
        raise UserError(f"--vocab {args.vocab} is too small: 256 bytes + <|endoftext|> need at least 257")
    if args.val_fraction == 0:
        raise UserError(
            "--val-fraction 0 leaves no validation split, which the loss curve needs: use e.g. 0.1"
        )
    values = {key: value for key, value in vars(args).items() if value is not None}
    values.setdefault("corpus", samples.path("tinyshakespeare.txt"))
    return PipelineConfig(**values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_pipeline(parse_config(argv))


__all__ = ["PipelineConfig", "Stage", "build_stages", "main", "run_pipeline"]

if __name__ == "__main__":
    run_main(main, PROG)
