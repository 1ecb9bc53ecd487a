"""gpt.fsdp on CPU: FSDP2 (gloo, 2 ranks under torchrun) trains the tiny-cpu shape exactly as DDP does,
with and without activation checkpointing; sharded checkpoints resume the same curve and load into an
ordinary GPT that exports the same HF weights as the DDP model. The training loop is benches/fsdp_cpu.py's
worker (gpt.model.GPT, configure_optimizers, gpt.train's schedule and clipping), the stand-in for
`gpt.train --fsdp` until the trainer has it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from gpt.fsdp import (
    FSDPOptions,
    check_shared_directory,
    checkpoint_activations,
    full_model_state_dict,
    gradient_sync,
    load_full_model_state,
    load_sharded,
    save_sharded,
    shard_model,
)
from gpt.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benches.fsdp_cpu import run_worker  # noqa: E402

STEPS = 10
RESUME_AT = 5
# tiny-cpu's shape and optimizer settings; 2,048 tokens per step = 2 ranks x B=4 x T=128 x 2 micro-steps.
WORKER_ARGS = ["--preset", "tiny-cpu", "--vocab-size", "2048", "--total-batch-size", "2048"]
WORKER_ARGS += ["--steps", str(STEPS)]
TOLERANCE = 1e-5
TINY_CONFIG = GPTConfig(block_size=128, vocab_size=2048, n_layer=4, n_head=4, n_embd=128)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three 2-rank runs of 10 steps on the same batches: DDP; FSDP, which checkpoints at the end; and
    FSDP with activation checkpointing, which saves at step 5, rebuilds from another seed, loads and
    continues."""
    folder = tmp_path_factory.mktemp("fsdp_runs")
    records = {}
    for mode, extra in (
        ("ddp", ["--state", str(folder / "ddp.pt")]),
        ("fsdp", ["--state", str(folder / "fsdp.pt"), "--checkpoint", str(folder / "fsdp_ckpt")]),
        ("fsdp-ac", ["--checkpoint", str(folder / "ac_ckpt"), "--resume-at", str(RESUME_AT)]),
    ):
        records[mode] = run_worker(mode, folder / f"{mode}.json", [*WORKER_ARGS, *extra])
    return folder, records


@pytest.mark.slow
def test_fsdp_losses_equal_ddp(runs):
    _, records = runs
    ddp = records["ddp"]
    assert ddp["world_size"] == 2 and ddp["grad_accum"] == 2 and len(ddp["losses"]) == STEPS
    assert ddp["losses"][-1] < ddp["losses"][0] - 0.05, "the curve must move for the comparison to mean much"
    for mode in ("fsdp", "fsdp-ac"):
        assert len(records[mode]["losses"]) == STEPS
        for a, b in zip(ddp["losses"], records[mode]["losses"]):
            assert abs(a - b) <= TOLERANCE, (mode, ddp["losses"], records[mode]["losses"])
        for a, b in zip(ddp["grad_norms"], records[mode]["grad_norms"]):
            assert abs(a - b) <= TOLERANCE * max(1.0, a), mode


@pytest.mark.slow
def test_fsdp_shards_the_parameters(runs):
    _, records = runs
    params = records["ddp"]["params"]
    assert [r["local_params"] for r in records["ddp"]["ranks"]] == [params, params]
    shards = [r["local_params"] for r in records["fsdp"]["ranks"]]
    assert sum(shards) == params and max(shards) - min(shards) < params // 10


@pytest.mark.slow
def test_gathered_full_state_equals_ddp(runs):
    folder, _ = runs
    ddp, fsdp = torch.load(folder / "ddp.pt"), torch.load(folder / "fsdp.pt")
    assert set(ddp) == set(fsdp) and "lm_head.weight" in fsdp
    for name, tensor in ddp.items():
        assert fsdp[name].shape == tensor.shape, name
        assert (fsdp[name] - tensor).abs().max().item() <= TOLERANCE, name
    assert torch.equal(fsdp["lm_head.weight"], fsdp["transformer.wte.weight"])


@pytest.mark.slow
def test_sharded_checkpoint_loads_into_a_plain_model_and_exports_like_ddp(runs, tmp_path):
    folder, _ = runs
    names = sorted(p.name for p in (folder / "fsdp_ckpt").iterdir())
    assert names == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # one file per rank
    torch.manual_seed(999)  # weights that differ from the checkpoint's until it is loaded
    plain = GPT(TINY_CONFIG)
    load_full_model_state(folder / "fsdp_ckpt", plain)
    gathered = torch.load(folder / "fsdp.pt")
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, gathered[name]), name
    assert plain.lm_head.weight is plain.transformer.wte.weight  # still tied after the load
    ddp_model = GPT(TINY_CONFIG)
    ddp_model.load_state_dict(torch.load(folder / "ddp.pt"))
    plain.save_hf(tmp_path / "from_fsdp")
    ddp_model.save_hf(tmp_path / "from_ddp")
    assert (tmp_path / "from_fsdp" / "config.json").read_text() == (
        tmp_path / "from_ddp" / "config.json"
    ).read_text()
    a, b = (
        load_file(tmp_path / "from_fsdp" / "model.safetensors"),
        load_file(tmp_path / "from_ddp" / "model.safetensors"),
    )
    assert set(a) == set(b)
    for name in a:
        assert (a[name] - b[name]).abs().max().item() <= TOLERANCE, name


@pytest.mark.slow
def test_sharded_resume_continues_the_same_curve(runs):
    _, records = runs
    resumed, straight = records["fsdp-ac"]["losses"], records["fsdp"]["losses"]
    # Rebuilt from another seed at step 5: only a complete load of weights and AdamW moments gives back
    # the uninterrupted run's losses (checkpointing changes no arithmetic, only what is kept).
    for step in range(RESUME_AT, STEPS):
        assert abs(resumed[step] - straight[step]) <= 1e-6, (step, resumed, straight)


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
