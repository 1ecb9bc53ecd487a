"""kill -9 while lora.finetune writes its adapter folder: what remains is a complete output (the new or the
old one), and once the same writer runs again no temp file or parked copy is left beside it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("peft")

from bpe_fast.files import MARKER_NAME, TEMP_SUFFIX  # noqa: E402
from conftest import CHILD_PYTHONPATH  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Loads torch and peft once, then forks a writer per command, so that each kill costs no import:
# "loop" forks a child that rewrites the folder until killed (prints its pid), "reap PID" collects a
# killed child (a zombie would still count as a live owner), "once" forks a child that writes once.
WRITER = """
import os
import sys
from pathlib import Path

import torch
from peft import get_peft_model

from lora import modeling, training
from lora.config import FinetuneConfig
from lora.data import Example
from lora.run_folder import RunFolder
from lora.tiny_model import tiny_model

torch.set_num_threads(1)
out = Path(sys.argv[1])
model = tiny_model("gpt2")
lora_config, _ = modeling.lora_config(model, ["attention"], 2, 4.0, 0.0)
peft_model = get_peft_model(model, lora_config)
config = FinetuneConfig(model="tiny", out=str(out))
folder = RunFolder(out, out.with_name(out.name + ".partial"), None)
examples = [Example([464, 3290, 318, 257], [464, 3290, 318, 257])]


def write(rounds):
    for round in range(rounds):
        summary = {"round": round}
        training.save_output(folder, config, peft_model, summary, examples, 0, torch.device("cpu"), lambda _: None)


for line in sys.stdin:
    command, *rest = line.split()
    if command == "reap":
        os.waitpid(int(rest[0]), 0)
        print("reaped", flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        try:
            write(10**9 if command == "loop" else 1)
        finally:
            os._exit(0)
    if command == "loop":
        print(pid, flush=True)
    else:
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def manager(out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def ask(process: subprocess.Popen, command: str) -> str:
    process.stdin.write(command + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def complete(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return {"adapter_model.safetensors", "adapter_config.json", "run.json", MARKER_NAME} <= names


@pytest.mark.slow
def test_killed_adapter_writes_leave_a_complete_output_and_no_litter(tmp_path):
    out = tmp_path / "adapter"
    rng = random.Random(0)
    litter_seen = 0
    process = manager(out)
    try:
        for _ in range(12):
            pid = int(ask(process, "loop"))
            time.sleep(rng.uniform(0.05, 0.6))
            os.kill(pid, signal.SIGKILL)
            assert ask(process, f"reap {pid}") == "reaped"
            parked = tmp_path / f".adapter.old{TEMP_SUFFIX}"
            assert complete(out) or (not out.exists() and complete(parked)), sorted(os.listdir(tmp_path))
            litter_seen += sum(TEMP_SUFFIX in name for name in os.listdir(tmp_path))
        assert ask(process, "once") == "0"
    finally:
        process.stdin.close()
        process.wait(timeout=60)
        process.stdout.close()
    assert sorted(os.listdir(tmp_path)) == ["adapter"], f"litter after the rerun (seen during: {litter_seen})"
    assert complete(out)
    assert litter_seen > 0  # the kills did land inside writes
