"""gpt.prepare vs build-nanogpt's shard writer: tokens/s and peak memory (not a test; prints a table).

    python benches/prepare_bench.py [--corpora /work/shared/data/corpora] [--repeat 3] [--json out.json]

Both sides tokenize the same documents (each .txt of corpora/en and corpora/zh split at blank lines)
with GPT-2's vocab and write uint16 llm.c shards of 100M tokens; the bench checks that the two token
streams are identical, so they did the same work.

- gpt.prepare: `python -m gpt.prepare --files ... --doc-sep '\\n\\n' --tokenizer gpt2 --val-fraction 0`
  (bpe_fast, threads; no val split, so its one stream compares with build-nanogpt's).
- build-nanogpt (fineweb.py): tiktoken's gpt2 built from the bundled encoder.json/vocab.bpe in a
  `multiprocessing.Pool` with `imap(tokenize, docs, chunksize=16)`, each doc -> [eot] + encode_ordinary
  -> uint16 array, copied into a shard buffer. build-nanogpt uses cpu_count()//2 processes; we also run
  it with cpu_count() processes (a stronger baseline) and compare against the faster of the two.

Each job runs in a fresh subprocess, timed end to end (start-up, tokenizer load, reading, writing);
the best of --repeat runs is reported. Peak RSS is the job's own ru_maxrss and the largest child's
(the pool workers). Memory flatness: each job once more on the corpus and on it repeated 4x (symlinks),
with 2M-token shards so both inputs span several shards (a 100M-token shard buffer fills further with
more input, which is bounded by the shard size, not the corpus).
Needs /work/shared/data (skips cleanly without it) and bpe_fast's Rust core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPT2_DIR = REPO / "python" / "bpe_fast" / "gpt2"
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SHARD_SIZE = 100_000_000
MEMORY_SHARD_SIZE = 2_000_000


# ------------------------------------------------------------------------------------------------
# build-nanogpt's approach (runs inside a subprocess: `prepare_bench.py _baseline OUT NPROCS FILE...`)
# ------------------------------------------------------------------------------------------------

_encoding = None


def _init_worker() -> None:
    global _encoding
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(GPT2_DIR / "vocab.bpe"), encoder_json_file=str(GPT2_DIR / "encoder.json")
    )
    _encoding = tiktoken.Encoding(
        "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )


def _tokenize(doc: str):
    import numpy as np

    tokens = [_encoding._special_tokens["<|endoftext|>"]]
    tokens.extend(_encoding.encode_ordinary(doc))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large for uint16"
    return tokens_np.astype(np.uint16)


def _documents(files):
    for path in files:
        for doc in Path(path).read_text(encoding="utf-8").split("\n\n"):
            if doc:
                yield doc


def baseline_main(out_dir: str, nprocs: int, shard_size: int, files: list[str]) -> None:
    import multiprocessing as mp

    import numpy as np

    from gpt.shards import write_shard

    os.makedirs(out_dir, exist_ok=True)
    with mp.Pool(nprocs, initializer=_init_worker) as pool:
        shard_index = 0
        buffer = np.empty((shard_size,), dtype=np.uint16)
        count = 0
        for tokens in pool.imap(_tokenize, _documents(files), chunksize=16):
            if count + len(tokens) < shard_size:
                buffer[count : count + len(tokens)] = tokens
                count += len(tokens)
            else:
                split = "val" if shard_index == 0 else "train"
                remainder = shard_size - count
                buffer[count : count + remainder] = tokens[:remainder]
                write_shard(os.path.join(out_dir, f"{split}_{shard_index:06d}.bin"), buffer, vocab_size=50257)
                shard_index += 1
                buffer[0 : len(tokens) - remainder] = tokens[remainder:]
                count = len(tokens) - remainder
        if count:
            split = "val" if shard_index == 0 else "train"
            write_shard(
                os.path.join(out_dir, f"{split}_{shard_index:06d}.bin"), buffer[:count], vocab_size=50257
            )


# ------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------

_MEASURE = """
import resource, runpy, sys, time
start = time.perf_counter()
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__") if {module!r} else runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    if e.code not in (0, None):
        raise
seconds = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("MEASURE", seconds, own, child)
"""


def measure(argv: list[str], module: str = "") -> dict:
    """Runs a job in a fresh interpreter; returns seconds and peak RSS (KiB on Linux)."""
    code = _MEASURE.format(argv=argv, module=module)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "python"), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{result.stderr[-3000:]}")
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("MEASURE")][-1]
    _, seconds, own, child = line.split()
    return {"seconds": float(seconds), "rss_own_mib": int(own) / 1024, "rss_child_mib": int(child) / 1024}


def stream_of(out_dir: Path):
    import numpy as np

    from gpt.shards import read_shard

    names = sorted(out_dir.glob("*.bin"), key=lambda p: int(p.stem.split("_")[1]))
    return np.concatenate([read_shard(p) for p in names])


def corpus_files(corpora: Path) -> list[Path]:
    files = []
    for lang in ("en", "zh"):
        files += sorted(
            p for p in (corpora / lang).glob("*.txt") if not p.name.startswith(("COPYING", "LICENSE"))
        )
    return files


def repeated(files: list[Path], times: int, folder: Path) -> list[Path]:
    """The corpus `times` over, as symlinks with distinct names (gpt.prepare drops repeated paths)."""
    links = []
    for copy in range(times):
        for path in files:
            link = folder / f"copy{copy}_{path.parent.name}_{path.name}"
            link.symlink_to(path.resolve())
            links.append(link)
    return links


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpora", default="/work/shared/data/corpora", help="folder with en/ and zh/ .txt files"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per configuration; the fastest is reported"
    )
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    corpora = Path(args.corpora)
    if not (corpora / "en").is_dir():
        print(f"skipped: {corpora} not found (the bench needs the shared corpora)")
        return 0
    try:
        sys.path[:0] = [str(REPO), str(REPO / "python")]
        import bpe_fast

        bpe_fast.Tokenizer.gpt2()
    except ImportError as e:
        print(f"skipped: bpe_fast's Rust core is not built ({e})")
        return 0

    files = corpus_files(corpora)
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="prepare_bench_") as tmp:
        tmp = Path(tmp)
        (tmp / "x4").mkdir()
        corpus = {1: files, 4: repeated(files, 4, tmp / "x4")}

        def ours(name, copies, shard_size, runs):
            out = tmp / name
            argv = ["gpt.prepare", "--files", *map(str, corpus[copies]), "--doc-sep", "\\n\\n", "--tokenizer",
                    "gpt2", "--out", str(out), "--shard-size", str(shard_size), "--val-fraction", "0", "--no-progress", "-q",
                    "--overwrite"]  # fmt: skip
            return [measure(argv, module="gpt.prepare") for _ in range(runs)], out

        def theirs(name, copies, nprocs, shard_size, runs):
            out = tmp / name
            results = []
            for _ in range(runs):
                for old in out.glob("*.bin") if out.exists() else []:
                    old.unlink()
                argv = [str(Path(__file__).resolve()), "_baseline", str(out), str(nprocs), str(shard_size),
                        *map(str, corpus[copies])]  # fmt: skip
                results.append(measure(argv))
            return results, out

        # Speed: the default 100M-token shards, best of --repeat, runs interleaved.
        ours_runs, base_full, base_half = [], [], []
        for _ in range(args.repeat):
            runs, ours_out = ours("ours", 1, SHARD_SIZE, 1)
            ours_runs += runs
            runs, base_out = theirs("nanogpt_full", 1, cpus, SHARD_SIZE, 1)
            base_full += runs
            runs, _ = theirs("nanogpt_half", 1, max(1, cpus // 2), SHARD_SIZE, 1)
            base_half += runs
        ours_stream, base_stream = stream_of(ours_out), stream_of(base_out)
        identical = ours_stream.shape == base_stream.shape and bool((ours_stream == base_stream).all())
        tokens = int(ours_stream.size)

        # Memory: 2M-token shards, so 1x and 4x both run in steady state (several shards each); a
        # 100M-token shard buffer would be filled further by the larger input and hide flatness.
        memory = {
            (who, copies): (ours("mem_ours", copies, MEMORY_SHARD_SIZE, 1)[0] if who == "gpt.prepare"
                            else theirs("mem_nanogpt", copies, cpus, MEMORY_SHARD_SIZE, 1)[0])[0]
            for who in ("gpt.prepare", "build-nanogpt") for copies in (1, 4)
        }  # fmt: skip

    rows = []
    for label, runs in (
        (f"gpt.prepare (bpe_fast, {cpus} threads)", ours_runs),
        (f"build-nanogpt (tiktoken, Pool({cpus}))", base_full),
        (f"build-nanogpt (tiktoken, Pool({max(1, cpus // 2)}) = cpu//2)", base_half),
    ):
        run = best(runs)
        rows.append(
            {"job": label, "mb": megabytes, "tokens": tokens, **run, "tokens_per_s": tokens / run["seconds"]}
        )
    ours_best = rows[0]["tokens_per_s"]
    baseline_best = max(rows[1]["tokens_per_s"], rows[2]["tokens_per_s"])

    print(f"corpus: {len(files)} files of {corpora}/{{en,zh}}, {megabytes:.1f} MB, {tokens:,} GPT-2 tokens "
          f"(blank-line documents); {cpus} CPUs; best of {args.repeat}; token streams identical: {identical}")  # fmt: skip
    header = f"{'job':<50} {'MB':>6} {'tokens':>11} {'s':>7} {'Mtok/s':>7} {'MB/s':>6} {'RSS MiB':>8} {'child MiB':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['job']:<50} {row['mb']:6.1f} {row['tokens']:11,} {row['seconds']:7.2f} "
              f"{row['tokens_per_s'] / 1e6:7.2f} {row['mb'] / row['seconds']:6.2f} {row['rss_own_mib']:8.0f} "
              f"{row['rss_child_mib']:9.0f}")  # fmt: skip
    print(f"speed-up vs the faster build-nanogpt run: {ours_best / baseline_best:.2f}x")
    print(f"peak RSS with {MEMORY_SHARD_SIZE:,}-token shards (own / largest child, MiB):")
    for who in ("gpt.prepare", "build-nanogpt"):
        one, four = memory[(who, 1)], memory[(who, 4)]
        print(f"  {who:<14} 1x corpus {one['rss_own_mib']:6.0f} / {one['rss_child_mib']:4.0f}   "
              f"4x corpus {four['rss_own_mib']:6.0f} / {four['rss_child_mib']:4.0f}   "
              f"(4x took {four['seconds']:.1f} s)")  # fmt: skip
    if args.json:
        report = {
            "rows": rows,
            "identical": identical,
            "speedup": ours_best / baseline_best,
            "memory": {f"{who} x{copies}": run for (who, copies), run in memory.items()},
        }
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if identical else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_baseline":
        sys.path.insert(0, str(REPO))
        baseline_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(main())
