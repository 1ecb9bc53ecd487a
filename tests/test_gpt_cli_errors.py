"""Every user mistake at gpt.train / sample / export / hellaswag / plot gets one line on stderr naming the
problem, exit status 2 and no traceback, quickly; a path that looks local never reaches the network.

Each case runs the entry point's `cli()` (what `python -m gpt.X` runs) in-process with the network cut
off; `test_entry_points_answer_in_one_line_as_processes` runs one case per module as a real process."""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import bpe_fast
from conftest import CHILD_PYTHONPATH
from gpt.checkpoint import save_checkpoint
from gpt.model import GPT, GPTConfig
from gpt.shards import write_shard

REPO = Path(__file__).resolve().parents[1]
HELLASWAG = REPO / "tests" / "data" / "hellaswag_tiny.jsonl"
VOCAB = 64
TINY = [
    "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--vocab-size", str(VOCAB), "--seq-len", "16",
    "--batch-size", "2", "--total-batch-size", "32", "--sample-every", "0", "--no-tensorboard", "--device", "cpu",
    "--threads", "1", "--val-every", "0", "--max-steps", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """Folders the cases point at: shards, an empty folder, a run with a checkpoint, bad shards, logs."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    write_shard(root / "shards" / "train_000001.bin", rng.integers(0, VOCAB, 2000), vocab_size=VOCAB)
    (root / "empty").mkdir()
    write_shard(root / "tiny" / "train_000001.bin", rng.integers(0, VOCAB, 20), vocab_size=VOCAB)
    write_shard(root / "bad" / "train_000001.bin", rng.integers(0, VOCAB, 2000), vocab_size=VOCAB)
    bad = root / "bad" / "train_000001.bin"
    bad.write_bytes(bad.read_bytes()[:-7])
    model = GPT(GPTConfig(block_size=16, vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(root / "run", model, None, {"step": 2, "model_config": dataclasses.asdict(model.config)})
    model.save_hf(root / "hf")
    (root / "nolog").mkdir()
    (root / "nolog" / "log.jsonl").write_text("")
    (root / "badlog").mkdir()
    (root / "badlog" / "log.jsonl").write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": NaN oops\n')
    (root / "preset.json").write_text('{"max_lr": -0.1}')
    write_sharded_checkpoint(root / "sharded_run", root / "rendezvous")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bpe_fast.train(["the cat sat on the mat " * 20], 260).save(root / "noeot.json")  # no <|endoftext|>
    return root


def write_sharded_checkpoint(out: Path, rendezvous: Path) -> None:
    """A checkpoint in the layout of a --fsdp run, written by a process group of one (this process)."""
    import torch.distributed as dist

    from gpt.checkpoint import save_sharded_checkpoint
    from gpt.fsdp import shard_model

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=0, world_size=1)
    try:
        model = shard_model(GPT(GPTConfig(block_size=16, vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16)))
        save_sharded_checkpoint(
            out, model, None, {"step": 2, "model_config": dataclasses.asdict(model.config)}
        )
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HELLASWAG_CACHE": "{root}/hellaswag-cache"}

# (module, arguments, words the one line must hold, extra environment); {root} is the fixture's folder.
CASES = [
    (
        "train",
        ["--preset", "tiny-cpu", "--data", "{root}/nosuch"],
        "--data {root}/nosuch does not exist",
        {},
    ),
    ("train", ["--preset", "tiny-cpu", "--data", "{root}/empty"], "no train_*.bin shards there", {}),
    (
        "train",
        ["--preset", "gpt5"],
        "unknown preset 'gpt5': choose one of gpt2-124m, gpt2-1558m, gpt2-350m, gpt2-774m, tiny-cpu",
        {},
    ),
    ("train", ["--preset", "{root}/preset.json"], "max_lr: -0.1 is out of range", {}),
    ("train", ["--max-lr", "nan"], "--max-lr: 'nan' is not a finite number", {}),
    ("train", ["--warmup-steps", "-5"], "--warmup-steps: -5 is out of range", {}),
    ("train", ["--dropout", "1.5"], "--dropout: 1.5 is out of range", {}),
    ("train", ["--n-layer", "inf"], "--n-layer: 'inf' is not an integer", {}),
    ("train", ["--no-such-flag"], "unrecognized arguments: --no-such-flag", {}),
    ("train", [*TINY, "--data", "{root}/shards", "--total-batch-size", "40"], "not a multiple of B*T", {}),
    ("train", [*TINY, "--data", "{root}/bad"], "train_000001.bin", {}),
    ("train", [*TINY, "--data", "{root}/tiny"], "no 'train' shard holds the 33 tokens one step needs", {}),
    (
        "train",
        [
            *TINY,
            "--data",
            "{root}/shards",
            "--shuffle",
            "--tokenizer",
            "{root}/noeot.json",
            "--vocab-size",
            "320",
        ],
        "--shuffle needs the end-of-text token",
        {},
    ),
    ("train", [*TINY, "--data", "{root}/shards", "--out", "{root}/run"], "already holds checkpoints", {}),
    (
        "train",
        [*TINY, "--data", "{root}/shards", "--fsdp"],
        "--fsdp shards the model over the ranks of a torchrun job: launch with torchrun",
        {},
    ),
    (
        "train",
        [*TINY, "--data", "{root}/shards", "--out", "{root}/sharded_run", "--resume"],
        "sharded_run/ckpt_0000002 is a sharded checkpoint of a --fsdp run: resume it with --fsdp",
        {},
    ),
    (
        "train",
        [*TINY, "--data", "{root}/shards", "--out", "{root}/run", "--resume", "--fsdp"],
        "--fsdp: {root}/run/ckpt_0000002 was written without --fsdp",
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "{port}",
        },
    ),
    (
        "train",
        [*TINY, "--data", "{root}/shards", "--vocab-size", "50304", "--hellaswag", "{root}/nosuch.jsonl"],
        "nosuch.jsonl: no such HellaSwag file",
        {},
    ),
    (
        "train",
        [*TINY, "--data", "{root}/shards", "--vocab-size", "50304", "--hellaswag", "hub"],
        "could not download HellaSwag val",
        OFFLINE,
    ),
    (
        "train",
        [*TINY, "--data", "{root}/shards", "--sample-every", "1", "--tokenizer", "{root}/v.json"],
        "v.json",
        {},
    ),
    ("sample", ["--checkpoint", "nosuchdir"], "nosuchdir: no such directory", {}),
    ("sample", ["--checkpoint", "{root}/empty"], "neither a checkpoint", {}),
    ("sample", ["--hf", "{root}/empty"], "no config.json there", {}),
    ("sample", ["--checkpoint", "{root}/run", "--num-samples", "0"], "--num-samples: 0 is out of range", {}),
    (
        "sample",
        ["--checkpoint", "{root}/run", "--temperature", "nan"],
        "--temperature: 'nan' is not a finite",
        {},
    ),
    ("sample", ["--checkpoint", "{root}/run", "--top-k", "-1"], "--top-k: -1 is out of range", {}),
    (
        "sample",
        ["--checkpoint", "{root}/run", "--tokenizer", "{root}/v.json"],
        "tokenizer '{root}/v.json': not 'gpt2' and not an existing vocab file",
        {},
    ),
    ("sample", ["--prompt", "x"], "one of the arguments --checkpoint --hf is required", {}),
    ("export", ["--checkpoint", "{root}/nosuch", "--out", "{root}/x"], "no such directory", {}),
    ("export", ["--checkpoint", "{root}/hf", "--out", "{root}/x"], "not a training checkpoint", {}),
    ("export", ["--checkpoint", "{root}/run", "--out", "{root}/run/ckpt_0000002"], "overlaps the input", {}),
    (
        "export",
        ["--checkpoint", "{root}/run", "--out", "{root}/shards"],
        "already exists and is not empty",
        {},
    ),
    ("export", ["--checkpoint", "{root}/run"], "the following arguments are required: --out", {}),
    ("hellaswag", ["--model", "{root}/run", "--limit", "0"], "--limit: 0 is out of range", {}),
    (
        "hellaswag",
        ["--model", "{root}/run", "--pad-multiple", "-64"],
        "--pad-multiple: -64 is out of range",
        {},
    ),
    ("hellaswag", ["--model", "{root}/run", "--hellaswag", "{root}/nosuch"], "no such HellaSwag file", {}),
    ("hellaswag", ["--model", "{root}/run"], "this machine may be offline: pass --hellaswag PATH", OFFLINE),
    (
        "hellaswag",
        ["--model", "./nosuchdir", "--hellaswag", str(HELLASWAG)],
        "./nosuchdir: no such directory",
        {},
    ),
    (
        "hellaswag",
        ["--model", "runs/nosuch", "--hellaswag", str(HELLASWAG)],
        "runs/nosuch: no such directory",
        {},
    ),
    ("plot", ["{root}/nosuch"], "does not exist (is {root}/nosuch a gpt.train --out folder?)", {}),
    ("plot", ["{root}/nolog"], "has no logged steps yet", {}),
    ("plot", ["{root}/badlog"], "log.jsonl:2: not a JSON line", {}),
]


def fill(value: str, root: Path) -> str:
    return value.replace("{root}", str(root)).replace("{port}", str(free_port()))


@pytest.mark.parametrize(
    "module, argv, expected, env", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_user_error_is_one_line(module, argv, expected, env, place, monkeypatch, capsys):
    (place / "runs").mkdir(exist_ok=True)
    monkeypatch.chdir(place)
    for name, value in env.items():
        monkeypatch.setenv(name, fill(value, place))
    contacted = []

    def no_network(*args, **kwargs):
        contacted.append(args)
        raise OSError("network is off in this test")

    if not env:  # offline cases need urllib's refused proxy, torchrun ones a local store; others no socket
        monkeypatch.setattr(socket, "getaddrinfo", no_network)
        monkeypatch.setattr(socket.socket, "connect", no_network)
    entry = importlib.import_module(f"gpt.{module}")
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        entry.cli([fill(a, place) for a in argv])
    elapsed = time.monotonic() - started
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert exit_info.value.code == 2, out.err
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    assert lines[0].startswith(f"python -m gpt.{module}: error: "), lines[0]
    assert fill(expected, place) in lines[0], lines[0]
    assert contacted == [] and elapsed < 10, (contacted, elapsed)


@pytest.mark.parametrize(
    "module, argv, expected",
    [
        ("train", ["--preset", "tiny-cpu", "--data", "nosuch"], "--data nosuch does not exist"),
        ("train", ["--preset", "tiny-cpu", "--fsdp"], "--fsdp shards the model over the ranks of a torchrun"),
        ("sample", ["--checkpoint", "nosuchdir"], "nosuchdir: no such directory"),
        ("export", ["--checkpoint", "nosuchdir", "--out", "x"], "nosuchdir: no such directory"),
        ("hellaswag", ["--model", "{root}/run"], "this machine may be offline"),
        ("plot", ["nosuch"], "does not exist"),
    ],
)
def test_entry_points_answer_in_one_line_as_processes(module, argv, expected, place):
    env = {**os.environ, **{k: fill(v, place) for k, v in OFFLINE.items()}}
    env["PYTHONPATH"] = CHILD_PYTHONPATH
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", f"gpt.{module}", *(fill(a, place) for a in argv)],
        cwd=place,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and expected.replace("{root}", "") in lines[0]
    assert (
        time.monotonic() - started < 30
    )  # the process, torch import included; well under on an idle machine
