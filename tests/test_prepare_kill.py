"""gpt.prepare killed with SIGKILL at random points: what is left is complete, the next run cleans up after
the killed one and finishes with exactly the shards of an uninterrupted run.

The jobs run in children of a forkserver that preloaded gpt.prepare, so a trial costs a fork, not an
interpreter start.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import time
from pathlib import Path

import pytest

import bpe_fast
from bpe_fast.files import TEMP_SUFFIX
from conftest import CORPORA
from gpt.shards import read_header
from gpt.tokenizer import EOT_TEXT

TRIALS = 32


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A small job: ~40 documents, a 300-token vocab (loads in milliseconds), many tiny shards."""
    folder = tmp_path_factory.mktemp("kill")
    text = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:12_000]
    corpus = folder / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    vocab = folder / "vocab.json"
    bpe_fast.train([text], 300, special_tokens=[EOT_TEXT]).save(vocab)
    argv = ["--files", str(corpus), "--doc-sep", "\\n\\n", "--tokenizer", str(vocab), "--shard-size", "320",
            "--val-fraction", "0.2", "--batch-bytes", "600", "--threads", "1", "--no-progress", "-q"]  # fmt: skip
    return folder, argv


def _main(argv):
    from gpt.prepare import main

    raise SystemExit(main(argv))


def _start(context, argv):
    process = context.Process(target=_main, args=(argv,))
    process.start()
    return process


def _finish(context, argv) -> float:
    started = time.perf_counter()
    process = _start(context, argv)
    process.join(120)
    assert process.exitcode == 0, f"gpt.prepare {argv} exited with {process.exitcode}"
    return time.perf_counter() - started


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.mark.slow  # ~20-60 s: every shard and progress update is fsynced, 32 times over
def test_kill_9_at_random_points_leaves_complete_files_and_the_rerun_is_exact(job):
    folder, argv = job
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["gpt.prepare", "numpy"])
    reference = folder / "reference"
    _finish(context, [*argv, "--out", str(folder / "warm-up")])  # starts the forkserver
    duration = _finish(context, [*argv, "--out", str(reference)])
    expected = _files(reference)
    assert sum(name.endswith(".bin") for name in expected) >= 20, "the job must write many shards"
    rng = random.Random(1234)
    killed_mid_run = 0
    for trial in range(TRIALS):
        out = folder / f"trial{trial:02d}"
        run = [*argv, "--out", str(out)]
        process = _start(context, run)
        time.sleep(rng.uniform(0, duration))
        process.kill()  # SIGKILL
        process.join(30)
        if process.exitcode == -signal.SIGKILL:
            killed_mid_run += 1
        left = _files(out) if out.exists() else {}
        for name, data in left.items():
            if name.endswith(TEMP_SUFFIX):
                continue  # a write the kill interrupted: the rerun must remove it
            if name.endswith(".bin"):
                read_header(out / name)  # magic, version, size: a complete shard
                assert data == expected[name], f"trial {trial}: {name} differs from an uninterrupted run"
            elif name == "manifest.json":
                assert data == expected[name], f"trial {trial}: a manifest before the job finished"
            else:
                json.loads(data)  # progress.json / the marker: complete JSON
        _finish(context, run)
        after = _files(out)
        assert not [name for name in after if TEMP_SUFFIX in name], f"trial {trial}: temp files left"
        assert after == expected, f"trial {trial}: the rerun differs from an uninterrupted run"
    assert killed_mid_run >= TRIALS // 2, "most kills must land while the job runs"
