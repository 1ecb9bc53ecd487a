"""Timing primitives shared by benches/report.py and the pytest-benchmark suites.

In-process timings run with the garbage collector paused (as timeit does) so a collection triggered by one
peer's allocations is not billed to the next. Training runs in a fresh subprocess per measurement
(benches/train_worker.py) with the thread count pinned through the environment.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from benches import peers

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Timing:
    """Repeated wall-clock timings of one piece of work of ``nbytes`` input bytes."""

    seconds: List[float] = field(default_factory=list)
    nbytes: int = 0
    # Process CPU seconds (all threads) of each run: cpu/wall shows how many cores a call really used,
    # which keeps "1 thread" labels honest.
    cpu_seconds: List[float] = field(default_factory=list)
    # What the first run returned, when asked for (time_interleaved keep_output): lets the caller check the
    # exact output that was timed. Not serialised.
    output: object = None
    error: Optional[str] = None
    extra: Dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cores_used(self) -> float:
        """Median CPU time over median wall time (1.0 = one core busy throughout); 0 when unmeasured."""
        if not self.cpu_seconds or not self.ok:
            return 0.0
        return statistics.median(self.cpu_seconds) / self.median

    @property
    def mb_per_s(self) -> float:
        """Throughput at the median time, in MB (10^6 bytes) per second."""
        return self.nbytes / self.median / 1e6

    def as_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "nbytes": self.nbytes,
            "cpu_seconds": self.cpu_seconds,
            "error": self.error,
            "extra": self.extra,
        }


def time_call(function: Callable[[], object]) -> Tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call of ``function``, garbage collector paused."""
    gc.collect()
    gc.disable()
    try:
        start_cpu = time.process_time()
        start = time.perf_counter()
        result = function()
        wall = time.perf_counter() - start
        return wall, time.process_time() - start_cpu, result
    finally:
        gc.enable()


def time_interleaved(
    jobs: Dict[str, Callable[[], object]], runs: int, nbytes: int, keep_output: bool = False
) -> Dict[str, Timing]:
    """Times every job ``runs`` times, round-robin (run 1 of every job, then run 2, ...).

    Interleaving spreads slow drifts of a shared machine (other processes, thermal state) over all peers
    instead of penalising whichever ran last. A job that raises is recorded with its error, not retried.
    ``keep_output`` keeps each job's first result in ``Timing.output``.
    """
    results = {name: Timing(nbytes=nbytes) for name in jobs}
    for _ in range(runs):
        for name, job in jobs.items():
            timing = results[name]
            if timing.error is not None:
                continue
            try:
                wall, cpu, result = time_call(job)
                timing.seconds.append(wall)
                timing.cpu_seconds.append(cpu)
                if keep_output and timing.output is None:
                    timing.output = result
                del result
            except Exception as exc:  # a failing peer is reported in the table
                timing.error = f"{type(exc).__name__}: {exc}"
    return results


def run_training(
    peer: str,
    corpus_path: Path,
    vocab_size: int,
    threads: int,
    timeout_s: float,
    save_ranks: Optional[Path] = None,
) -> dict:
    """One training measurement in a fresh ``python -m benches.train_worker`` subprocess.

    Returns the worker's JSON (seconds, peak_rss_mb, ...) or ``{"error": ...}`` on failure or timeout.
    """
    env = dict(os.environ)
    env.update(peers.thread_env(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    command = [
        sys.executable,
        "-m",
        "benches.train_worker",
        "--peer",
        peer,
        "--corpus",
        str(corpus_path),
        "--vocab",
        str(vocab_size),
        "--threads",
        str(threads),
    ]
    if save_ranks is not None:
        command += ["--save-ranks", str(save_ranks)]
    try:
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if done.returncode != 0:
        last_lines = " | ".join(done.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {done.returncode}: {last_lines}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unreadable worker output: {done.stdout[-200:]!r}"}
