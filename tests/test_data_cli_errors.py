"""Every user mistake at gpt.prepare and gpt.pipeline: one line on stderr naming the problem and the fix,
exit status 2, no traceback, well under 10 s, and a hub name only ever tried online."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bpe_fast
from conftest import CHILD_PYTHONPATH
from gpt.shards import write_shard
from gpt.tokenizer import EOT_TEXT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with good and bad inputs for the cases below."""
    work = tmp_path_factory.mktemp("cli")
    (work / "corpus").mkdir()
    (work / "corpus" / "a.txt").write_text("first document " * 20, encoding="utf-8")
    (work / "corpus" / "b.txt").write_text("second document " * 20, encoding="utf-8")
    (work / "one.txt").write_text("just one document", encoding="utf-8")
    (work / "empty.txt").write_bytes(b"")
    (work / "a_file").write_text("not a folder")
    tok = bpe_fast.train(["some text to learn from " * 10], 270)
    tok.save(work / "no_eot.json")
    (work / "broken.json").write_text('{"format": "bpe-fast", "version": 1, "vocab": {')
    bpe_fast.train(["some text to learn from " * 10], 270, special_tokens=[EOT_TEXT]).save(
        work / "vocab.json"
    )
    foreign = work / "foreign"
    foreign.mkdir()
    write_shard(foreign / "train_000000.bin", [1, 2, 3])
    (foreign / "thesis.tex").write_text("precious")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["alpha", "beta"]}), work / "rows.parquet")
    other = work / "other_job"
    other.mkdir()
    (other / "manifest.json").write_text(
        json.dumps(
            {
                "format": "bpe-fast-shards",
                "version": 2,
                "tokenizer": {"vocab_size": 1},
                "dtype": "uint16",
                "shards": [],
                "num_tokens": 0,
                "num_documents": 0,
                "source": {"job": {}},
            }
        )  # fmt: skip
    )
    return work


PREPARE = [
    ("no-file", ["--files", "nope/*.txt", "--out", "o"], "matches no file"),
    ("missing-file", ["--files", "nope.txt", "--out", "o"], "nope.txt': no such file"),
    ("folder-as-file", ["--files", "corpus", "--out", "o"], "a folder; give the files in it"),
    ("empty-file", ["--files", "empty.txt", "--out", "o"], "all skipped (empty: 1)"),
    ("one-document", ["--files", "one.txt", "--out", "o"], "--doc-sep"),
    ("wrong-column", ["--files", "rows.parquet", "--out", "o"], "check --text-field"),
    ("no-input", ["--out", "o"], "exactly one of --files"),
    ("both-inputs", ["--files", "corpus/*.txt", "--dataset", "x/y", "--out", "o"], "exactly one of --files"),
    ("missing-tokenizer", ["--files", "corpus/*.txt", "--tokenizer", "nope.json", "--out", "o"], "not an existing vocab"),
    ("broken-tokenizer", ["--files", "corpus/*.txt", "--tokenizer", "broken.json", "--out", "o"], "broken.json"),
    ("tokenizer-without-eot", ["--files", "corpus/*.txt", "--tokenizer", "no_eot.json", "--out", "o"],
     "bpe-fast train FILE --vocab N"),
    ("out-is-a-file", ["--files", "corpus/*.txt", "--out", "a_file"], "is a file, not a folder"),
    ("out-of-another-job", ["--files", "corpus/*.txt", "--out", "other_job"], "holds shards of another job"),
    ("out-with-foreign-shards", ["--files", "corpus/*.txt", "--out", "foreign"], "already holds train_000000.bin"),
    ("overwrite-foreign-shards", ["--files", "corpus/*.txt", "--out", "foreign", "--overwrite"], "did not write"),
    ("shard-size-zero", ["--files", "corpus/*.txt", "--out", "o", "--shard-size", "0"], "--shard-size"),
    ("shard-size-nan", ["--files", "corpus/*.txt", "--out", "o", "--shard-size", "nan"], "--shard-size"),
    ("val-fraction-one", ["--files", "corpus/*.txt", "--out", "o", "--val-fraction", "1"], "--val-fraction"),
    ("val-fraction-inf", ["--files", "corpus/*.txt", "--out", "o", "--val-fraction", "inf"], "--val-fraction"),
    ("threads-negative", ["--files", "corpus/*.txt", "--out", "o", "--threads", "-1"], "--threads"),
    ("workers-zero", ["--files", "corpus/*.txt", "--out", "o", "--num-workers", "0"], "--num-workers"),
    ("worker-out-of-range", ["--files", "corpus/*.txt", "--out", "o", "--worker", "2", "--num-workers", "2"],
     "--worker must be in 0..1"),
    ("max-doc-bytes-fraction", ["--files", "corpus/*.txt", "--out", "o", "--max-doc-bytes", "1.5e0"], "whole"),
    ("empty-doc-sep", ["--files", "corpus/*.txt", "--out", "o", "--doc-sep", ""], "--doc-sep must not be empty"),
    ("local-looking-dataset", ["--dataset", "./no/such/folder", "--out", "o"], "no such local folder"),
    ("offline-hub", ["--dataset", "HuggingFaceFW/fineweb-edu", "--name", "sample-10BT", "--out", "o"],
     "HF_HUB_OFFLINE is set"),
    ("merge-unfinished-part", ["merge-manifests", "corpus", "--out", "merged"], "no manifest.json"),
]  # fmt: skip

PIPELINE = [
    ("missing-corpus", ["--corpus", "nope.txt"], "does not exist"),
    ("empty-corpus", ["--corpus", "empty.txt"], "is empty"),
    ("folder-corpus", ["--corpus", "corpus"], "is a folder"),
    ("vocab-too-small", ["--vocab", "10"], "at least 257"),
    ("vocab-nan", ["--vocab", "nan"], "--vocab"),
    ("max-steps-zero", ["--max-steps", "0"], "--max-steps"),
    ("threads-zero", ["--threads", "0"], "--threads"),
    ("val-fraction-one", ["--val-fraction", "1"], "--val-fraction"),
    ("val-fraction-zero", ["--val-fraction", "0"], "no validation split"),
    ("out-is-a-file", ["--out", "a_file"], "is a file, not a folder"),
    ("fresh-on-a-foreign-folder", ["--out", "foreign", "--fresh"], "will not delete it"),
    ("unknown-flag", ["--vocabulary", "300"], "unrecognized arguments"),
]


def run_cli(work: Path, module: str, args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    env = {
        **os.environ,
        "PYTHONPATH": CHILD_PYTHONPATH,
        "HF_HUB_OFFLINE": "1",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )
    return result, time.monotonic() - started


def check_one_line(result: subprocess.CompletedProcess, seconds: float, prog: str, expected: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}") and "error:" in lines[0], lines[0]
    assert expected in lines[0], lines[0]
    assert seconds < 10, f"{seconds:.1f} s"


@pytest.mark.parametrize("args, expected", [case[1:] for case in PREPARE], ids=[case[0] for case in PREPARE])
def test_prepare_user_errors_are_one_line(work, args, expected):
    result, seconds = run_cli(work, "gpt.prepare", args)
    check_one_line(result, seconds, "python -m gpt.prepare", expected)
    assert not (work / "o").exists(), "a refused job must leave no output folder"
    assert (work / "foreign" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    "args, expected", [case[1:] for case in PIPELINE], ids=[case[0] for case in PIPELINE]
)
def test_pipeline_user_errors_are_one_line(work, args, expected):
    result, seconds = run_cli(work, "gpt.pipeline", args)
    check_one_line(result, seconds, "python -m gpt.pipeline", expected)
    assert not (work / "out").exists()
    assert (work / "foreign" / "thesis.tex").read_text() == "precious"
