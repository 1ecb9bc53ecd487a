"""Runs bpe_fast and every peer side by side; writes benches/RESULTS.md (+ .json and plots).

    python benches/report.py [--quick] [--only SECTION ...] [--out PATH] [--update-readme]

Measuring lives in benches/measure_encode.py, measure_train.py and measure_scaling.py; judging in
benches/targets.py; writing in benches/render.py. This file only reads the flags, runs the sections and
hands their rows on. Method: docs/BENCHMARKS.md. Needs the shared corpora (exit 2 without them).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, Tuple

if __package__ in (None, ""):
    # Launched by path: make `benches` importable as a package from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benches import corpus, measure_encode, measure_train, peers, render, targets, vocabs  # noqa: E402
from benches.measure_encode import log  # noqa: E402
from bpe_fast.cliutil import ArgumentParser, UserError, bounded, positive_float, positive_int, run_main  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
SECTIONS = ("encode", "train", "pathological", "scaling")
PROG = "python benches/report.py"


@dataclass(frozen=True)
class Config:
    runs: int
    slice_mb: float
    batch_mb: float
    pathological_mb: float
    train_runs: int
    train_mb: float
    train_vocabs: Tuple[int, ...]
    scaling_mb: Tuple[float, ...]
    scaling_vocab: int
    worker_timeout_s: float
    train_timeout_s: float
    pathological_timeout_s: float
    # Whether peers train on the pathological inputs too (only bpe_fast has a target there).
    pathological_train_peers: bool
    check_ties: bool


FULL = Config(
    runs=3,
    slice_mb=1.0,
    batch_mb=4.0,
    pathological_mb=1.0,
    train_runs=3,
    train_mb=50,
    train_vocabs=(8192, 32768),
    scaling_mb=(1, 2, 4, 8, 16, 32),
    scaling_vocab=8192,
    worker_timeout_s=900,
    train_timeout_s=900,
    pathological_timeout_s=30,
    pathological_train_peers=True,
    check_ties=True,
)
QUICK = replace(
    FULL,
    slice_mb=0.25,
    batch_mb=0.5,
    pathological_mb=0.25,
    train_runs=1,
    train_mb=4,
    scaling_mb=(1, 2),
    scaling_vocab=2048,
    worker_timeout_s=300,
    train_timeout_s=300,
    pathological_train_peers=False,
)


def parse_args(argv=None):
    parser = ArgumentParser(
        prog=PROG,
        description="Benchmark bpe_fast against every peer side by side (encode, batch, decode, load, "
        "training) and judge issue 12's targets; writes a markdown report, its JSON and plots.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small slices, a 4 MB training corpus, 1 training run"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "RESULTS.md",
        help="markdown report to write (default: benches/RESULTS.md)",
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections (default: all)")
    parser.add_argument(
        "--runs",
        type=bounded(int, minimum=3),
        help="timed slices per cell, each unseen, median shown (default and minimum 3)",
    )
    parser.add_argument(
        "--slice-mb", type=positive_float, help="size of each single-call slice in MB (full 1, quick 0.25)"
    )
    parser.add_argument(
        "--batch-mb", type=positive_float, help="size of each timed batch in MB (full 4, quick 0.5)"
    )
    parser.add_argument(
        "--train-mb", type=positive_float, help="training corpus size in MB (full 50, quick 4)"
    )
    parser.add_argument(
        "--train-runs", type=positive_int, help="runs per training configuration (full 3, quick 1)"
    )
    parser.add_argument(
        "--pathological-mb",
        type=positive_float,
        help="size of each pathological input in MB (full 1, quick 0.25)",
    )
    parser.add_argument(
        "--scaling-mb",
        type=positive_float,
        nargs="+",
        help="corpus sizes for time vs size (full 1 2 4 8 16 32)",
    )
    parser.add_argument(
        "--peers",
        nargs="+",
        choices=peers.ENCODERS,
        help="encoders to run (default: all; tiktoken is always run: it is the reference)",
    )
    parser.add_argument(
        "--vocabs", nargs="+", choices=vocabs.VOCABS, help="vocabularies to encode with (default: all)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="thread count for 'all cores' (default: the CPUs this process may use)",
    )
    parser.add_argument(
        "--no-tie-check",
        action="store_true",
        help="do not replay differing merge lists (they then count as unchecked)",
    )
    parser.add_argument(
        "--update-readme",
        nargs="?",
        const=REPO_ROOT / "README.md",
        type=Path,
        metavar="README",
        help=f"also write the speed table between {render.README_START} and {render.README_END} in README (default: README.md)",
    )
    return parser.parse_args(argv)


def config_from(args) -> Config:
    cfg = QUICK if args.quick else FULL
    for flag, name in (
        ("runs", "runs"),
        ("slice_mb", "slice_mb"),
        ("batch_mb", "batch_mb"),
        ("train_mb", "train_mb"),
        ("train_runs", "train_runs"),
        ("pathological_mb", "pathological_mb"),
    ):
        value = getattr(args, flag)
        if value is not None:
            cfg = replace(cfg, **{name: value})
    if args.scaling_mb:
        cfg = replace(cfg, scaling_mb=tuple(sorted(args.scaling_mb)))
    if args.no_tie_check:
        cfg = replace(cfg, check_ties=False)
    return cfg


def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "rust", "python", "Cargo.toml"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if commit and dirty:
            commit += " + uncommitted changes in rust/ or python/"
    except OSError:
        commit = "unknown"
    return {
        "cpu": cpu,
        "cpus usable": str(measure_encode.cpu_count()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "git commit": commit or "unknown",
        "load average at start (1, 5, 15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "niceness": str(os.nice(0)),
        "bpe_fast extension": extension_stamp(),
    }


def extension_stamp() -> str:
    """Which compiled bpe_fast extension was measured (path and build time): the tree may be mid-change."""
    import bpe_fast

    path = bpe_fast.extension_path()
    if path is None:
        return "not found"
    built = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return f"{path} (built {built:%Y-%m-%d %H:%M} UTC)"


def run_sections(cfg: Config, args, sections, have_us: bool) -> dict:
    all_threads = args.threads or measure_encode.cpu_count()
    thread_counts = tuple(sorted({1, all_threads}))
    results: dict = {}
    train_corpus = corpus.corpus_file(cfg.train_mb)
    if "encode" in sections:
        chosen = list(args.peers or peers.ENCODERS)
        if peers.REFERENCE not in chosen:
            chosen.insert(0, peers.REFERENCE)
        ecfg = measure_encode.EncodeConfig(
            runs=cfg.runs,
            slice_bytes=int(cfg.slice_mb * corpus.MB),
            batch_bytes=int(cfg.batch_mb * corpus.MB),
            pathological_bytes=int(cfg.pathological_mb * corpus.MB),
            all_threads=all_threads,
            worker_timeout_s=cfg.worker_timeout_s,
            encoders=tuple(chosen),
            vocabs=tuple(args.vocabs or vocabs.VOCABS),
        )
        log("preparing slices and vocabularies (cached after the first run)")
        slices = measure_encode.prepare_slices(ecfg)
        specs = vocabs.all_specs(train_corpus)
        results["vocabs"] = {
            k: (v.as_dict() if isinstance(v, vocabs.VocabSpec) else v) for k, v in specs.items()
        }
        results["encode"] = measure_encode.measure(ecfg, specs, slices)
    if "train" in sections:
        tcfg = measure_train.TrainConfig(
            runs=cfg.train_runs,
            corpus_mb=cfg.train_mb,
            vocab_sizes=cfg.train_vocabs,
            threads=thread_counts,
            timeout_s=cfg.train_timeout_s,
            check_ties=cfg.check_ties,
        )
        results["train"] = measure_train.measure(tcfg)
    if "pathological" in sections:
        names = [
            p
            for p in ("bpe_fast", "rustbpe", "hf_tokenizers", "bpeasy", "gigabpe", "ffbpe")
            if cfg.pathological_train_peers or p == peers.US
        ]
        results["pathological_train"] = measure_train.measure_pathological(
            int(cfg.pathological_mb * corpus.MB), 8192, all_threads, cfg.pathological_timeout_s, names
        )
    if "scaling" in sections:
        from benches.measure_scaling import measure_scaling

        results["scaling"] = measure_scaling(
            cfg.scaling_mb, cfg.scaling_vocab, all_threads, cfg.train_timeout_s
        )
    results["thread_counts"] = thread_counts
    return results


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    cfg = config_from(args)
    if corpus.data_dir() is None:
        raise UserError(
            "benchmark corpora not found: set BPE_FAST_BENCH_DATA to a folder with en/ and zh/ (nothing measured)"
        )
    if args.update_readme is not None and not args.update_readme.is_file():
        raise UserError(f"--update-readme {args.update_readme}: no such file")
    try:
        import tiktoken  # noqa: F401  (the reference every peer's ids are checked against)
    except ImportError:
        raise UserError(
            "tiktoken is not installed: it is the reference for every id check (pip install -e '.[bench]')"
        ) from None
    sections = [s for s in SECTIONS if s in (args.only or SECTIONS)]
    command = f"{PROG} " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    info = machine_info()
    have_us = peers.bpe_fast_available()
    log(f"bpe_fast available: {have_us}; sections {sections}; config {cfg}")
    results = {
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "mode": "quick" if args.quick else "full",
        "config": asdict(cfg),
        "versions": peers.versions(),
        "bpe_fast_available": have_us,
    }
    results.update(run_sections(cfg, args, sections, have_us))
    found = targets.evaluate(results, cfg.train_vocabs, results["thread_counts"], cfg.scaling_mb)
    info["load average at end (1, 5, 15 min)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["report wall time"] = f"{(time.perf_counter() - started) / 60:.1f} min"
    if extension_stamp() != info["bpe_fast extension"]:
        info["bpe_fast extension"] += f"; REBUILT DURING THE RUN, now {extension_stamp()}: results mix builds"
    from bpe_fast.files import atomic_write_text

    out_path = args.out.resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_path, render.markdown(results, found, command, info) + "\n")
    atomic_write_text(
        out_path.with_suffix(".json"),
        json.dumps({**results, "command": command, "targets": found, "machine": info}, indent=1, default=str),
    )
    if results.get("encode"):
        render.plot_single(results["encode"], out_path.with_name("encode_single_core.png"))
    if results.get("scaling"):
        render.plot_scaling(results["scaling"], out_path.with_name("throughput_vs_size.png"))
    if args.update_readme is not None:
        try:
            updated = render.update_readme(args.update_readme, results, found)
        except render.MarkersMissing as exc:
            raise UserError(
                f"--update-readme {args.update_readme}: {exc}; add them where the table goes"
            ) from None
        log(f"updated {args.update_readme}: {', '.join(updated)}")
    log(f"wrote {out_path}")
    for t in found:
        value = "-" if t["value"] is None else f"{t['value']:.2f}{t['unit']}"
        print(f"{render.verdict(t['met']):>8}  {value:>8} {t['goal']:>9}  {t['target']}")
    return 0


if __name__ == "__main__":
    run_main(main, PROG)
