"""Checks of the harness's judging and writing sides (benches/targets.py, render.py, report.py) on
synthetic rows: a wrong or missing peer is never the fastest, a missing measurement is never a pass,
the README table says "fastest" only where the target holds, and user errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benches import render, targets

REPO_ROOT = Path(__file__).resolve().parent.parent


def _row(peer, mb_per_s, status="ok", section="single", vocab="gpt2", kind="prose"):
    return {
        "vocab": vocab,
        "section": section,
        "kind": kind,
        "peer": peer,
        "threads": 1,
        "status": status,
        "mb_per_s": mb_per_s if status == "ok" else None,
        "seconds": [1.0],
        "bytes": [1],
        "cores_used": 1.0,
    }


def _results(*rows, load=(), train=()):
    return {
        "encode": {"rows": list(rows), "load": list(load), "all_threads": 2},
        "train": {"rows": list(train)},
        "versions": {},
        "generated_utc": "2026-01-01 00:00",
        "mode": "quick",
    }


def test_a_faster_peer_with_wrong_ids_is_never_the_fastest():
    results = _results(
        _row("bpe_fast", 50),
        _row("tiktoken", 10),
        _row("fastokens", 0, status="wrong ids: differ at token 3"),
        _row("tokie", 0, status="not available: not installed"),
        _row("bpe_openai", 0, status="failed: ValueError"),
    )
    (cell,) = [t for t in targets.evaluate(results) if t["group"] == "single"]
    assert cell["value"] == pytest.approx(5.0) and cell["met"] is True and cell["best"] == "tiktoken"


def test_a_faster_exact_peer_makes_a_miss():
    results = _results(_row("bpe_fast", 50), _row("fastokens", 135))
    (cell,) = [t for t in targets.evaluate(results) if t["group"] == "single"]
    assert cell["value"] == pytest.approx(50 / 135) and cell["met"] is False
    assert "fastokens 135.0 MB/s" in cell["detail"]


def test_wrong_bpe_fast_is_a_miss_and_missing_measurements_are_na():
    wrong_us = _results(_row("bpe_fast", 0, status="wrong ids: x"), _row("tiktoken", 10))
    assert [t["met"] for t in targets.evaluate(wrong_us) if t["group"] == "single"] == [False]
    alone = _results(_row("bpe_fast", 50), _row("tiktoken", 0, status="failed: boom"))
    assert [t["met"] for t in targets.evaluate(alone) if t["group"] == "single"] == [None]
    assert targets.evaluate({}) == []


def test_training_load_and_threads_targets():
    train = [
        {"vocab": 8192, "threads": 1, "peer": "bpe_fast", "status": "ok", "median_s": 1.0},
        {"vocab": 8192, "threads": 1, "peer": "gigabpe", "status": "wrong merges: ...", "median_s": 0.1},
        {"vocab": 8192, "threads": 1, "peer": "ffbpe", "status": "ok", "median_s": 2.5},
        {"vocab": 8192, "threads": 1, "peer": "bpe_fast_texts", "status": "ok", "median_s": 0.5},
    ]
    load = [
        {"vocab": "o200k", "peer": "bpe_fast", "seconds": 0.2, "status": "ok"},
        {"vocab": "o200k", "peer": "fastokens", "seconds": 0.1, "status": "ok"},
        {"vocab": "o200k", "peer": "kitoken", "seconds": 0.01, "status": "ok"},
    ]
    threads = {
        "vocab": "gpt2",
        "section": "threads",
        "kind": "prose",
        "peer": "bpe_fast",
        "threads": 2,
        "status": "ok",
        "by_threads": {"1": {"mb_per_s": 40.0, "status": "ok"}, "2": {"mb_per_s": 76.0, "status": "ok"}},
    }
    results = _results(
        _row("bpe_fast", 1, vocab="o200k"),
        _row("fastokens", 1, vocab="o200k"),
        _row("kitoken", 1, vocab="o200k", status="wrong ids: x"),
        threads,
        load=load,
        train=train,
    )
    found = {t["target"]: t for t in targets.evaluate(results, train_vocabs=(8192,), train_threads=(1,))}
    trained = found["train vocab 8192, 1 thread"]
    # bpe_fast_texts (the same blocks as the others) is bpe_fast too: its faster exact row is compared.
    assert trained["value"] == pytest.approx(5.0) and trained["met"] is True and trained["best"] == "ffbpe"
    assert trained["detail"].startswith("bpe_fast_texts 0.50 s")
    loading = next(t for name, t in found.items() if name.startswith("load o200k"))
    # kitoken loads fastest but encodes o200k wrong: fastokens is the peer to match.
    assert loading["value"] == pytest.approx(0.5) and loading["met"] is False
    scaling = found["one encode call on >= 1 MB: 2 threads vs 1"]
    assert scaling["value"] == pytest.approx(1.9) and scaling["met"] is True


def test_threads_not_supported_is_na():
    row = {
        "vocab": "gpt2",
        "section": "threads",
        "kind": "prose",
        "peer": "bpe_fast",
        "threads": 2,
        "status": "not supported: no num_threads",
        "mb_per_s": None,
    }
    (found,) = [t for t in targets.evaluate(_results(row)) if t["group"] == "threads"]
    assert found["met"] is None and "not supported" in found["detail"]


def test_markdown_shows_statuses_not_tracebacks():
    results = _results(
        _row("bpe_fast", 50),
        _row("tiktoken", 10),
        _row("fastokens", 0, status="wrong ids: differ at token 3"),
        _row(
            "tokie", 0, status="not available: not installed (ModuleNotFoundError: No module named 'tokie')"
        ),
    )
    found = targets.evaluate(results)
    text = render.markdown(results, found, "python benches/report.py --quick", {"cpu": "x"})
    assert "| GPT-2 | English prose | 50.0 | 10.0 | wrong ids | not available | 5.00x |" in text
    assert "- tokie, GPT-2 English prose: not available: not installed" in text
    assert "Traceback" not in text and "PASS" in text


def test_readme_table_says_fastest_only_where_the_target_holds(tmp_path):
    results = _results(
        _row("bpe_fast", 50, kind="prose"),
        _row("tiktoken", 10, kind="prose"),
        _row("bpe_fast", 50, kind="prose", vocab="o200k"),
        _row("fastokens", 120, kind="prose", vocab="o200k"),
    )
    found = targets.evaluate(results)
    table = render.readme_table(results, found)
    gpt2 = next(line for line in table.splitlines() if "GPT-2" in line)
    o200k = next(line for line in table.splitlines() if "o200k" in line)
    assert gpt2.endswith("| fastest |") and "| 50.0 MB/s | tiktoken 10.0 MB/s | 5.00x |" in gpt2
    assert o200k.endswith("| not fastest |") and "fastokens 120.0 MB/s" in o200k
    assert "fastest exact encoder" not in render.description_claim(found)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{render.README_START}\nold\n{render.README_END}\nrest\n", encoding="utf-8")
    assert render.update_readme(readme, results, found) == ["speed table"]
    written = readme.read_text(encoding="utf-8")
    assert (
        "old" not in written
        and gpt2 in written
        and written.startswith("intro\n")
        and written.endswith("rest\n")
    )
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(render.MarkersMissing):
        render.update_readme(readme, results, found)


def test_report_without_corpora_is_one_line_and_status_2(tmp_path):
    env = dict(os.environ, BPE_FAST_BENCH_DATA=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "benches/report.py", "--quick", "--out", str(tmp_path / "r.md")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "corpora not found" in done.stderr
    assert not (tmp_path / "r.md").exists()


def test_report_rejects_bad_flags_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "benches/report.py", "--runs", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "--runs" in done.stderr and "Traceback" not in done.stderr
