"""Measuring encoders: runs benches/encode_worker.py for every peer x vocabulary x thread setting.

Groups (each one fresh process per peer and vocabulary):

* ``single``: pinned to one CPU with every thread variable at 1; single-call encode of each text kind,
  then decode of tiktoken's ids of the same slices; the construction time of the tokenizer (loading);
* ``batch``: all CPUs, thread variables at the CPU count; the ~4 KB documents and the ~100 B strings;
* ``pathological`` (GPT-2 only): pinned to one CPU; one call per one-chunk input;
* ``threads`` (bpe_fast only): all CPUs; one encode call on a >= 1 MB slice with 1 and with 2 threads.

tiktoken runs first in each group: its ids of every slice are the reference the others are checked
against. The other peers' order rotates from one vocabulary to the next so that none always runs last.
Rows are plain dicts (JSON-able) consumed by benches/targets.py and benches/render.py.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from benches import corpus, peers, texts, vocabs

REPO_ROOT = Path(__file__).resolve().parent.parent
PATHOLOGICAL_KINDS = ("normal_en", "one_char", "spaces", "carets", "one_word")


@dataclass(frozen=True)
class EncodeConfig:
    runs: int
    slice_bytes: int
    batch_bytes: int
    pathological_bytes: int
    all_threads: int
    worker_timeout_s: float
    encoders: Sequence[str] = peers.ENCODERS
    vocabs: Sequence[str] = vocabs.VOCABS
    # Which vocab the 1-vs-2-thread encode call is measured on.
    threads_vocab: str = "gpt2"


def log(message: str) -> None:
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pin_cpu() -> Optional[int]:
    """The CPU single-core workers are pinned to: the last one this process may use."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return max(os.sched_getaffinity(0))


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(peers.thread_env(threads))
    # numpy (used by the worker to save and compare ids) must not start a BLAS pool on the pinned core.
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_worker(job: dict, threads: int, timeout_s: float, runner: Optional[Callable] = None) -> dict:
    """Runs one encode worker; its JSON, or ``{"failed": reason}`` when it crashed or timed out."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as handle:
        json.dump(job, handle)
        job_file = handle.name
    command = [sys.executable, "-m", "benches.encode_worker", job_file]
    try:
        if runner is not None:
            return runner(command, worker_env(threads), timeout_s)
        try:
            done = subprocess.run(
                command,
                cwd=REPO_ROOT,
                env=worker_env(threads),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"failed": f"timed out after {timeout_s:.0f} s"}
        if done.returncode != 0:
            last = " | ".join(done.stderr.strip().splitlines()[-2:])
            return {"failed": f"worker exit {done.returncode}: {last[:300]}"}
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"failed": f"unreadable worker output: {done.stdout[-200:]!r}"}
    finally:
        Path(job_file).unlink(missing_ok=True)


def summarize(slices: List[dict]) -> dict:
    """One cell from its slices: status, median MB/s over the timed slices, cores used."""
    errors = [s["status"] for s in slices if s["status"].startswith("error")]
    wrong = [s["status"] for s in slices if s["status"].startswith("wrong")]
    unchecked = [s["status"] for s in slices if s["status"].startswith("unchecked")]
    timed = [s for s in slices if "seconds" in s]
    cell = {
        "seconds": [s["seconds"] for s in timed],
        "bytes": [s["bytes"] for s in timed],
        "mb_per_s": None,
        "cores_used": None,
    }
    if errors:
        cell["status"] = "failed: " + errors[0][len("error: ") :]
    elif wrong:
        cell["status"] = wrong[0]
    elif unchecked:
        cell["status"] = unchecked[0]
    elif not timed:
        cell["status"] = "failed: nothing timed"
    else:
        cell["status"] = "ok"
    if timed and not errors:
        cell["mb_per_s"] = statistics.median(s["bytes"] / s["seconds"] / 1e6 for s in timed)
        wall = sum(s["seconds"] for s in timed)
        cell["cores_used"] = sum(s["cpu_seconds"] for s in timed) / wall if wall > 0 else None
    return cell


def _rows_from_worker(
    outcome: dict, peer: str, vocab: str, threads: int, sections: Sequence[dict]
) -> List[dict]:
    rows = []
    if "unavailable" in outcome or "failed" in outcome:
        status = (
            "not available: " + outcome["unavailable"]
            if "unavailable" in outcome
            else "failed: " + outcome["failed"]
        )
        for task in sections:
            rows.append(
                {
                    "vocab": vocab,
                    "section": task["section"],
                    "kind": task["kind"],
                    "peer": peer,
                    "threads": threads,
                    "status": status,
                    "mb_per_s": None,
                    "seconds": [],
                    "bytes": [],
                    "cores_used": None,
                }
            )
        return rows
    for task in outcome["tasks"]:
        if "error" in task:
            cell = {"status": task["error"], "mb_per_s": None, "seconds": [], "bytes": [], "cores_used": None}
        elif task["section"] == "threads":
            cell = {"status": "ok", "by_threads": {}}
            for count in sorted({s.get("threads") for s in task["slices"]}):
                sub = summarize([s for s in task["slices"] if s.get("threads") == count])
                cell["by_threads"][str(count)] = sub
                if sub["status"] != "ok" and cell["status"] == "ok":
                    cell["status"] = sub["status"]
        else:
            cell = summarize(task["slices"])
        rows.append(
            {
                "vocab": vocab,
                "section": task["section"],
                "kind": task["kind"],
                "peer": peer,
                "threads": threads,
                **cell,
            }
        )
    return rows


def _rotated(names: Sequence[str], shift: int) -> List[str]:
    """tiktoken first (the reference), the others rotated by ``shift``."""
    others = [name for name in names if name != peers.REFERENCE]
    shift = shift % len(others) if others else 0
    return ([peers.REFERENCE] if peers.REFERENCE in names else []) + others[shift:] + others[:shift]


def pathological_files(size: int) -> Dict[str, Path]:
    """One file per one-chunk input, plus English text of the same size (normal_en)."""
    folder = corpus.cache_dir() / "slices"
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    inputs = corpus.pathological_texts(size)
    inputs["normal_en"] = corpus.read_text(corpus.corpus_file(size / corpus.MB, "en"))
    for kind in PATHOLOGICAL_KINDS:
        path = folder / f"pathological_{kind}_{size}.txt"
        if not path.exists():
            corpus._atomic_write_bytes(path, inputs[kind].encode("utf-8"))
        found[kind] = path
    return found


def measure(cfg: EncodeConfig, specs: Dict[str, object], slices: Dict[str, object], runner=None) -> dict:
    """Every encode measurement; {"rows": [...], "load": [...], "unavailable_texts": {...}, "pin_cpu": n}."""
    ref_dir = Path(tempfile.mkdtemp(prefix="bpe_fast_bench_ref_"))
    cpu = pin_cpu()
    rows: List[dict] = []
    loads: List[dict] = []
    single_tasks = []
    decode_tasks = []
    batch_tasks = []
    for kind in texts.SINGLE_KINDS:
        found = slices.get(kind)
        if isinstance(found, texts.SliceSet):
            single_tasks.append(
                {
                    "section": "single",
                    "kind": kind,
                    "warmup": str(found.warmup),
                    "slices": [str(p) for p in found.timed],
                }
            )
            decode_tasks.append(
                {
                    "section": "decode",
                    "kind": kind,
                    "warmup": str(found.warmup),
                    "slices": [str(p) for p in found.timed],
                }
            )
    for kind in texts.BATCH_KINDS:
        found = slices.get(kind)
        if isinstance(found, texts.SliceSet):
            batch_tasks.append(
                {
                    "section": "batch",
                    "kind": kind,
                    "warmup": str(found.warmup),
                    "slices": [str(p) for p in found.timed],
                }
            )
    threads_set = slices.get("threads")
    for shift, vocab in enumerate(cfg.vocabs):
        spec = specs.get(vocab)
        if not isinstance(spec, vocabs.VocabSpec):
            reason = spec or "not configured"
            for peer in cfg.encoders:
                for task in single_tasks + decode_tasks + batch_tasks:
                    rows.append(
                        {
                            "vocab": vocab,
                            "section": task["section"],
                            "kind": task["kind"],
                            "peer": peer,
                            "threads": 1,
                            "status": f"not available: vocab: {reason}",
                            "mb_per_s": None,
                            "seconds": [],
                            "bytes": [],
                            "cores_used": None,
                        }
                    )
            continue
        order = _rotated(cfg.encoders, shift)
        extra_single = []
        if vocab == cfg.threads_vocab and isinstance(threads_set, texts.SliceSet):
            # tiktoken's ids of the 1-vs-2-thread slices (its timings there are not shown).
            extra_single.append(
                {
                    "section": "single",
                    "kind": "threads_ref",
                    "warmup": str(threads_set.warmup),
                    "slices": [str(p) for p in threads_set.timed],
                }
            )
        for group, tasks, threads in (
            ("single", single_tasks + decode_tasks, 1),
            ("batch", batch_tasks, cfg.all_threads),
        ):
            if not tasks:
                continue
            for peer in order:
                own = tasks + (extra_single if group == "single" and peer == peers.REFERENCE else [])
                log(f"encode {vocab} {group} {peer}")
                job = {
                    "peer": peer,
                    "vocab": spec.as_dict(),
                    "threads": threads,
                    "pin_cpu": cpu if group == "single" else None,
                    "ref_dir": str(ref_dir),
                    "is_reference": peer == peers.REFERENCE,
                    "tasks": own,
                }
                outcome = run_worker(job, threads, cfg.worker_timeout_s, runner)
                rows += [
                    r
                    for r in _rows_from_worker(outcome, peer, vocab, threads, own)
                    if r["kind"] != "threads_ref"
                ]
                if group == "single":
                    loads.append(_load_row(outcome, peer, vocab))
        if vocab == "gpt2" and cfg.pathological_bytes:
            files = pathological_files(cfg.pathological_bytes)
            tasks = [
                {"section": "pathological", "kind": kind, "warmup": None, "slices": [str(files[kind])]}
                for kind in PATHOLOGICAL_KINDS
            ]
            for peer in order:
                log(f"encode {vocab} pathological {peer}")
                job = {
                    "peer": peer,
                    "vocab": spec.as_dict(),
                    "threads": 1,
                    "pin_cpu": cpu,
                    "ref_dir": str(ref_dir),
                    "is_reference": peer == peers.REFERENCE,
                    "tasks": tasks,
                }
                rows += _rows_from_worker(
                    run_worker(job, 1, cfg.worker_timeout_s, runner), peer, vocab, 1, tasks
                )
        if (
            vocab == cfg.threads_vocab
            and peers.US in cfg.encoders
            and isinstance(threads_set, texts.SliceSet)
        ):
            task = {
                "section": "threads",
                "kind": "prose",
                "warmup": str(threads_set.warmup),
                "threads": [1, 2],
                "slices": [str(p) for p in threads_set.timed],
            }
            log(f"encode {vocab} threads {peers.US}")
            job = {
                "peer": peers.US,
                "vocab": spec.as_dict(),
                "threads": 2,
                "pin_cpu": None,
                "ref_dir": str(ref_dir),
                "is_reference": False,
                "tasks": [task],
            }
            rows += _rows_from_worker(
                run_worker(job, 2, cfg.worker_timeout_s, runner), peers.US, vocab, 2, [task]
            )
    _remove_tree(ref_dir)
    return {
        "rows": rows,
        "load": loads,
        "pin_cpu": cpu,
        "all_threads": cfg.all_threads,
        "unavailable_texts": {k: v for k, v in slices.items() if isinstance(v, str)},
    }


def _load_row(outcome: dict, peer: str, vocab: str) -> dict:
    if "unavailable" in outcome:
        return {
            "vocab": vocab,
            "peer": peer,
            "seconds": None,
            "status": "not available: " + outcome["unavailable"],
        }
    if "failed" in outcome:
        return {"vocab": vocab, "peer": peer, "seconds": None, "status": "failed: " + outcome["failed"]}
    if peer == "rustbpe":
        return {
            "vocab": vocab,
            "peer": peer,
            "seconds": None,
            "status": "not comparable: trains its vocab instead",
        }
    first = outcome.get("first_call_seconds")
    return {
        "vocab": vocab,
        "peer": peer,
        "construction_seconds": outcome.get("load_seconds"),
        "first_call_seconds": first,
        # What the target compares: ready to encode, i.e. construction plus the first (short) call.
        "seconds": outcome["load_seconds"] + (first or 0.0)
        if outcome.get("load_seconds") is not None
        else None,
        "status": "ok",
    }


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def prepare_slices(cfg: EncodeConfig) -> Dict[str, object]:
    """All text slices (cached files), plus the 1-vs-2-thread prose slices."""
    found = texts.all_slices(cfg.runs, cfg.slice_bytes, cfg.batch_bytes)
    try:
        # Twice the runs: one thread count per slice, each slice unseen (slices differ from the others').
        prose = texts.cut_slices(texts._sources("prose"), 2 * cfg.runs + 1, max(cfg.slice_bytes, 1_000_000))
        folder = corpus.cache_dir() / "slices"
        paths = [folder / f"threads_prose_{cfg.runs}_{i}.txt" for i in range(len(prose))]
        for path, data in zip(paths, prose):
            if not path.exists():
                corpus._atomic_write_bytes(path, data)
        found["threads"] = texts.SliceSet("threads", paths[0], tuple(paths[1:]))
    except (texts.TextUnavailable, ValueError) as exc:
        found["threads"] = str(exc)
    return found
