"""The worst case for long-word encoding: one word that bpe_fast cannot cut into pieces.

bpe_fast cuts a long pre-tokenizer chunk between two bytes that no merge can join (see
``Merger::split_points`` in rust/src/encode.rs): the report's random 1 MB word of lowercase letters has
such a point every ~7 bytes with GPT-2's merges. This script builds a word of the same letters in which
every adjacent pair does occur inside some GPT-2 token, so the whole word takes the one-chunk bucket
encoder, and times it beside the report's random word and 1 MB of English (per-byte slowdown, as the
report's pathological section computes it). Not one of the issue's inputs; it shows what the split does
not cover.

    python benches/unsplittable_word.py [--mb 1] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import sys
from pathlib import Path
from typing import Dict, List, Set

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benches import corpus, measure, peers, trainers  # noqa: E402


def joined_letter_pairs(tokens: List[bytes]) -> Dict[str, List[str]]:
    """For each lowercase letter, the letters that follow it inside at least one token."""
    inside: Set[bytes] = set()
    for token in tokens:
        inside.update(token[i : i + 2] for i in range(len(token) - 1))
    letters = string.ascii_lowercase
    return {a: [b for b in letters if (a + b).encode() in inside] for a in letters}


def unsplittable_word(size: int, tokens: List[bytes]) -> str:
    """A random walk over letter pairs that some token contains: no boundary in it is a split point."""
    follow = joined_letter_pairs(tokens)
    rng = random.Random(7)
    letter = "a"
    word = []
    for _ in range(size):
        word.append(letter)
        letter = rng.choice(follow[letter])
    return "".join(word)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=1.0, help="size of each input in MB (default 1)")
    parser.add_argument(
        "--runs", type=int, default=5, help="timed runs per input and encoder (median; default 5)"
    )
    args = parser.parse_args()

    size = int(args.mb * corpus.MB)
    encoders = peers.gpt2_encoders()
    tokens = trainers.bpe_fast_token_list(encoders["bpe_fast"].tok)
    inputs = {
        "unsplittable_word": unsplittable_word(size, tokens),
        "one_word (report)": corpus.pathological_texts(size)["one_word"],
    }
    if corpus.data_dir() is not None:
        inputs["normal English"] = corpus.read_text(corpus.corpus_file(args.mb, "en"))
    medians: Dict[str, Dict[str, float]] = {}
    for label, text in inputs.items():
        jobs = {
            name: (lambda e=enc, t=text: e.encode(t))
            for name, enc in encoders.items()
            if name != "hf_tokenizers"
        }
        timings = measure.time_interleaved(jobs, args.runs, len(text.encode()), keep_output=True)
        if timings["bpe_fast"].output != timings["tiktoken"].output:
            raise SystemExit(f"{label}: bpe_fast and tiktoken ids differ")
        medians[label] = {
            name: len(text.encode()) / 1e6 / statistics.median(t.seconds) for name, t in timings.items()
        }
    normal = medians.get("normal English", {}).get("bpe_fast")
    print("| input | bpe_fast MB/s | tiktoken MB/s | vs tiktoken | per-byte time vs English |")
    print("|---|---|---|---|---|")
    for label, speeds in medians.items():
        slowdown = f"{normal / speeds['bpe_fast']:.2f}x" if normal else "n/a (no corpora)"
        ratio = speeds["bpe_fast"] / speeds["tiktoken"]
        print(
            f"| {label} | {speeds['bpe_fast']:.1f} | {speeds['tiktoken']:.2f} | {ratio:.1f}x | {slowdown} |"
        )


if __name__ == "__main__":
    main()
