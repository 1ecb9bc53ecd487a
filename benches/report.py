"""Runs bpe_fast and every peer side by side and writes benches/RESULTS.md (+ a throughput-vs-size PNG).

    python benches/report.py [--quick] [--out benches/RESULTS.md]
    python -m benches.report --help

Sections: training (vocab 8192 / 32768, 1 and 2 threads, peak RSS, one fresh subprocess per run),
encoding on GPT-2's vocab (English, Chinese; one thread and batch), encoding on a 32k vocab trained by
rustbpe (the only vocab all four encoders can load), short-string batches, decoding, pathological inputs
and time vs corpus size. Ids are checked identical across peers before anything is timed. Every number is
the median (and min) of --runs runs on this machine in this run; ratios are "peer time / bpe_fast time".
Needs the shared corpora (see benches/corpus.py); exits with status 2 when they are absent.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ""):
    # Launched by path: make `benches` importable as a package from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benches import corpus, measure, peers  # noqa: E402
from benches.measure import Timing  # noqa: E402

HERE = Path(__file__).resolve().parent
US = "bpe_fast"


@dataclass(frozen=True)
class Config:
    runs: int
    # Training runs per configuration (each a fresh subprocess on the whole corpus: the costly part).
    train_runs: int
    train_mb: float
    train_vocabs: Tuple[int, ...]
    train_threads: Tuple[int, ...]
    encode_mb: float
    short_lines: int
    pathological_mb: float
    pathological_vocab: int
    scaling_mb: Tuple[float, ...]
    scaling_vocab: int
    batch_threads: int
    train_timeout_s: float
    # Some peers are super-linear on one-chunk inputs: cap each such run (a timeout is reported as such).
    pathological_timeout_s: float
    # Whether peers train on the pathological inputs too (only bpe_fast has a target there).
    pathological_train_peers: bool


FULL = Config(
    runs=3,
    train_runs=3,
    train_mb=50,
    train_vocabs=(8192, 32768),
    train_threads=(1, 2),
    encode_mb=7.5,
    short_lines=42_000,
    pathological_mb=1,
    pathological_vocab=8192,
    scaling_mb=(1, 2, 4, 8, 16, 32),
    scaling_vocab=8192,
    batch_threads=2,
    train_timeout_s=600,
    pathological_timeout_s=30,
    pathological_train_peers=True,
)
QUICK = replace(
    FULL,
    runs=1,
    train_runs=1,
    train_mb=4,
    encode_mb=1,
    short_lines=10_000,
    pathological_mb=0.25,
    pathological_vocab=2048,
    scaling_mb=(1, 2, 4),
    scaling_vocab=2048,
    train_timeout_s=120,
    pathological_timeout_s=30,
    pathological_train_peers=False,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- sections


def training_section(cfg: Config, have_us: bool) -> List[dict]:
    """Every trainer x vocab x thread count, ``cfg.runs`` fresh subprocesses each, interleaved by run."""
    path = corpus.corpus_file(cfg.train_mb)
    trainers = [p for p in peers.TRAINERS if have_us or not p.startswith(US)]
    rows = []
    for vocab in cfg.train_vocabs:
        for threads in cfg.train_threads:
            results = {peer: {"runs": []} for peer in trainers}
            for run in range(cfg.train_runs):
                for peer in trainers:
                    log(f"train {peer} vocab={vocab} threads={threads} run {run + 1}/{cfg.train_runs}")
                    ranks_file = corpus.cache_dir() / f"trained_{peer}_{vocab}.tiktoken" if run == 0 else None
                    outcome = measure.run_training(
                        peer, path, vocab, threads, cfg.train_timeout_s, ranks_file
                    )
                    results[peer]["runs"].append(outcome)
            reference_tokens = _read_tokens(corpus.cache_dir() / f"trained_rustbpe_{vocab}.tiktoken")
            for peer in trainers:
                runs = results[peer]["runs"]
                errors = [r["error"] for r in runs if "error" in r]
                good = [r for r in runs if "error" not in r]
                timing = Timing(seconds=[r["seconds"] for r in good], nbytes=path.stat().st_size)
                if errors:
                    timing.error = errors[0]
                row = {
                    "vocab": vocab,
                    "threads": threads,
                    "peer": peer,
                    "timing": timing,
                    "peak_rss_mb": max((r["peak_rss_mb"] for r in good), default=None),
                    "baseline_rss_mb": min((r["baseline_rss_mb"] for r in good), default=None),
                    "vocab_reached": good[0]["vocab_size"] if good else None,
                    "cores_used": max((r.get("cores_used", 0.0) for r in good), default=None),
                    "vs_rustbpe": _compare_vocabs(
                        _read_tokens(corpus.cache_dir() / f"trained_{peer}_{vocab}.tiktoken"),
                        reference_tokens,
                    ),
                }
                rows.append(row)
    return rows


def _read_tokens(path: Path) -> Optional[List[bytes]]:
    try:
        return peers.read_tiktoken_file(path)
    except (OSError, ValueError):
        return None


def _compare_vocabs(tokens: Optional[List[bytes]], reference: Optional[List[bytes]]) -> str:
    """How a trainer's learned merges compare to rustbpe's (ids 256+ in order; HF orders its bytes differently)."""
    if tokens is None or reference is None:
        return "n/a"
    learned, expected = tokens[256:], reference[256:]
    if learned == expected:
        return "identical"
    first = next(
        (i for i, (a, b) in enumerate(zip(learned, expected)) if a != b), min(len(learned), len(expected))
    )
    shared = len(set(learned) & set(expected))
    return f"first differs at merge {first}; {shared}/{len(expected)} tokens shared"


def _encode_jobs(encoders: Dict[str, peers.Encoder], texts: List[str], threads: int, mode: str) -> dict:
    if mode == "single":
        return {name: (lambda e=enc: [e.encode(t) for t in texts]) for name, enc in encoders.items()}
    return {name: (lambda e=enc: e.encode_batch(texts, threads)) for name, enc in encoders.items()}


def _utf8_size(texts: List[str]) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)


def encoding_section(
    cfg: Config, encoders: Dict[str, peers.Encoder], vocab_label: str, languages
) -> List[dict]:
    """One-thread (a loop of encode calls over ~64 KB documents) and batch (one encode_batch call) rows."""
    rows = []
    for language in languages:
        text = corpus.read_text(corpus.corpus_file(cfg.encode_mb, language))
        blocks = corpus.split_blocks(text)
        del text
        # A quick gate on a few documents before timing (a broken peer shows at once); then the exact output
        # of every timed call is compared with tiktoken's below, so no extra encoding pass is needed.
        problems = peers.check_identical(encoders, blocks[:4])
        for mode in ("single", "batch"):
            threads = 1 if mode == "single" else cfg.batch_threads
            timings = measure.time_interleaved(
                _encode_jobs(encoders, blocks, cfg.batch_threads, mode),
                cfg.runs,
                _utf8_size(blocks),
                keep_output=True,
            )
            _compare_outputs(timings, problems, mode)
            log(f"encode {vocab_label} {language} {mode}: ids {problems or 'identical'}")
            for name, timing in timings.items():
                rows.append(
                    {
                        "vocab": vocab_label,
                        "corpus": language,
                        "mode": mode,
                        "threads": threads,
                        "peer": name,
                        "timing": timing,
                        "ids": problems.get(name, "identical"),
                    }
                )
    return rows


def _compare_outputs(timings: Dict[str, Timing], problems: Dict[str, str], mode: str) -> None:
    """Compares every peer's timed output (lists of ids per text) with tiktoken's; frees the outputs."""
    reference_name = "tiktoken" if "tiktoken" in timings else next(iter(timings))
    reference = timings[reference_name].output
    for name, timing in timings.items():
        output = timing.output
        if name == reference_name or output is None or reference is None or name in problems:
            continue
        if output != reference:
            index = next((i for i, (a, b) in enumerate(zip(output, reference)) if a != b), None)
            problems[name] = f"{mode}: ids differ from {reference_name} in text {index}"
    for timing in timings.values():
        timing.output = None


def short_strings_section(cfg: Config, encoders: Dict[str, peers.Encoder], vocab_label: str) -> List[dict]:
    lines = corpus.short_lines(cfg.short_lines)
    problems = peers.check_identical(encoders, lines[:2000])
    nbytes = _utf8_size(lines)
    rows = []
    for mode in ("batch", "single"):
        timings = measure.time_interleaved(
            _encode_jobs(encoders, lines, cfg.batch_threads, mode), cfg.runs, nbytes, keep_output=True
        )
        _compare_outputs(timings, problems, mode)
        for name, timing in timings.items():
            timing.extra["mean_line_bytes"] = nbytes / len(lines)
            rows.append(
                {
                    "vocab": vocab_label,
                    "mode": mode,
                    "threads": 1 if mode == "single" else cfg.batch_threads,
                    "peer": name,
                    "timing": timing,
                    "lines": len(lines),
                    "ids": problems.get(name, "identical"),
                }
            )
    return rows


def decoding_section(
    cfg: Config, encoders: Dict[str, peers.Encoder], vocab_label: str, languages
) -> List[dict]:
    """decode_bytes of one corpus's ids in one call; MB/s counts the decoded bytes."""
    rows = []
    reference = "tiktoken" if "tiktoken" in encoders else next(iter(encoders))
    for language in languages:
        text = corpus.read_text(corpus.corpus_file(cfg.encode_mb, language))
        ids = encoders[reference].encode(text)
        expected = text.encode("utf-8")
        problems = {}
        for name, enc in encoders.items():
            try:
                if enc.decode_bytes(ids) != expected:
                    problems[name] = "decoded bytes differ"
            except Exception as exc:  # shown in the table
                problems[name] = f"{type(exc).__name__}: {exc}"
        jobs = {name: (lambda e=enc, i=ids: e.decode_bytes(i)) for name, enc in encoders.items()}
        for name, timing in measure.time_interleaved(jobs, cfg.runs, len(expected)).items():
            rows.append(
                {
                    "vocab": vocab_label,
                    "corpus": language,
                    "peer": name,
                    "timing": timing,
                    "tokens": len(ids),
                    "ids": problems.get(name, "identical"),
                }
            )
    return rows


def pathological_encoding_section(cfg: Config, encoders: Dict[str, peers.Encoder]) -> List[dict]:
    size = int(cfg.pathological_mb * corpus.MB)
    texts = corpus.pathological_texts(size)
    normal = corpus.read_text(corpus.corpus_file(cfg.pathological_mb, "en"))
    rows = []
    for kind, text in {"normal_en": normal, **texts}.items():
        problems = peers.check_identical(encoders, [text])
        jobs = {name: (lambda e=enc, t=text: e.encode(t)) for name, enc in encoders.items()}
        for name, timing in measure.time_interleaved(jobs, cfg.runs, len(text.encode("utf-8"))).items():
            rows.append(
                {"input": kind, "peer": name, "timing": timing, "ids": problems.get(name, "identical")}
            )
        log(f"pathological encode {kind}: ids {problems or 'identical'}")
    return rows


def pathological_training_section(cfg: Config, have_us: bool) -> List[dict]:
    size = int(cfg.pathological_mb * corpus.MB)
    files = {"normal_mixed": corpus.corpus_file(cfg.pathological_mb)}
    for kind, text in corpus.pathological_texts(size).items():
        path = corpus.cache_dir() / f"pathological_{kind}_{size}.txt"
        if not path.exists():
            path.write_text(text, encoding="utf-8")
        files[kind] = path
    trainers = [p for p in peers.TRAINERS if p != "bpe_fast_texts" and (have_us or not p.startswith(US))]
    if not cfg.pathological_train_peers:
        trainers = [p for p in trainers if p == US]
    rows = []
    for kind, path in files.items():
        for peer in trainers:
            log(f"pathological train {peer} {kind}")
            timing = Timing(nbytes=path.stat().st_size)
            for _ in range(cfg.runs):
                outcome = measure.run_training(
                    peer, path, cfg.pathological_vocab, cfg.batch_threads, cfg.pathological_timeout_s
                )
                if "error" in outcome:
                    timing.error = outcome["error"]
                    break
                timing.seconds.append(outcome["seconds"])
                timing.extra["vocab_reached"] = outcome["vocab_size"]
            rows.append({"input": kind, "peer": peer, "timing": timing})
    return rows


def scaling_section(cfg: Config, encoders: Dict[str, peers.Encoder], have_us: bool) -> List[dict]:
    """One-thread encoding and training (all threads) at each corpus size; one run per point."""
    rows = []
    trainers = [p for p in peers.TRAINERS if p != "bpe_fast_texts" and (have_us or not p.startswith(US))]
    for size_mb in cfg.scaling_mb:
        path = corpus.corpus_file(size_mb)
        blocks = corpus.split_blocks(corpus.read_text(path))
        log(f"scaling encode {size_mb} MB")
        for name, timing in measure.time_interleaved(
            _encode_jobs(encoders, blocks, 1, "single"), 1, path.stat().st_size
        ).items():
            rows.append({"task": "encode", "size_mb": size_mb, "peer": name, "timing": timing})
        del blocks
        for peer in trainers:
            log(f"scaling train {peer} {size_mb} MB")
            outcome = measure.run_training(
                peer, path, cfg.scaling_vocab, cfg.batch_threads, cfg.train_timeout_s
            )
            timing = Timing(nbytes=path.stat().st_size)
            if "error" in outcome:
                timing.error = outcome["error"]
            else:
                timing.seconds.append(outcome["seconds"])
            rows.append({"task": "train", "size_mb": size_mb, "peer": peer, "timing": timing})
    return rows


# ---------------------------------------------------------------------------------------------- targets


def _find(rows: List[dict], **where) -> Optional[dict]:
    for row in rows:
        if all(row.get(key) == value for key, value in where.items()):
            return row
    return None


def _speedup(rows: List[dict], peer: str, **where) -> Optional[float]:
    """peer median time / bpe_fast median time for the matching rows (None when either is missing)."""
    ours = _find(rows, peer=US, **where)
    theirs = _find(rows, peer=peer, **where)
    if not ours or not theirs or not ours["timing"].ok or not theirs["timing"].ok:
        return None
    return theirs["timing"].median / ours["timing"].median


def evaluate_targets(results: dict, cfg: Config) -> List[dict]:
    """The issue's targets, each with the measured value and whether it is met (None: not measurable)."""
    targets = []

    def add(name: str, value: Optional[float], goal: float, higher_is_better: bool = True, unit: str = "x"):
        met = None if value is None else (value >= goal if higher_is_better else value <= goal)
        sign = ">=" if higher_is_better else "<="
        targets.append(
            {"target": name, "value": value, "goal": f"{sign} {goal:g}{unit}", "met": met, "unit": unit}
        )

    train = results.get("training", [])
    for vocab in cfg.train_vocabs:
        for threads in cfg.train_threads:
            where = {"vocab": vocab, "threads": threads}
            add(f"train {vocab}, {threads} thr: speed vs rustbpe", _speedup(train, "rustbpe", **where), 3)
            add(
                f"train {vocab}, {threads} thr: speed vs HF tokenizers",
                _speedup(train, "hf_tokenizers", **where),
                5,
            )
            ours, theirs = _find(train, peer=US, **where), _find(train, peer="rustbpe", **where)
            ratio = None
            if ours and theirs and ours["peak_rss_mb"] and theirs["peak_rss_mb"]:
                ratio = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
            add(f"train {vocab}, {threads} thr: peak RSS / rustbpe's", ratio, 1, higher_is_better=False)

    encode = results.get("encode_gpt2", [])
    for language in ("en", "zh"):
        add(
            f"encode GPT-2 {language}, 1 thr: speed vs tiktoken",
            _speedup(encode, "tiktoken", corpus=language, mode="single"),
            3,
        )
        ours_single = _find(encode, peer=US, corpus=language, mode="single")
        ours_batch = _find(encode, peer=US, corpus=language, mode="batch")
        scale = None
        if ours_single and ours_batch and ours_single["timing"].ok and ours_batch["timing"].ok:
            scale = ours_single["timing"].median / ours_batch["timing"].median
        add(f"encode GPT-2 {language}: batch {cfg.batch_threads} thr vs our 1 thr", scale, 1.8)

    short = results.get("short_gpt2", [])
    add("short strings (batch call): speed vs tiktoken batch", _speedup(short, "tiktoken", mode="batch"), 5)

    decode = results.get("decode_gpt2", [])
    for language in ("en", "zh"):
        add(f"decode GPT-2 {language}: speed vs tiktoken", _speedup(decode, "tiktoken", corpus=language), 1.5)

    patho = results.get("pathological_encode", [])
    normal = _find(patho, peer=US, input="normal_en")
    for kind in ("one_char", "spaces", "carets", "one_word"):
        row = _find(patho, peer=US, input=kind)
        slowdown = None
        if normal and row and normal["timing"].ok and row["timing"].ok:
            slowdown = normal["timing"].mb_per_s / row["timing"].mb_per_s
        add(f"encode pathological {kind}: slowdown vs normal text", slowdown, 3, higher_is_better=False)

    patho_train = results.get("pathological_train", [])
    normal = _find(patho_train, peer=US, input="normal_mixed")
    for kind in ("one_char", "spaces", "carets", "one_word"):
        row = _find(patho_train, peer=US, input=kind)
        slowdown = None
        if normal and row and normal["timing"].ok and row["timing"].ok:
            slowdown = normal["timing"].mb_per_s / row["timing"].mb_per_s
        add(f"train pathological {kind}: slowdown vs normal text", slowdown, 3, higher_is_better=False)

    scaling = results.get("scaling", [])
    for task in ("encode", "train"):
        small = _find(scaling, peer=US, task=task, size_mb=cfg.scaling_mb[0])
        large = _find(scaling, peer=US, task=task, size_mb=cfg.scaling_mb[-1])
        growth = None
        if small and large and small["timing"].ok and large["timing"].ok:
            # Seconds per MB at the largest size over seconds per MB at the smallest: 1 = perfectly linear.
            growth = small["timing"].mb_per_s / large["timing"].mb_per_s
        add(
            f"{task} time per MB, {cfg.scaling_mb[-1]:g} MB vs {cfg.scaling_mb[0]:g} MB (linear = 1)",
            growth,
            1.5,
            higher_is_better=False,
        )
    return targets


# ---------------------------------------------------------------------------------------------- rendering


def _fmt_s(timing: Timing) -> str:
    if not timing.ok:
        return "-"
    return f"{timing.median:.3f} ({timing.best:.3f})"


def _fmt_mbs(timing: Timing) -> str:
    return f"{timing.mb_per_s:.2f}" if timing.ok else "-"


def _fmt_ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _status(timing: Timing, ids: str = "identical") -> str:
    if timing.error:
        return f"error: {timing.error[:120]}"
    return "ok" if ids == "identical" else f"ids: {ids}"


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines + [""]


def machine_info() -> Dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
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
        "cores": str(os.cpu_count()),
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "git commit": commit or "unknown",
        "load average at start (1, 5, 15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        # Under `nice` on a busy machine every peer gets a smaller, varying CPU share: say so in the report.
        "niceness of the report process": str(os.nice(0)),
        "bpe_fast extension": _extension_stamp(),
    }


def _extension_stamp() -> str:
    """Which compiled bpe_fast._core was measured (path and build time): the tree may be mid-change."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("bpe_fast._core")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return "not found"
    built = datetime.datetime.fromtimestamp(Path(spec.origin).stat().st_mtime, datetime.timezone.utc)
    return f"{spec.origin} (built {built:%Y-%m-%d %H:%M} UTC)"


def render_markdown(
    results: dict, cfg: Config, command: str, info: Dict[str, str], targets: List[dict]
) -> str:
    out = ["# bpe_fast benchmark results", ""]
    out.append(f"Generated {results['generated_utc']} UTC by `{command}` ({results['mode']} mode).")
    out.append("")
    out += _table(["machine", ""], [[key, value] for key, value in info.items()])
    out += _table(["package", "version"], [[key, value] for key, value in results["versions"].items()])
    out.append(
        f"Runs per measurement: {cfg.runs}, per training configuration: {cfg.train_runs} (tables show the "
        "median, with the min in parentheses). "
        f"Training corpus: {cfg.train_mb:g} MB of mixed docs and code (corpora/en/*.txt + zh/*.txt, repeated/"
        f"trimmed at a line end). Encoding corpora: {cfg.encode_mb:g} MB each. MB = 10^6 bytes of UTF-8 input. "
        "\"x faster\" = the peer's median time / bpe_fast's median time on the same work. "
        '"cores used" = process CPU time / wall time of the call (1.00 = one core busy throughout; it '
        'shows what a "1 thread" or "2 threads" label really got). Methodology: docs/BENCHMARKS.md.'
    )
    out.append("")
    single_thread_cores = [
        row["timing"].cores_used
        for key in ("encode_gpt2", "encode_trained", "short_gpt2", "short_trained")
        for row in results.get(key, [])
        if row.get("threads") == 1 and row["timing"].cpu_seconds
    ]
    if single_thread_cores and statistics.median(single_thread_cores) < 0.8:
        out += [
            f"**The machine was busy during this run: single-thread calls got a median of "
            f"{statistics.median(single_thread_cores):.2f} of a core** (1.00 on an idle machine). Absolute speeds "
            "are lower than an idle machine gives, every peer alike; multi-thread rows cannot show their scaling. "
            "Ratios between peers timed in the same interleaved rounds are the meaningful numbers.",
            "",
        ]
    if not results["bpe_fast_available"]:
        out += ["**bpe_fast was not importable in this run: only peers were measured; targets are n/a.**", ""]

    out += ["## Targets", ""]
    rows = []
    for target in targets:
        value = "-" if target["value"] is None else f"{target['value']:.2f}{target['unit']}"
        met = {True: "yes", False: "**NO**", None: "n/a"}[target["met"]]
        rows.append([target["target"], value, target["goal"], met])
    out += _table(["target", "measured", "goal", "met"], rows)

    out += ["## Training", ""]
    out.append(
        "Wall time of the train call in a fresh subprocess (file reading included, interpreter start-up and "
        "imports excluded); peak RSS = the worker's VmHWM over all runs (the whole process: interpreter, the "
        "peer's imports - numpy for bpe_fast - and training); RSS before = after imports, before training; "
        'growth = the difference. "merges vs rustbpe" compares the learned tokens (equal work check).'
    )
    out.append("")
    rows = []
    for row in results.get("training", []):
        speed = _speedup(results["training"], row["peer"], vocab=row["vocab"], threads=row["threads"])
        rows.append(
            [
                str(row["vocab"]),
                str(row["threads"]),
                row["peer"],
                _fmt_s(row["timing"]),
                _fmt_mbs(row["timing"]),
                "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}",
                "-" if row["baseline_rss_mb"] is None else f"{row['baseline_rss_mb']:.0f}",
                "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb'] - row['baseline_rss_mb']:.0f}",
                str(row["vocab_reached"]),
                "-" if not row.get("cores_used") else f"{row['cores_used']:.2f}",
                row["vs_rustbpe"],
                _fmt_ratio(speed) if row["peer"] != US else "1.00x",
                _status(row["timing"]),
            ]
        )
    out += _table(
        [
            "vocab",
            "threads",
            "trainer",
            "seconds",
            "MB/s",
            "peak RSS MB",
            "RSS before MB",
            "growth MB",
            "vocab reached",
            "cores used (max)",
            "merges vs rustbpe",
            "bpe_fast x faster",
            "status",
        ],
        rows,
    )

    def encode_table(key: str, title: str, note: str, group: Tuple[str, ...]) -> None:
        nonlocal out
        section = results.get(key, [])
        if not section:
            return
        out += [f"## {title}", "", note, ""]
        rows = []
        for row in section:
            where = {name: row[name] for name in group}
            speed = _speedup(section, row["peer"], **where)
            rows.append(
                [str(row[name]) for name in group]
                + [
                    row["peer"],
                    _fmt_s(row["timing"]),
                    _fmt_mbs(row["timing"]),
                    _fmt_ratio(speed) if row["peer"] != US else "1.00x",
                    f"{row['timing'].cores_used:.2f}" if row["timing"].cpu_seconds else "-",
                    _status(row["timing"], row.get("ids", "identical")),
                ]
            )
        out += _table(
            list(group) + ["peer", "seconds", "MB/s", "bpe_fast x faster", "cores used", "status"], rows
        )

    encode_table(
        "encode_gpt2",
        "Encoding, GPT-2 vocab",
        "single = a loop of one-document encode calls (~64 KB documents) on 1 thread; batch = one "
        f"encode_batch call over the same documents with {cfg.batch_threads} threads (HF: encode_batch_fast; "
        "tiktoken: encode_ordinary_batch). The ids of every timed call are compared with tiktoken's (status).",
        ("corpus", "mode", "threads"),
    )
    encode_table(
        "encode_trained",
        "Encoding, 32k vocab trained by rustbpe",
        "The same vocab loaded into every peer (rustbpe trained it on the training corpus; the others load its "
        "ranks), so rustbpe can take part. Mixed corpus.",
        ("corpus", "mode", "threads"),
    )
    encode_table(
        "short_gpt2",
        "Short strings, GPT-2 vocab",
        f"{cfg.short_lines} corpus lines of 30-80 bytes; batch = one encode_batch call with "
        f"{cfg.batch_threads} threads, single = a loop of encode calls.",
        ("mode", "threads"),
    )
    encode_table(
        "short_trained",
        "Short strings, 32k vocab trained by rustbpe",
        "As above, with every peer (rustbpe included) on the rustbpe-trained vocab.",
        ("mode", "threads"),
    )
    encode_table(
        "decode_gpt2",
        "Decoding, GPT-2 vocab",
        "One decode call over a whole corpus's ids; MB/s of decoded bytes. tiktoken and bpe_fast return bytes; "
        "HF and rustbpe return str (encoded back to UTF-8 for the exactness check; that costs them a little).",
        ("corpus",),
    )
    encode_table(
        "decode_trained",
        "Decoding, 32k vocab trained by rustbpe",
        "As above on the rustbpe-trained vocab.",
        ("corpus",),
    )
    encode_table(
        "pathological_encode",
        "Pathological inputs: encoding (GPT-2 vocab, one encode call, 1 thread)",
        f"{cfg.pathological_mb:g} MB each: one character repeated, spaces, `^`, one random-letter word; "
        "each is a single pre-tokenizer chunk. normal_en is English text of the same size.",
        ("input",),
    )
    encode_table(
        "pathological_train",
        "Pathological inputs: training",
        f"{cfg.pathological_mb:g} MB each, vocab {cfg.pathological_vocab}, {cfg.batch_threads} threads "
        "(training stops early when no pair is left, as the algorithm says); each run capped at "
        f"{cfg.pathological_timeout_s:g} s.",
        ("input",),
    )
    encode_table(
        "scaling",
        "Time vs corpus size",
        f"Mixed corpus; encode = GPT-2 vocab, 1 thread; train = vocab {cfg.scaling_vocab}, "
        f"{cfg.batch_threads} threads; one run per point. Plot: benches/throughput_vs_size.png.",
        ("task", "size_mb"),
    )
    return "\n".join(out)


def plot_scaling(rows: List[dict], path: Path) -> Optional[Path]:
    """Throughput vs input size, one line per peer, encode and train side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        log("matplotlib missing: no plot")
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    # One colour per peer across both panels.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = dict.fromkeys((US, *peers.ENCODERS, *peers.TRAINERS))
    colours = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    plain = FuncFormatter(lambda value, _pos: f"{value:g}")
    for axis, task, title in (
        (axes[0], "encode", "encoding (GPT-2 vocab, 1 thread)"),
        (axes[1], "train", "training"),
    ):
        names = sorted({row["peer"] for row in rows if row["task"] == task})
        for name in names:
            points = [
                (row["size_mb"], row["timing"].mb_per_s)
                for row in rows
                if row["task"] == task and row["peer"] == name and row["timing"].ok
            ]
            if points:
                sizes, speeds = zip(*sorted(points))
                axis.plot(
                    sizes,
                    speeds,
                    marker="o",
                    label=name,
                    color=colours.get(name),
                    linewidth=2.5 if name == US else 1.2,
                )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(sorted({row["size_mb"] for row in rows}))
        axis.xaxis.set_major_formatter(plain)
        axis.yaxis.set_major_formatter(plain)
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("input size (MB)")
        axis.set_ylabel("throughput (MB/s)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)
    return path


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, Timing):
        return value.as_dict()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------- main

SECTIONS = ("train", "encode", "trained", "short", "decode", "pathological", "scaling")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benches/report.py",
        description="Benchmark bpe_fast against tiktoken, HF tokenizers, rustbpe and bpeasy; write RESULTS.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small inputs and 1 run per measurement (a few minutes on 2 cores)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="markdown report to write")
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="throughput-vs-size PNG to write (default: throughput_vs_size.png beside --out)",
    )
    parser.add_argument("--runs", type=int, help="override the runs per measurement (full: 3, quick: 1)")
    parser.add_argument(
        "--train-runs", type=int, help="override the runs per training configuration (default: --runs)"
    )
    parser.add_argument("--train-mb", type=float, help="training corpus size in MB (full: 50, quick: 4)")
    parser.add_argument("--encode-mb", type=float, help="encoding corpora size in MB (full: 7.5, quick: 1)")
    parser.add_argument(
        "--scaling-mb",
        type=float,
        nargs="+",
        help="corpus sizes in MB for the time-vs-size section (full: 1 2 4 8 16 32, quick: 1 2 4)",
    )
    parser.add_argument(
        "--pathological-mb", type=float, help="size of each pathological input in MB (full: 1, quick: 0.25)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        help="run only these sections (default: all); targets of skipped sections show n/a",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.runs is not None:
        if args.runs < 1:
            raise SystemExit("--runs must be at least 1")
        cfg = replace(cfg, runs=args.runs, train_runs=args.runs)
    if args.train_runs is not None:
        if args.train_runs < 1:
            raise SystemExit("--train-runs must be at least 1")
        cfg = replace(cfg, train_runs=args.train_runs)
    for flag, field_name in (
        ("train_mb", "train_mb"),
        ("encode_mb", "encode_mb"),
        ("pathological_mb", "pathological_mb"),
    ):
        value = getattr(args, flag)
        if value is not None:
            if value <= 0:
                raise SystemExit(f"--{flag.replace('_', '-')} must be positive")
            cfg = replace(cfg, **{field_name: value})
    if args.scaling_mb:
        if min(args.scaling_mb) <= 0:
            raise SystemExit("--scaling-mb sizes must be positive")
        cfg = replace(cfg, scaling_mb=tuple(sorted(args.scaling_mb)))
    if corpus.data_dir() is None:
        print("benchmark corpora not found (set BPE_FAST_BENCH_DATA); nothing measured", file=sys.stderr)
        return 2
    # Size the rayon pools of the in-process peers (HF, rustbpe) before anything imports them.
    os.environ.update(peers.thread_env(cfg.batch_threads))
    sections = set(args.only or SECTIONS)
    command = "python benches/report.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    info = machine_info()
    have_us = peers.bpe_fast_available()
    log(f"bpe_fast available: {have_us}; mode {'quick' if args.quick else 'full'}; config {cfg}")
    results: dict = {
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "mode": "quick" if args.quick else "full",
        "config": asdict(cfg),
        "versions": peers.versions(),
        "bpe_fast_available": have_us,
    }

    gpt2 = peers.gpt2_encoders(include_us=have_us)
    if "train" in sections:
        results["training"] = training_section(cfg, have_us)
    if sections & {"encode", "short", "decode", "pathological", "scaling"}:
        if "encode" in sections:
            results["encode_gpt2"] = encoding_section(cfg, gpt2, "gpt2", ("en", "zh"))
        if "short" in sections:
            results["short_gpt2"] = short_strings_section(cfg, gpt2, "gpt2")
        if "decode" in sections:
            results["decode_gpt2"] = decoding_section(cfg, gpt2, "gpt2", ("en", "zh"))
    if "trained" in sections:
        log("training the shared 32k vocab with rustbpe")
        rust_tok, tokens = peers.train_rustbpe_vocab(corpus.corpus_file(cfg.train_mb), 32768)
        trained = peers.ranks_encoders(
            tokens, corpus.cache_dir() / "rustbpe_32768_shared.tiktoken", rust_tok, include_us=have_us
        )
        results["encode_trained"] = encoding_section(cfg, trained, "rustbpe32k", ("mixed",))
        results["short_trained"] = short_strings_section(cfg, trained, "rustbpe32k")
        results["decode_trained"] = decoding_section(cfg, trained, "rustbpe32k", ("mixed",))
        del trained, rust_tok
    if "pathological" in sections:
        results["pathological_encode"] = pathological_encoding_section(cfg, gpt2)
        results["pathological_train"] = pathological_training_section(cfg, have_us)
    if "scaling" in sections:
        results["scaling"] = scaling_section(cfg, gpt2, have_us)

    targets = evaluate_targets(results, cfg)
    info["load average at end (1, 5, 15 min)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["report wall time"] = f"{(time.perf_counter() - started) / 60:.1f} min"
    if _extension_stamp() != info["bpe_fast extension"]:
        # Training workers load the extension afresh: a rebuild mid-run mixes two builds in one table.
        info["bpe_fast extension"] += (
            f"; REBUILT DURING THE RUN, now {_extension_stamp()}: results mix builds"
        )
    out_path = args.out.resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out_path, render_markdown(results, cfg, command, info, targets) + "\n")
    _atomic_write_text(
        out_path.with_suffix(".json"),
        json.dumps(_jsonable({**results, "command": command, "targets": targets, "machine": info}), indent=1),
    )
    if results.get("scaling"):
        plot_scaling(results["scaling"], args.plot or out_path.with_name("throughput_vs_size.png"))
    log(f"wrote {out_path}")
    for target in targets:
        value = "-" if target["value"] is None else f"{target['value']:.2f}"
        print(f"{target['target']:<62} {value:>8} {target['goal']:>8}  {target['met']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
