"""`gpt.train --fsdp` on CPU (gloo, 2 ranks under torchrun): 10 steps of the tiny-cpu preset give DDP's
losses, gradient norms and evaluations, with and without activation checkpointing; the sharded
checkpoint resumes onto the same curve, holds half the state per rank, and exports to the same
transformers folder as the DDP run's. Then gpt.fsdp's pieces in-process, in a process group of one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import bpe_fast
from conftest import CHILD_PYTHONPATH, corpus_slice
from gpt.fsdp import (
    FSDPOptions,
    check_shared_directory,
    checkpoint_activations,
    full_model_state_dict,
    gradient_sync,
    load_sharded,
    save_sharded,
    shard_model,
)
from gpt.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parents[1]
STEPS = 10
RESUME_AT = 5
TOLERANCE = 1e-5
HELLASWAG = REPO / "tests" / "data" / "hellaswag_tiny.jsonl"
# tiny-cpu as it is (B=4, T=128, 1,024 tokens per step: one micro-step per rank on 2 ranks), its vocab
# from the shards' manifest; evaluations split unevenly over the ranks (9 HellaSwag examples, 9
# perplexity windows), so that under FSDP a rank runs out first and must keep in step.
TRAIN = [
    "--preset", "tiny-cpu", "--max-steps", str(STEPS), "--warmup-steps", "3", "--device", "cpu",
    "--threads", "1", "--no-tensorboard", "--checkpoint-every", "0", "--val-every", "5", "--val-steps", "2",
    "--sample-every", "5", "--sample-count", "1", "--sample-tokens", "4", "--sample-prompt", "ROMEO:",
    "--hellaswag", str(HELLASWAG), "--hellaswag-every", "5", "--hellaswag-limit", "9",
    "--eval-text-every", "5", "--eval-text-tokens", "1152",
]  # fmt: skip


def torchrun(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, "-m", "gpt.train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Shards of a 512-token vocab trained here; then three 2-rank runs of 10 steps on them: DDP; FSDP;
    FSDP with activation checkpointing, stopped at step 5 and resumed."""
    from gpt.prepare import main as prepare

    folder = tmp_path_factory.mktemp("fsdp_runs")
    text = corpus_slice("tinyshakespeare.txt", 150_000)
    (folder / "corpus.txt").write_text(text, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bpe_fast.train([text], 512, special_tokens=["<|endoftext|>"]).save(folder / "vocab.json")
    data = folder / "shards"
    prepare_args = ["--files", str(folder / "corpus.txt"), "--doc-sep", r"\n\n", "--tokenizer"]
    prepare_args += [
        str(folder / "vocab.json"),
        "--out",
        str(data),
        "--val-fraction",
        "0.1",
        "--no-progress",
        "-q",
    ]
    assert prepare(prepare_args) == 0
    common = [*TRAIN, "--data", str(data), "--eval-text", str(folder / "corpus.txt")]
    printed = {}
    printed["ddp"] = torchrun([*common, "--out", str(folder / "ddp")]).stdout
    printed["fsdp"] = torchrun([*common, "--fsdp", "--out", str(folder / "fsdp")]).stdout
    resumed = [*common, "--fsdp", "--activation-checkpointing", "--out", str(folder / "fsdp-ac")]
    printed["fsdp-ac-first"] = torchrun([*resumed, "--stop-at-step", str(RESUME_AT)]).stdout
    printed["fsdp-ac"] = torchrun([*resumed, "--resume"]).stdout
    return folder, printed


@pytest.mark.slow
def test_fsdp_losses_and_evaluations_equal_ddp(runs):
    folder, printed = runs
    ddp = log_of(folder / "ddp")
    assert [r["step"] for r in ddp] == list(range(STEPS))
    assert ddp[-1]["loss"] < ddp[0]["loss"] - 0.3, "the curve must move for the comparison to mean much"
    assert "world 2" in printed["ddp"] and "| DDP |" in printed["ddp"] and "| FSDP |" in printed["fsdp"]
    assert "FSDP + activation checkpointing" in printed["fsdp-ac"]
    for mode in ("fsdp", "fsdp-ac"):
        log = log_of(folder / mode)
        assert [r["step"] for r in log] == list(range(STEPS)), mode
        for a, b in zip(ddp, log):
            assert abs(a["loss"] - b["loss"]) <= TOLERANCE, (mode, a["step"], a["loss"], b["loss"])
            assert abs(a["grad_norm"] - b["grad_norm"]) <= TOLERANCE * max(1.0, a["grad_norm"]), mode
            if mode == "fsdp":  # (the stopped run also evaluated at its last step, 4)
                assert {"val_loss", "ppl", "hellaswag"} & set(a) == {"val_loss", "ppl", "hellaswag"} & set(b)
            if "val_loss" in a and "val_loss" in b:
                assert abs(a["val_loss"] - b["val_loss"]) <= TOLERANCE, (mode, a["step"])
            if "ppl" in a and "ppl" in b:
                assert a["ppl"] == pytest.approx(b["ppl"], rel=TOLERANCE), (mode, a["step"])
            if "hellaswag" in a and "hellaswag" in b:
                assert a["hellaswag"] == b["hellaswag"], (mode, a["step"])
        assert {0, 5, 9} <= {r["step"] for r in log if "hellaswag" in r and "ppl" in r and "val_loss" in r}
    # Every rank sampled under FSDP (each forward gathers from all); rank 0 alone printed.
    assert [line.split(":")[0] for line in printed["fsdp"].splitlines() if line.startswith("sample")] == [
        "sample 0",
        "sample 0",
    ]


@pytest.mark.slow
def test_sharded_resume_continues_the_same_curve(runs):
    folder, printed = runs
    assert "resumed from" in printed["fsdp-ac"] and f"at step {RESUME_AT}" in printed["fsdp-ac"]
    straight, resumed = log_of(folder / "fsdp"), log_of(folder / "fsdp-ac")
    # Resumed from a sharded checkpoint into freshly built shards: only a complete load of weights, AdamW
    # moments, data position and RNG gives back the uninterrupted run's losses.
    for a, b in zip(straight[RESUME_AT:], resumed[RESUME_AT:]):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a, b)


@pytest.mark.slow
def test_the_sharded_checkpoint_holds_each_ranks_half(runs):
    folder, _ = runs
    ckpt = folder / "fsdp" / f"ckpt_{STEPS:07d}"
    assert sorted(p.name for p in ckpt.iterdir()) == ["meta.json", "sharded"]
    assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["sharded"] is True and meta["world_size"] == 2 and meta["step"] == STEPS
    whole = folder / "ddp" / f"ckpt_{STEPS:07d}"
    state_bytes = sum((whole / name).stat().st_size for name in ("model.safetensors", "optimizer.pt"))
    halves = [(ckpt / "sharded" / f"__{r}_0.distcp").stat().st_size for r in (0, 1)]
    assert sum(halves) == pytest.approx(state_bytes, rel=0.1)  # weights + AdamW moments, once (+ DCP headers)
    assert max(halves) < 0.6 * state_bytes  # each rank wrote its shards, not the whole


@pytest.mark.slow
def test_fsdp_checkpoint_exports_like_the_ddp_one(runs, tmp_path):
    folder, _ = runs
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    for mode in ("ddp", "fsdp"):
        command = [sys.executable, "-m", "gpt.export", "--checkpoint", str(folder / mode), "--out", mode]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "fsdp").iterdir()) and "model.safetensors" in names
    for name in names:
        if name != "model.safetensors":
            assert (tmp_path / "ddp" / name).read_bytes() == (tmp_path / "fsdp" / name).read_bytes(), name
    a, b = (
        load_file(tmp_path / "ddp" / "model.safetensors"),
        load_file(tmp_path / "fsdp" / "model.safetensors"),
    )
    assert set(a) == set(b)
    for name in a:
        assert (a[name] - b[name]).abs().max().item() <= TOLERANCE, name


# ---------------------------------------------------------------------- in-process, one-rank group


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo group of one process (this one): enough for fully_shard and DCP without torchrun."""
    if dist.is_initialized():
        pytest.fail("a process group is already initialised in the test process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def small_config() -> GPTConfig:
    return GPTConfig(block_size=16, vocab_size=64, real_vocab_size=60, n_layer=2, n_head=2, n_embd=32)


@pytest.mark.usefixtures("single_torch_thread", "one_rank_group")
def test_activation_checkpointing_keeps_names_and_values(tmp_path):
    torch.manual_seed(0)
    reference = GPT(small_config())
    torch.manual_seed(0)
    model = shard_model(GPT(small_config()), FSDPOptions(activation_checkpointing=True))
    full = full_model_state_dict(model)
    assert list(full) == list(reference.state_dict())  # no wrapper prefixes in any name
    x = torch.randint(0, 60, (2, 16))
    _, want = reference(x, x)
    _, got = model(x, x)
    got.backward()
    assert torch.allclose(got, want, atol=1e-6)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.usefixtures("single_torch_thread", "one_rank_group")
def test_save_and_load_sharded_round_trip_with_optimizer(tmp_path):
    torch.manual_seed(0)
    model = shard_model(GPT(small_config()))
    optimizer = model.configure_optimizers(learning_rate=1e-2)
    x = torch.randint(0, 60, (2, 16))
    model(x, x)[1].backward()
    optimizer.step()
    save_sharded(tmp_path / "ckpt", model, optimizer)
    torch.manual_seed(1)
    other = shard_model(GPT(small_config()))
    other_optimizer = other.configure_optimizers(learning_rate=1e-2)
    load_sharded(tmp_path / "ckpt", other, other_optimizer)
    for (name, p), q in zip(model.named_parameters(), other.parameters()):
        assert torch.equal(p.full_tensor(), q.full_tensor()), name
    state, other_state = optimizer.state_dict()["state"], other_optimizer.state_dict()["state"]
    assert set(state) == set(other_state) and state
    for key in state:
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key][moment].full_tensor(), other_state[key][moment].full_tensor())
    # The same next step from both.
    for m, opt in ((model, optimizer), (other, other_optimizer)):
        opt.zero_grad()
        m(x, x)[1].backward()
        opt.step()
    assert torch.equal(model(x, x)[1], other(x, x)[1])


@pytest.mark.usefixtures("one_rank_group")
def test_check_shared_directory_passes_for_a_local_folder(tmp_path):
    check_shared_directory(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # the probe file is removed


@pytest.mark.usefixtures("single_torch_thread")
def test_checkpoint_activations_on_a_plain_model_saves_less_and_computes_the_same():
    def run(model):
        saved = []

        def pack(tensor):
            saved.append(tensor.untyped_storage().nbytes())
            return tensor

        x = torch.randint(0, 60, (4, 16), generator=torch.Generator().manual_seed(0))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            _, loss = model(x, x)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}, sum(saved)

    torch.manual_seed(0)
    plain = GPT(small_config())
    torch.manual_seed(0)
    recomputing = checkpoint_activations(GPT(small_config()))
    assert checkpoint_activations(recomputing) is recomputing  # applying twice changes nothing
    loss, grads, saved = run(plain)
    loss_ac, grads_ac, saved_ac = run(recomputing)
    assert loss_ac == loss and grads_ac.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ac[name], grad, atol=1e-7, rtol=0)
    assert saved_ac < saved / 2  # the blocks' activations are no longer kept for backward


def test_shard_model_needs_a_process_group():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="torchrun"):
        shard_model(GPT(small_config()))


def test_options_refuse_unknown_dtypes():
    with pytest.raises(ValueError, match="param_dtype"):
        FSDPOptions(param_dtype="bf16")
    policy = FSDPOptions(param_dtype="bfloat16").mixed_precision()
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32


def test_gradient_sync_skips_only_ddp_all_reduces():
    calls = []

    class FakeDDP(torch.nn.Module):
        def no_sync(self):
            calls.append("no_sync")
            return open(os.devnull)  # any context manager

    with gradient_sync(FakeDDP(), enabled=False):
        pass
    with gradient_sync(FakeDDP(), enabled=True):
        pass
    with gradient_sync(GPT(small_config()), enabled=False):  # no no_sync: a plain model
        pass
    assert calls == ["no_sync"]
