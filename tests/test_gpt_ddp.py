"""DDP on CPU (gloo, 2 processes under torchrun): the same parameters as 1 process on the same global
batch, and a non-finite loss on one rank stops every rank cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import gpt.train as train
from conftest import CHILD_PYTHONPATH
from gpt.shards import write_shard

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64
# Adam's first steps are close to sign(gradient): a gradient that is ~0 up to fp32 rounding could flip
# between the two reduction orders and move a weight by a whole lr. A larger eps keeps the update smooth
# in the gradient, so the comparison checks what DDP is responsible for: the averaged gradients.
TINY = [
    "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--vocab-size", str(VOCAB), "--seq-len", "16",
    "--total-batch-size", "128", "--max-lr", "1e-2", "--warmup-steps", "2", "--eps", "1e-3",
    "--sample-every", "0", "--no-tensorboard", "--device", "cpu", "--threads", "1",
    "--val-every", "2", "--val-steps", "2", "--checkpoint-every", "0", "--max-steps", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    for name in ("val_000000.bin", "train_000001.bin", "train_000002.bin"):
        write_shard(folder / name, rng.integers(0, VOCAB, 900), vocab_size=VOCAB)
    return folder


def torchrun(
    script: str, args: list[str], timeout: float = 400, launcher: tuple = (), env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": CHILD_PYTHONPATH,
        **(env or {}),
    }
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            *launcher,
            script,
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def evaluation_flags() -> list[str]:
    """HellaSwag and held-out perplexity, which ranks split and all-reduce; they need GPT-2's tokenizer
    (bpe_fast's extension) and a GPT-2-sized embedding."""
    try:
        from gpt.tokenizer import load_tokenizer

        load_tokenizer("gpt2")
    except ImportError:
        return []
    return [
        "--vocab-size", "50304", "--hellaswag", str(REPO / "tests" / "data" / "hellaswag_tiny.jsonl"),
        "--hellaswag-every", "2", "--eval-text", str(REPO / "python" / "bpe_fast" / "samples" / "corpora" / "tinyshakespeare.txt"),
        "--eval-text-every", "2", "--eval-text-tokens", "200",
    ]  # fmt: skip


def test_two_gloo_ranks_match_one_process(tmp_path, data):
    # Global batch 128 tokens = 2 ranks x B=2 x T=16 x 2 micro-steps = 1 process x B=2 x T=16 x 4.
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    evals = evaluation_flags()
    # Launched by path, as documented: gpt/train.py must find the repo root itself.
    result = torchrun(
        "gpt/train.py", [*TINY, *evals, "--batch-size", "2", "--data", str(data), "--out", str(ddp_out)]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "world 2" in result.stdout and "grad_accum=2" in result.stdout
    # Validation: 2 ranks x 2 steps read the same 4 consecutive val batches as 1 process x 4 steps.
    single_args = [*TINY, *evals, "--batch-size", "2", "--val-steps", "4", "--data", str(data)]
    single_args += ["--out", str(single_out)]
    assert train.main(single_args) == 0
    ddp_log, single_log = log_of(ddp_out), log_of(single_out)
    assert [r["step"] for r in ddp_log] == [r["step"] for r in single_log] == [0, 1, 2, 3]
    for a, b in zip(ddp_log, single_log):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6, rel=0)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], abs=1e-6, rel=1e-6)
        if "val_loss" in b:
            assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6, rel=0)
        if "ppl" in b:  # steps 0 and 2 (every 2) and 3 (the last); the ranks scored disjoint halves
            assert a["hellaswag"] == b["hellaswag"] and a["ppl"] == pytest.approx(b["ppl"], rel=1e-5)
    for log in (ddp_log, single_log):
        assert [r["step"] for r in log if "ppl" in r and "hellaswag" in r] == ([0, 2, 3] if evals else [])
    ddp_weights = load_file(ddp_out / "ckpt_0000004" / "model.safetensors")
    single_weights = load_file(single_out / "ckpt_0000004" / "model.safetensors")
    assert set(ddp_weights) == set(single_weights)
    for name, tensor in single_weights.items():
        assert (tensor - ddp_weights[name]).abs().max().item() <= 1e-6, name
    ddp_meta = json.loads((ddp_out / "ckpt_0000004" / "meta.json").read_text())
    single_meta = json.loads((single_out / "ckpt_0000004" / "meta.json").read_text())
    assert ddp_meta["loader"] == single_meta["loader"] and ddp_meta["world_size"] == 2
    assert len(ddp_meta["rng"]) == 2


def test_non_finite_loss_on_one_rank_stops_all_ranks(tmp_path, data):
    # Rank 1 alone sees a NaN loss from its 3rd micro-step (step 1); rank 0's own loss stays finite.
    script = tmp_path / "nan_on_rank1.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            import gpt.train as train

            real_forward = train.GPT.forward
            calls = [0]

            def forward(self, idx, targets=None):
                logits, loss = real_forward(self, idx, targets)
                if targets is not None and self.training and os.environ["RANK"] == "1":
                    calls[0] += 1
                    if calls[0] >= 3:
                        loss = loss * float("nan")
                return logits, loss

            train.GPT.forward = forward
            sys.exit(train.main(sys.argv[1:]))
            """
        )
    )
    out = tmp_path / "out"
    result = torchrun(
        str(script), [*TINY, "--batch-size", "2", "--data", str(data), "--out", str(out)], timeout=300
    )
    assert result.returncode != 0
    # One error line, from rank 0, although only rank 1 saw the NaN.
    assert result.stderr.count("step 1: non-finite loss") == 1, result.stdout + result.stderr
    log = log_of(out)
    assert log[-1]["step"] == 1 and log[-1]["error"] == "non-finite"
    assert not list(out.glob("ckpt_*"))
    assert log[-1]["loss"] is None and log[-1]["nonfinite"] == ["loss"]  # rank 1's NaN, all-reduced


CRASH_ONCE = textwrap.dedent(
    """
    import os, sys
    import gpt.train as train

    real_step = train.train_step
    calls = [0]

    def train_step(*args, **kwargs):
        calls[0] += 1  # rank 0 (the checkpoint writer) dies in its 5th step of the first attempt
        if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0" and os.environ["RANK"] == "0" and calls[0] == 5:
            os._exit(1)
        return real_step(*args, **kwargs)

    train.train_step = train_step
    train.cli(sys.argv[1:])
    """
)


@pytest.mark.slow
def test_elastic_restart_resumes_the_same_run(tmp_path, data):
    # torchrun restarts every rank after a failure; with --resume they continue from the last checkpoint.
    # With gloo, the restarted ranks cannot form a new group on the rendezvous store torchrun shares with
    # its workers (they connect to the dead attempt's addresses); TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
    # gives each attempt its own store (torch 2.15; without it 3 of 4 crash/rank/launcher variants failed).
    script = tmp_path / "crash_once.py"
    script.write_text(CRASH_ONCE)
    common = [*TINY, "--batch-size", "2", "--data", str(data), "--checkpoint-every", "2", "--max-steps", "6"]
    out, single = tmp_path / "elastic", tmp_path / "single"
    result = torchrun(
        str(script),
        [*common, "--resume", "--out", str(out)],
        launcher=("--max-restarts=1",),
        env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resumed from" in result.stdout and "at step 4" in result.stdout
    assert train.main([*common, "--val-steps", "4", "--out", str(single)]) == 0
    elastic_log, single_log = log_of(out), log_of(single)
    assert [r["step"] for r in elastic_log] == list(range(6))
    for a, b in zip(elastic_log, single_log):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6, rel=0)
