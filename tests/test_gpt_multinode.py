"""Multi-node torchrun, simulated on one machine: two "nodes" of one process each (two torchrun agents)
meeting through c10d rendezvous on a loopback address, as `--nnodes 2 --rdzv-backend c10d` runs on a
cluster.

- Every process learns a distinct global rank, its local rank and its node's rank (GROUP_RANK).
- gpt/train.py on two nodes gives the same losses and weights as `--standalone --nproc_per_node 2`, with
  one checkpoint writer, and both nodes resume from that checkpoint onto the same curve.
- The same with `--fsdp`: rank 0 picks the checkpoint and every rank of both nodes writes its shards
  into the one folder rank 0 completes; both nodes resume from it.

With c10d rendezvous, torchrun assigns node ranks in the order the agents join; `--node-rank` is only
read by the static backend (torchrun says it ignores it), so nothing here depends on which agent got
which. Only loopback: the rendezvous endpoint, every agent's --local-addr, and gloo's interface
(GLOO_SOCKET_IFNAME=lo).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import CHILD_PYTHONPATH
from gpt.checkpoint import load_model
from gpt.shards import write_shard

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
VOCAB = 64
TRAIN = [
    "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--vocab-size", str(VOCAB), "--seq-len", "16",
    "--batch-size", "2", "--total-batch-size", "128", "--max-lr", "1e-2", "--warmup-steps", "2",
    "--eps", "1e-3", "--sample-every", "0", "--no-tensorboard", "--device", "cpu", "--threads", "1",
    "--val-every", "2", "--val-steps", "2", "--checkpoint-every", "0", "--max-steps", "4",
]  # fmt: skip


# ------------------------------------------------------------------------------------------ harness


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def launch_env() -> dict:
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo would otherwise pick the hostname's interface
    return env


def launch_two_nodes(script: str, args: list[str], timeout: float = 400) -> list[subprocess.CompletedProcess]:
    """Runs `script args` as two torchrun "nodes" of one process each; returns both agents' results."""
    port, run_id = free_port(), f"test-{uuid.uuid4().hex[:8]}"
    agents = []
    for node in range(2):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
            "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{LOOPBACK}:{port}",
            "--rdzv-id", run_id, "--local-addr", LOOPBACK, script, *args,
        ]  # fmt: skip
        agents.append(
            subprocess.Popen(
                command, cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = []
    try:
        for agent in agents:
            stdout, stderr = agent.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr))
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    return results


def launch_standalone(script: str, args: list[str], nproc: int = 2, timeout: float = 400):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "--local-addr", LOOPBACK, script, *args,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=timeout
    )


def check(results) -> None:
    for result in results if isinstance(results, list) else [results]:
        assert result.returncode == 0, result.stdout + result.stderr


def losses(out: Path) -> list[tuple[int, float]]:
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in log]


# -------------------------------------------------------------------------------------------- tests

WHO_AM_I = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist

    dist.init_process_group("gloo")
    me = {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "LOCAL_WORLD_SIZE",
                                     "MASTER_ADDR")}
    me.update(pid=os.getpid(), rank=dist.get_rank(), world=dist.get_world_size())
    total = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(total)  # the ranks really talk: 1 + 2
    me["sum"] = total.item()
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, me)
    with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({"me": me, "everyone": everyone}, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_nodes_get_distinct_ranks_over_c10d(tmp_path):
    script = tmp_path / "who_am_i.py"
    script.write_text(WHO_AM_I)
    check(launch_two_nodes(str(script), [str(tmp_path)]))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    mine = [r["me"] for r in reports]
    assert [m["rank"] for m in mine] == [0, 1] and [m["RANK"] for m in mine] == ["0", "1"]
    assert all(m["WORLD_SIZE"] == "2" and m["world"] == 2 and m["LOCAL_WORLD_SIZE"] == "1" for m in mine)
    assert [m["LOCAL_RANK"] for m in mine] == ["0", "0"]  # each node has one process: local rank 0
    assert sorted(m["GROUP_RANK"] for m in mine) == ["0", "1"]  # two different nodes
    assert all(m["GROUP_RANK"] == m["RANK"] for m in mine)  # one process per node
    assert all(m["MASTER_ADDR"] == LOOPBACK and m["sum"] == 3.0 for m in mine)
    assert reports[0]["everyone"] == reports[1]["everyone"] == mine
    assert mine[0]["pid"] != mine[1]["pid"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    for name in ("val_000000.bin", "train_000001.bin", "train_000002.bin"):
        write_shard(folder / name, rng.integers(0, VOCAB, 900), vocab_size=VOCAB)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_nodes_train_resume_and_match_standalone(tmp_path, data, strategy):
    extra = ["--fsdp"] if strategy == "fsdp" else []
    standalone, nodes = tmp_path / "standalone", tmp_path / "nodes"
    common = [*TRAIN, *extra, "--data", str(data)]
    check(launch_standalone("gpt/train.py", [*common, "--out", str(standalone)]))
    # Two nodes: stop at step 2 (a checkpoint), then both nodes resume from it to step 4.
    first = launch_two_nodes("gpt/train.py", [*common, "--out", str(nodes), "--stop-at-step", "2"])
    check(first)
    assert sorted(p.name for p in nodes.iterdir() if p.name.startswith((".tmp", ".old", "ckpt"))) == [
        "ckpt_0000002"
    ]  # one writer: one complete checkpoint and no half-written copy
    second = launch_two_nodes("gpt/train.py", [*common, "--out", str(nodes), "--resume"])
    check(second)
    resumed_lines = [line for r in second for line in r.stdout.splitlines() if "resumed from" in line]
    assert len(resumed_lines) == 1 and "at step 2" in resumed_lines[0]  # printed by rank 0 alone
    want, got = losses(standalone), losses(nodes)
    assert [s for s, _ in got] == [s for s, _ in want] == [0, 1, 2, 3]
    for (step, a), (_, b) in zip(want, got):
        assert abs(a - b) <= 1e-6, (step, want, got)
    final = "ckpt_0000004"
    # Either layout (whole files, or DCP shards under --fsdp), read as gpt.sample and gpt.export read it.
    a, b = (load_model(run / final)[0].state_dict() for run in (standalone, nodes))
    assert set(a) == set(b)
    for name in a:
        assert (a[name] - b[name]).abs().max().item() <= 1e-6, name
    meta = json.loads((nodes / final / "meta.json").read_text())
    assert meta["world_size"] == 2 and len(meta["rng"]) == 2
    assert meta.get("sharded", False) == (strategy == "fsdp")


FAKE_SRUN = """#!/usr/bin/env bash
# Stands in for srun on one machine: drops srun's own --options and runs the command once per "node"
# (SLURM_NNODES of them) in parallel, as srun --ntasks-per-node=1 would on an allocation.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node "$@" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
FAKE_SCONTROL = f"""#!/usr/bin/env bash
# 'scontrol show hostnames LIST': every fake node is this machine's loopback address.
echo {LOOPBACK}
"""


@pytest.mark.slow
def test_slurm_example_script_trains_on_two_fake_nodes(tmp_path, data):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "run"
    env = launch_env()
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_NNODES="2",
        SLURM_JOB_NODELIST="node[1-2]",
        SLURM_SUBMIT_DIR=str(REPO),
        RDZV_PORT=str(free_port()),
        GPUS_PER_NODE="1",
        PYTHON=sys.executable,
        PRESET="tiny-cpu",
        DATA=str(data),
        OUT=str(out),
    )
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm_gpt2.sbatch"), *TRAIN],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"rendezvous {LOOPBACK}:" in result.stdout and "world 2" in result.stdout
    assert [step for step, _ in losses(out)] == [0, 1, 2, 3]
    assert sorted(p.name for p in out.glob("ckpt_*")) == ["ckpt_0000004"]
    assert "--resume: no complete checkpoint" in result.stdout  # the script always resumes; fresh here
