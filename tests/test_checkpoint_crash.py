"""Checkpoint writers under crashes: kill -9 at random times, a crash between the two renames of a
same-step replacement, and a full disk. After each, only complete checkpoints are visible, the next start
restores (never deletes) the only complete copy and leaves no temp behind, and the results are right."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import gpt.train as train
from bpe_fast.files import TEMP_SUFFIX
from conftest import CHILD_PYTHONPATH
from gpt.checkpoint import MODEL_FILE, latest_checkpoint, list_checkpoints, load_model, recover_checkpoints
from gpt.shards import write_shard

REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": CHILD_PYTHONPATH,
}
VOCAB = 64
TINY = [
    "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--vocab-size", str(VOCAB), "--seq-len", "16",
    "--batch-size", "2", "--total-batch-size", "32", "--sample-every", "0", "--no-tensorboard", "--device", "cpu",
    "--threads", "1", "--val-every", "0", "--checkpoint-every", "2", "--max-steps", "6",
]  # fmt: skip

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TEMP_SUFFIX in p.name)


@pytest.fixture
def shards(tmp_path) -> Path:
    folder = tmp_path / "shards"
    rng = np.random.default_rng(0)
    for name in ("train_000001.bin", "train_000002.bin"):
        write_shard(folder / name, rng.integers(0, VOCAB, 2000), vocab_size=VOCAB)
    return folder


# ------------------------------------------------------------------------------------ crash between renames

REPLACE_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    import bpe_fast.files as files
    from gpt.checkpoint import load_model, read_meta, save_checkpoint

    ckpt = sys.argv[1]
    model, meta = load_model(ckpt)
    real_replace = os.replace

    def replace(src, dst):
        # atomic_dir parks the old folder first, then renames the new one in: die between the two.
        if str(src).endswith(files.TEMP_SUFFIX) and ".old" not in str(src):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    files.os.replace = replace
    save_checkpoint(os.path.dirname(ckpt), model, None, {**meta, "tag": "replacement"})
    """
)


def test_crash_between_the_renames_keeps_the_checkpoint_and_the_next_start_restores_it(
    tmp_path, shards, capsys
):
    out = tmp_path / "out"
    common = [*TINY, "--data", str(shards)]
    assert train.main([*common, "--out", str(out), "--stop-at-step", "4"]) == 0
    before = load_file(out / "ckpt_0000004" / MODEL_FILE)
    result = subprocess.run(
        [sys.executable, "-c", REPLACE_AND_DIE, str(out / "ckpt_0000004")],
        env=ENV,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    # The moment of the crash: the old checkpoint is parked, the new one is complete under its temp name.
    assert not (out / "ckpt_0000004").exists()
    assert (out / f".ckpt_0000004.old{TEMP_SUFFIX}" / MODEL_FILE).is_file()
    assert latest_checkpoint(out).name == "ckpt_0000002"
    # The next start (gpt.train --resume) puts the parked copy back and resumes from it, not from step 2.
    capsys.readouterr()
    assert train.main([*common, "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "at step 4" in printed, printed
    assert temps(out) == []
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_0000002", "ckpt_0000004", "ckpt_0000006"]
    restored = load_file(out / "ckpt_0000004" / MODEL_FILE)
    assert all(torch.equal(before[name], restored[name]) for name in before)


# ------------------------------------------------------------------------------------------- full disk


def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, shards):
    out = tmp_path / "out"
    common = [*TINY, "--data", str(shards), "--out", str(out)]
    assert train.main([*common, "--stop-at-step", "2"]) == 0
    model_size = (out / "ckpt_0000002" / MODEL_FILE).stat().st_size
    limit = model_size // 2  # room for the log, not for the weights

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "gpt.train", *common, "--resume"],
        env=ENV,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "disk full" in lines[0] and str(out / "ckpt_0000004" / MODEL_FILE) in lines[0], lines[0]
    assert time.monotonic() - started < 120
    # Nothing partial: no temp, no step-4 folder; the step-2 checkpoint still loads.
    assert temps(out) == [] and [p.name for p in list_checkpoints(out)] == ["ckpt_0000002"]
    model, meta = load_model(out / "ckpt_0000002")
    assert meta["step"] == 2
    # and the job continues once there is room again
    assert train.main([*common, "--resume"]) == 0
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_0000002", "ckpt_0000004", "ckpt_0000006"]


# ------------------------------------------------------------------------------------------ kill -9 trials

# One process imports torch once and forks a writer per trial; the test kills each writer with SIGKILL
# at a random moment. A writer starts as gpt.train does (recover_checkpoints), then rewrites its latest
# step (a same-step replacement) and writes the following steps, each twice, forever. Every checkpoint's
# weights are filled with a value derived from its step and version, so a loaded one can be checked.
WRITER_FORK_SERVER = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    from gpt.checkpoint import latest_checkpoint, read_meta, recover_checkpoints, save_checkpoint
    from gpt.model import GPT, GPTConfig

    out = sys.argv[1]
    config = dict(block_size=8, vocab_size=64, n_layer=1, n_head=2, n_embd=16)
    model = GPT(GPTConfig(**config))

    def write_forever():
        recover_checkpoints(out)
        latest = latest_checkpoint(out)
        step = read_meta(latest)["step"] if latest else 1
        while True:
            for version in (0, 1):
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(step * 10 + version)
                save_checkpoint(out, model, None, {"step": step, "version": version, "model_config": config})
            step += 1

    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                write_forever()
            finally:
                os._exit(1)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)
    """
)


def check_complete_checkpoints(out: Path, from_step: int = 0) -> list[int]:
    """Every visible checkpoint is complete; those from `from_step` on (the ones a writer may have touched
    since the last check) load and hold the weights their meta says. Returns all their steps."""
    paths = list_checkpoints(out)
    visible = sorted(p.name for p in out.iterdir() if p.name.startswith("ckpt_"))
    assert visible == [p.name for p in paths], "a folder named like a checkpoint is incomplete"
    steps = []
    for path in paths:
        step = int(path.name[len("ckpt_") :])
        if step >= from_step:
            model, meta = load_model(path)
            assert meta["step"] == step
            value = step * 10 + meta["version"]
            assert all(torch.all(p == value) for p in model.parameters()), path
        steps.append(step)
    return steps


def kill_writers_at_random_times(
    server_code: str, out: Path, trials: int, seed: int, max_delay: float
) -> int:
    """Runs `trials` writers forked by `server_code`, each killed with SIGKILL after a random delay, and
    checks after every kill what a reader sees and what the next start leaves. Returns the last step."""
    out.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-c", server_code, str(out)],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rng = random.Random(seed)
    killed_mid_write = parked_only = 0
    previous_max = 0
    try:
        for trial in range(trials):
            server.stdin.write("go\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            time.sleep(rng.uniform(0.0, max_delay))
            os.kill(pid, signal.SIGKILL)
            assert int(server.stdout.readline()) == signal.SIGKILL, (
                f"trial {trial}: the writer died by itself"
            )
            # What a reader sees right after the kill: complete checkpoints only.
            steps_seen = check_complete_checkpoints(out, from_step=previous_max)
            leftovers = temps(out)
            killed_mid_write += bool(leftovers)
            parked_only += any(".old" in name for name in leftovers)
            # The next start: the parked copy is restored, every temp is gone, nothing is lost.
            recover_checkpoints(out)
            assert temps(out) == [], trial
            steps = check_complete_checkpoints(out, from_step=previous_max)
            assert set(steps_seen) <= set(steps) and steps == list(range(1, len(steps) + 1)), (trial, steps)
            # A writer killed before its first checkpoint leaves none (only possible while none existed).
            assert (steps[-1] if steps else 0) >= previous_max, f"trial {trial}: step {previous_max} was lost"
            previous_max = steps[-1] if steps else 0
    finally:
        server.kill()
        server.wait()
        server.stdin.close()
        server.stdout.close()
    print(
        f"{trials} kills: {killed_mid_write} mid-write, {parked_only} with the old copy parked; {previous_max} steps"
    )
    assert killed_mid_write >= 8  # the kills did land inside writes, not only between them
    assert previous_max >= 2  # and the writers made progress across trials
    return previous_max


def test_kill_9_at_random_times_never_leaves_a_broken_or_lost_checkpoint(tmp_path):
    kill_writers_at_random_times(WRITER_FORK_SERVER, tmp_path / "out", trials=32, seed=1234, max_delay=0.25)


# ------------------------------------------------------------------------------------ the sharded layout
# A --fsdp run writes ckpt_N/{meta.json, sharded/} with every rank writing its shards into rank 0's temp
# folder. The same guarantees, checked the same ways: ranks are started here without torchrun (RANK,
# WORLD_SIZE, MASTER_ADDR/PORT set by hand, which is all gpt.train reads), so that each rank's stderr and
# exit status can be checked on its own.


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(args: list[str], ranks: int = 2, limit: int | None = None, timeout: float = 300) -> list:
    """`python -m gpt.train args` as `ranks` processes of one job; with `limit`, a file size limit on each
    (a full disk). Returns each rank's CompletedProcess."""
    port = free_port()
    procs = []
    for rank in range(ranks):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(ranks)}
        env.update(LOCAL_WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "gpt.train", *args],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
                if limit
                else None,
            )  # fmt: skip
        )
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def check_ok(results) -> None:
    for result in results:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


SHARDED = ["--fsdp", "--n-layer", "2", "--total-batch-size", "64"]  # two blocks: two FSDP groups + the root


def test_full_disk_while_writing_shards_is_one_line_from_rank_0_and_keeps_the_previous_checkpoint(
    tmp_path, shards
):
    out = tmp_path / "out"
    common = [*TINY, *SHARDED, "--data", str(shards), "--out", str(out)]
    check_ok(launch_ranks([*common, "--stop-at-step", "2"]))
    shard_size = (out / "ckpt_0000002" / "sharded" / "__0_0.distcp").stat().st_size
    assert (out / "ckpt_0000002" / "meta.json").stat().st_size < shard_size // 2  # meta would fit
    started = time.monotonic()
    rank0, rank1 = launch_ranks([*common, "--resume"], limit=shard_size // 2)
    assert rank0.returncode == rank1.returncode == 2, rank0.stderr + rank1.stderr
    lines = rank0.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in rank0.stderr, rank0.stderr
    assert lines[0].startswith("python -m gpt.train: error: disk full while writing ")
    assert str(out / "ckpt_0000004" / "sharded") in lines[0], lines[0]
    assert rank1.stderr.strip() == "", rank1.stderr  # rank 0 reported it, once for the job
    assert time.monotonic() - started < 120
    assert temps(out) == [] and [p.name for p in list_checkpoints(out)] == ["ckpt_0000002"]
    model, meta = load_model(out / "ckpt_0000002")
    assert meta["step"] == 2 and meta["sharded"] is True
    check_ok(launch_ranks([*common, "--resume"]))  # and the job continues once there is room again
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_0000002", "ckpt_0000004", "ckpt_0000006"]


REPLACE_SHARDED_AND_DIE = textwrap.dedent(
    """
    import os, signal, sys
    import torch.distributed as dist
    import bpe_fast.files as files
    from gpt.checkpoint import read_meta, save_sharded_checkpoint
    from gpt.fsdp import shard_model
    from gpt.model import GPT, GPTConfig

    ckpt = sys.argv[1]
    meta = read_meta(ckpt)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    model = shard_model(GPT(GPTConfig(**meta["model_config"])))
    real_replace = os.replace

    def replace(src, dst):
        # atomic_dir parks the old folder first, then renames the new one in: die between the two.
        if str(src).endswith(files.TEMP_SUFFIX) and ".old" not in str(src):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    files.os.replace = replace
    save_sharded_checkpoint(os.path.dirname(ckpt), model, None, {**meta, "tag": "replacement"})
    """
)


def test_crash_between_the_renames_of_a_sharded_checkpoint_and_the_next_start_restores_it(tmp_path, shards):
    out = tmp_path / "out"
    common = [*TINY, *SHARDED, "--data", str(shards), "--out", str(out)]
    check_ok(launch_ranks([*common, "--stop-at-step", "4"], ranks=1))
    files_before = {p.name: p.read_bytes() for p in (out / "ckpt_0000004" / "sharded").iterdir()}
    result = subprocess.run(
        [sys.executable, "-c", REPLACE_SHARDED_AND_DIE, str(out / "ckpt_0000004")],
        env=ENV,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not (out / "ckpt_0000004").exists()
    assert (out / f".ckpt_0000004.old{TEMP_SUFFIX}" / "sharded" / ".metadata").is_file()
    assert latest_checkpoint(out).name == "ckpt_0000002"
    # The next start puts the parked copy back and resumes from it (step 4), not from step 2.
    (resumed,) = launch_ranks([*common, "--resume"], ranks=1)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 4" in resumed.stdout, resumed.stdout
    assert temps(out) == []
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_0000002", "ckpt_0000004", "ckpt_0000006"]
    assert {p.name: p.read_bytes() for p in (out / "ckpt_0000004" / "sharded").iterdir()} == files_before


# As WRITER_FORK_SERVER, for the sharded layout: each forked writer joins a process group of one, shards
# the model, says it is ready, then writes sharded checkpoints forever.
SHARDED_WRITER_FORK_SERVER = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    import torch.distributed.checkpoint, torch.distributed.fsdp  # imported once, before forking
    from gpt.checkpoint import latest_checkpoint, read_meta, recover_checkpoints, save_sharded_checkpoint
    from gpt.fsdp import shard_model
    from gpt.model import GPT, GPTConfig

    out = sys.argv[1]
    config = dict(block_size=8, vocab_size=64, n_layer=2, n_head=2, n_embd=16)

    def write_forever(ready):
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        model = shard_model(GPT(GPTConfig(**config)))
        recover_checkpoints(out)
        latest = latest_checkpoint(out)
        step = read_meta(latest)["step"] if latest else 1
        os.write(ready, b"r")
        while True:
            for version in (0, 1):
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(step * 10 + version)
                meta = {"step": step, "version": version, "model_config": config}
                save_sharded_checkpoint(out, model, None, meta)
            step += 1

    for line in sys.stdin:
        ready_read, ready_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_read)
                write_forever(ready_write)
            finally:
                os._exit(1)
        os.close(ready_write)
        os.read(ready_read, 1)  # set up: from here on it writes
        os.close(ready_read)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)
    """
)


def test_kill_9_of_sharded_writers_never_leaves_a_broken_or_lost_checkpoint(tmp_path):
    out = tmp_path / "out"
    kill_writers_at_random_times(SHARDED_WRITER_FORK_SERVER, out, trials=30, seed=4321, max_delay=0.3)
    assert all(json.loads((p / "meta.json").read_text())["sharded"] for p in list_checkpoints(out))
