"""The whole path in one command: bundled corpus -> bpe_fast tokenizer -> token shards -> a tiny GPT
trained on CPU -> samples and a loss-curve PNG.

    python -m gpt.pipeline                      # a few minutes on 2 CPU cores
    python -m gpt.pipeline --max-steps 50       # a quick look

Each stage runs the same public command a user would type (printed before it runs), so the pipeline
doubles as a worked example. Stages whose output already exists are skipped: re-running continues
(the trainer resumes from its latest checkpoint).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bpe_fast import samples

DEFAULT_CORPUS = samples.path("tinyshakespeare.txt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpt.pipeline",
        description="Corpus -> bpe_fast tokenizer -> shards -> tiny GPT on CPU -> samples, in one command.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="UTF-8 text file to learn from")
    parser.add_argument(
        "--doc-sep",
        default="\\n\\n",
        help="documents are the blocks between these separators (escapes like \\n understood)",
    )
    parser.add_argument(
        "--vocab", type=int, default=1024, help="tokenizer vocab size, <|endoftext|> included"
    )
    parser.add_argument("--out", type=Path, default=Path("out/pipeline"), help="folder for every output")
    parser.add_argument("--preset", default="tiny-cpu", help="gpt.train preset")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of documents held out for val")
    parser.add_argument("--shard-size", type=int, default=200_000, help="tokens per shard")
    parser.add_argument("--prompt", default="ROMEO:", help="prompt for the final samples")
    parser.add_argument("--fresh", action="store_true", help="delete OUT first and run every stage again")
    return parser.parse_args(argv)


def run_stage(title: str, command: list[str]) -> None:
    """Prints the command as a user would type it, runs it, and stops the pipeline if it fails."""
    print(f"\n=== {title}\n$ {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=Path.cwd())
    if result.returncode != 0:
        sys.exit(f"pipeline: stage '{title}' failed with exit code {result.returncode}")
    print(f"=== {title}: done in {time.perf_counter() - started:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.corpus.is_file():
        sys.exit(f"pipeline: corpus not found: {args.corpus}")
    out: Path = args.out
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path = out / "vocab.json"
    shards = out / "shards"
    run_dir = out / "run"
    python = sys.executable

    if not vocab_path.exists():
        run_stage(
            "1/5 train the tokenizer (bpe_fast, Rust)",
            [python, "-m", "bpe_fast", "train", str(args.corpus), "--vocab", str(args.vocab),
             "--special", "<|endoftext|>", "--doc-sep", args.doc_sep, "-o", str(vocab_path)],
        )  # fmt: skip
    run_stage(
        "2/5 check encode -> decode is lossless",
        [python, "-m", "bpe_fast", "roundtrip", "--tokenizer", str(vocab_path), str(args.corpus)],
    )
    if not (shards / "manifest.json").exists():
        run_stage(
            "3/5 tokenize the corpus into shards",
            [python, "-m", "gpt.prepare", "--files", str(args.corpus), "--doc-sep", args.doc_sep,
             "--tokenizer", str(vocab_path), "--out", str(shards), "--shard-size", str(args.shard_size),
             "--val-fraction", str(args.val_fraction)],
        )  # fmt: skip
    train = [python, "-m", "gpt.train", "--preset", args.preset, "--data", str(shards), "--out", str(run_dir),
             "--tokenizer", str(vocab_path), "--sample-prompt", args.prompt, "--resume"]  # fmt: skip
    if args.max_steps is not None:
        train += ["--max-steps", str(args.max_steps)]
    run_stage("4/5 train a tiny GPT on CPU", train)
    run_stage(
        "5/5 sample from the trained model and plot the loss curves",
        [python, "-m", "gpt.sample", "--checkpoint", str(run_dir), "--tokenizer", str(vocab_path),
         "--prompt", args.prompt, "--num-samples", "3", "--max-new-tokens", "80"],
    )  # fmt: skip
    run_stage("plot", [python, "-m", "gpt.plot", str(run_dir), "-o", str(out / "loss.png")])
    print(f"\nAll outputs are in {out}/: vocab.json, shards/, run/ (log.jsonl, tb/, checkpoints), loss.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
