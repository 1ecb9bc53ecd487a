"""Exact resume: a run interrupted (by --stop-at-step, or by a real SIGTERM) and resumed with --resume
continues the same loss curve, data positions and weights as an uninterrupted run (CPU fp32)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import gpt.train as train
from bpe_fast import files
from conftest import CHILD_PYTHONPATH
from gpt.shards import write_shard
from gpt.shards.manifest import tokenizer_sha256

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64
# Dropout is on so that restoring the RNG state matters; shuffling is on so the loader state does.
TINY = [
    "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--vocab-size", str(VOCAB), "--dropout", "0.1",
    "--seq-len", "16", "--batch-size", "2", "--total-batch-size", "64", "--max-lr", "1e-2",
    "--warmup-steps", "3", "--sample-every", "0", "--no-tensorboard", "--device", "cpu", "--threads", "1",
    "--val-every", "5", "--val-steps", "2", "--checkpoint-every", "0", "--shuffle", "--seed", "5",
]  # fmt: skip


def make_shards(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    names = ["val_000000.bin", "train_000001.bin", "train_000002.bin", "train_000003.bin"]
    entries = []
    for name in names:
        tokens = rng.integers(1, VOCAB, 300)
        tokens[:: rng.integers(5, 40)] = 0  # documents start with EOT (id 0)
        write_shard(folder / name, tokens, vocab_size=VOCAB)
        entries.append({"file": name, "split": name.split("_")[0], "tokens": int(tokens.size)})
    manifest = {
        "format": "bpe-fast-shards",
        "version": 2,
        # GPT-2's files stand in for a 64-token vocab: nothing here loads the tokenizer (no samples, and
        # the manifest gives the EOT id), but the trainer checks that the file it names is there, unchanged.
        "tokenizer": {"spec": "gpt2", "sha256": tokenizer_sha256("gpt2"), "vocab_size": VOCAB, "eot_id": 0},
        "dtype": "uint16",
        "shards": entries,
        "num_tokens": sum(e["tokens"] for e in entries),
        "num_documents": 1,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"log.jsonl steps are not one continuous run: {steps}"
    return {r["step"]: r["loss"] for r in records}


def final_state(ckpt: Path) -> tuple[dict, dict]:
    meta = json.loads((ckpt / "meta.json").read_text())
    return meta, load_file(ckpt / "model.safetensors")


def assert_same_run(straight: Path, resumed: Path, last_step: int) -> None:
    a, b = losses(straight), losses(resumed)
    assert sorted(a) == sorted(b) == list(range(last_step))
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-6, rel=0), step
    meta_a, weights_a = final_state(straight / f"ckpt_{last_step:07d}")
    meta_b, weights_b = final_state(resumed / f"ckpt_{last_step:07d}")
    assert meta_a["loader"] == meta_b["loader"]
    assert meta_a["tokens_seen"] == meta_b["tokens_seen"]
    for name, tensor in weights_a.items():
        assert torch.allclose(tensor, weights_b[name], atol=1e-6, rtol=0), name


def test_stop_and_resume_matches_straight_run(tmp_path):
    data = make_shards(tmp_path / "shards")
    common = [*TINY, "--data", str(data), "--max-steps", "20"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train.main([*common, "--out", str(straight)]) == 0
    assert train.main([*common, "--out", str(resumed), "--stop-at-step", "10"]) == 0
    assert sorted(p.name for p in resumed.glob("ckpt_*")) == ["ckpt_0000010"]
    assert train.main([*common, "--out", str(resumed), "--resume"]) == 0
    assert_same_run(straight, resumed, 20)
    # 20 steps x 2 micro-batches = 40 batches; the three 300-token shards hold 9 batches each, so the
    # resumed half crossed shard boundaries and began a reshuffled epoch.
    meta, _ = final_state(resumed / "ckpt_0000020")
    assert meta["loader"]["epoch"] >= 1


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    data = make_shards(tmp_path / "shards")
    out = tmp_path / "out"
    assert train.main([*TINY, "--data", str(data), "--max-steps", "2", "--out", str(out), "--resume"]) == 0
    assert sorted(losses(out)) == [0, 1]


def test_resume_ignores_a_checkpoint_killed_mid_write(tmp_path):
    data = make_shards(tmp_path / "shards")
    common = [*TINY, "--data", str(data), "--max-steps", "8"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train.main([*common, "--out", str(straight)]) == 0
    assert train.main([*common, "--out", str(resumed), "--stop-at-step", "4"]) == 0
    # What a writer killed at step 6 leaves behind (its temp folder, named after its dead pid), and a
    # final-named folder missing files (made by hand: it is never picked).
    killed = f".ckpt_0000006.{files._HOST}-999999999.abcd{files.TEMP_SUFFIX}"
    for name in (killed, "ckpt_0000007"):
        (resumed / name).mkdir()
        (resumed / name / "model.safetensors").write_bytes(b"\0" * 10)
    assert train.main([*common, "--out", str(resumed), "--resume"]) == 0
    assert_same_run(straight, resumed, 8)
    assert not (resumed / killed).exists()  # the leftover was cleaned up at start


def test_real_sigterm_checkpoints_and_resumes_exactly(tmp_path):
    data = make_shards(tmp_path / "shards")
    max_steps = "3000"  # long enough that the signal surely arrives mid-run
    common = [*TINY, "--data", str(data), "--max-steps", max_steps]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt.train", *common, "--out", str(killed)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log = killed / "log.jsonl"
        deadline = time.monotonic() + 240
        while not (log.exists() and len(log.read_text().splitlines()) >= 5):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "training did not start in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "SIGTERM: checkpointing" in output
    ckpts = sorted(killed.glob("ckpt_*"))
    assert len(ckpts) == 1, output
    stopped_at = json.loads((ckpts[0] / "meta.json").read_text())["step"]
    assert 5 <= stopped_at < int(max_steps)
    target = stopped_at + 5
    straight = tmp_path / "straight"
    assert train.main([*common, "--out", str(straight), "--stop-at-step", str(target)]) == 0
    assert train.main([*common, "--out", str(killed), "--resume", "--stop-at-step", str(target)]) == 0
    assert_same_run(straight, killed, target)
