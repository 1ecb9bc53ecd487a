"""gpt.pipeline: stages fingerprinted by their inputs, reused or rebuilt exactly as their inputs say, resumed
after a failure; --fresh and foreign folders; and one real end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpe_fast.cliutil import UserError
from bpe_fast.files import OverwriteRefused
from conftest import CHILD_PYTHONPATH, CORPORA
from gpt import pipeline

REPO = Path(__file__).resolve().parents[1]

# Stands in for each stage's command: logs its name (and a resume flag), makes its outputs, and fails
# when told to through the environment.
FAKE_STAGE = """
import os, sys
from pathlib import Path
name, log, outputs = sys.argv[1], sys.argv[2], sys.argv[3:]
resume = "--resume" in outputs
outputs = [o for o in outputs if o != "--resume"]
with open(log, "a") as f:
    f.write(name + (" --resume" if resume else "") + "\\n")
if os.environ.get("FAIL_STAGE") == name:
    sys.exit(3)
for out in outputs:
    path = Path(out)
    if name in ("shards", "train"):
        path.mkdir(parents=True, exist_ok=True)
        (path / "made").write_text(name)
    else:
        path.write_text(name)
print("output of", name)
"""


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """gpt.pipeline with every stage replaced by FAKE_STAGE; returns (run, log) helpers."""
    log = tmp_path / "log.txt"
    real = pipeline.build_stages

    def build(cfg, corpus_sha256):
        stages = real(cfg, corpus_sha256)
        for stage in stages:
            stage.command = [sys.executable, "-c", FAKE_STAGE, stage.name, str(log), *map(str, stage.outputs)]
        return stages

    monkeypatch.setattr(pipeline, "build_stages", build)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n\nmore text", encoding="utf-8")

    def run(*flags: str) -> list[str]:
        log.write_text("")
        status = pipeline.main(["--corpus", str(corpus), "--out", str(tmp_path / "out"), *flags])
        assert status == 0
        return log.read_text().split()

    return run, log, corpus, tmp_path / "out"


ALL = ["tokenizer", "check", "shards", "train", "sample", "plot"]


def test_a_rerun_reuses_every_stage_and_says_so(fake, capsys):
    run, _, _, out = fake
    assert run() == ALL
    capsys.readouterr()
    assert run() == []
    text = capsys.readouterr().out
    assert text.count("reused (fingerprint") == 6 and "rebuilt: none" in text
    assert (out / "samples.txt").read_text() == "output of sample\n"  # the captured stdout
    record = json.loads((out / "pipeline.json").read_text())
    assert all(stage["done"] for stage in record["stages"].values())


def test_changed_inputs_rebuild_exactly_the_stages_that_depend_on_them(fake):
    run, _, corpus, _ = fake
    run()
    assert run("--max-steps", "7") == ["train", "sample", "plot"]
    assert run("--max-steps", "7", "--prompt", "JULIET:") == ["sample"]
    assert run("--max-steps", "7", "--prompt", "JULIET:", "--shard-size", "999") == [
        "shards",
        "train",
        "sample",
        "plot",
    ]
    assert run("--max-steps", "7", "--prompt", "JULIET:", "--shard-size", "999", "--vocab", "300") == ALL
    corpus.write_text("other text\n\nand more", encoding="utf-8")  # same path, new content
    assert run("--max-steps", "7", "--prompt", "JULIET:", "--shard-size", "999", "--vocab", "300") == ALL
    assert (
        run(
            "--max-steps",
            "7",
            "--prompt",
            "JULIET:",
            "--shard-size",
            "999",
            "--vocab",
            "300",
            "--threads",
            "2",
        )
        == []
    )


def test_a_failed_stage_stops_the_run_and_the_next_run_continues_it(fake, monkeypatch, capsys):
    run, log, corpus, out = fake
    monkeypatch.setenv("FAIL_STAGE", "train")
    log.write_text("")
    assert pipeline.main(["--corpus", str(corpus), "--out", str(out)]) == 3
    assert log.read_text().split() == ["tokenizer", "check", "shards", "train"]
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert err == [err[0]] and "stage 'train' failed with exit status 3" in err[0]
    monkeypatch.delenv("FAIL_STAGE")
    assert run() == ["train", "--resume", "sample", "plot"]


def test_outputs_the_record_does_not_know_are_never_replaced_silently(fake, tmp_path):
    run, _, corpus, out = fake
    out.mkdir()
    (out / "vocab.json").write_text("someone's vocab")
    with pytest.raises(UserError, match="vocab.json exists but .*pipeline.json does not record it.*--fresh"):
        pipeline.main(["--corpus", str(corpus), "--out", str(out)])
    assert (out / "vocab.json").read_text() == "someone's vocab"
    assert run("--fresh") == ALL  # only pipeline names in OUT: --fresh may clear it
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(OverwriteRefused, match="thesis.tex"):
        pipeline.main(["--corpus", str(corpus), "--out", str(out), "--fresh"])
    assert (out / "thesis.tex").read_text() == "precious" and (out / "vocab.json").exists()


def test_the_default_corpus_is_the_bundled_one():
    import bpe_fast

    config = pipeline.parse_config([])
    # The package's own copy (the source tree's, or the installed wheel's), and the one shipped in the repo.
    assert (
        config.corpus
        == Path(bpe_fast.__file__).resolve().parent / "samples" / "corpora" / "tinyshakespeare.txt"
    )
    assert config.corpus.read_bytes() == (CORPORA / "tinyshakespeare.txt").read_bytes()
    assert config.threads == 1


@pytest.mark.slow
def test_the_real_pipeline_end_to_end_then_reused(tmp_path):
    """Every stage's real command on a small corpus; then a re-run that reuses all of them."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000], encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    command = [sys.executable, "-m", "gpt.pipeline", "--corpus", str(corpus), "--vocab", "300", "--max-steps", "4",
               "--val-every", "2", "--val-steps", "1", "--shard-size", "5000"]  # fmt: skip
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = tmp_path / "out" / "pipeline"
    for name in ("vocab.json", "shards/manifest.json", "run/log.jsonl", "samples.txt", "loss.png"):
        assert (out / name).is_file(), name
    assert (out / "samples.txt").read_text().count("ROMEO:") == 3
    val = [
        r["val_loss"]
        for r in map(json.loads, (out / "run" / "log.jsonl").read_text().splitlines())
        if r.get("val_loss")
    ]
    assert len(val) >= 2 and val[-1] < val[0]
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "rebuilt: none" in again.stdout and again.stdout.count("reused") == 7
