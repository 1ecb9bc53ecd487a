"""One training measurement in this (fresh) process: ``python -m benches.train_worker --peer P ...``.

Run as a subprocess by benches/report.py and benches/bench_train.py so that each peer's peak RSS is its own
and its thread pool is sized by the environment set before any tokenizer library is imported.
Prints one JSON object on stdout: seconds (the train call only: reading the corpus file included,
interpreter start-up and imports excluded), peak_rss_mb (whole process), baseline_rss_mb (after imports,
before training) and the vocab size reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Launched by path: make `benches` importable as a package from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across execve, so a worker forked from a big
    parent would report the parent's size. VmHWM belongs to the new address space and starts from zero.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    # Elsewhere (macOS: bytes; other Unix: KiB) ru_maxrss is the best available.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def main(argv=None) -> int:
    from benches import peers, trainers, vocabs

    parser = argparse.ArgumentParser(
        prog="python -m benches.train_worker", description="Time one BPE training run of one peer."
    )
    parser.add_argument("--peer", required=True, choices=trainers.TRAINERS, help="which trainer to run")
    parser.add_argument("--corpus", required=True, type=Path, help="UTF-8 text file to train on")
    parser.add_argument("--vocab", required=True, type=int, help="target vocab size (256 bytes + merges)")
    parser.add_argument(
        "--threads",
        required=True,
        type=int,
        help="thread count (must match the RAYON_* env this process got)",
    )
    parser.add_argument("--save-ranks", type=Path, help="also write the learned tokens as a tiktoken file")
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: no such file")
    if args.vocab < 256:
        parser.error(f"--vocab {args.vocab}: must be at least 256")

    pinned = os.environ.get("RAYON_NUM_THREADS")
    if pinned != str(args.threads):
        parser.error(f"--threads {args.threads} but RAYON_NUM_THREADS={pinned!r}: run through benches.report")

    # Import the peer's library before the baseline so its import cost is not counted as training memory.
    try:
        peers.import_peer(args.peer)
    except peers.PeerUnavailable as exc:
        # Not installed: one JSON line the report shows as "not available", never a traceback.
        json.dump({"peer": args.peer, "unavailable": str(exc)}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    baseline = _peak_rss_mb()
    # CPU over wall time around the whole call (the token-list conversion included): how many cores the
    # trainer really kept busy, to check the thread pinning took effect.
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    seconds, tokens = trainers.train(args.peer, args.corpus, args.vocab, args.threads)
    cores_used = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
    peak = _peak_rss_mb()
    if args.save_ranks:
        vocabs.write_tiktoken_file(tokens, args.save_ranks)
    json.dump(
        {
            "peer": args.peer,
            "vocab_target": args.vocab,
            "vocab_size": len(tokens),
            "threads": args.threads,
            "seconds": seconds,
            "cores_used": cores_used,
            "peak_rss_mb": peak,
            "baseline_rss_mb": baseline,
            "corpus_bytes": args.corpus.stat().st_size,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
