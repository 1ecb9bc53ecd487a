"""gpt.memory: the activation terms are what autograd really saves (counted with saved-tensor hooks on
CPU, fp32 and bf16 autocast), the state terms follow the trainer's bytes per parameter, and the CLI
prints the table and refuses bad input in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt.memory import (
    GIB,
    Shape,
    activation_bytes,
    block_activation_bytes,
    largest_micro_batch,
    main,
    parameter_count,
    rank_memory,
)
from gpt.model import GPT, Block, GPTConfig

REPO = Path(__file__).resolve().parents[1]
# B*T = 120 and B = 3 never equal a weight's first dimension (64, 192, 256, 320), so a saved tensor
# whose first dimension is B or B*T is an activation, not a parameter or autocast's copy of one.
B, T, D, HEADS, VOCAB, REAL_VOCAB, LAYERS = 3, 40, 64, 4, 320, 300, 2

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def saved_activation_bytes(module: torch.nn.Module, run) -> int:
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and tensor.dim() and tensor.shape[0] in (B, B * T):
            seen[storage.data_ptr()] = storage.nbytes()  # views of one storage count once
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(seen.values())


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


@pytest.mark.parametrize("bf16", [False, True])
def test_block_estimate_is_what_autograd_saves(bf16):
    block = Block(GPTConfig(block_size=T, vocab_size=VOCAB, n_layer=LAYERS, n_head=HEADS, n_embd=D), 0.02)
    x = torch.randn(B, T, D, requires_grad=True)

    def run():
        with autocast(bf16):
            block(x)

    measured = saved_activation_bytes(block, run)
    assert measured == pytest.approx(block_activation_bytes(B * T, D, bf16), rel=0.03)


@pytest.mark.parametrize("bf16", [False, True])
def test_model_estimate_is_what_autograd_saves_plus_the_loss_backward(bf16):
    config = GPTConfig(
        block_size=T, vocab_size=VOCAB, real_vocab_size=REAL_VOCAB, n_layer=LAYERS, n_head=HEADS, n_embd=D
    )
    model = GPT(config)
    idx = torch.randint(0, REAL_VOCAB, (B, T))

    def run():
        with autocast(bf16):
            model(idx, idx)

    measured = saved_activation_bytes(model, run)
    shape = Shape("test", LAYERS, D, VOCAB, T, B, B * T)
    estimate = activation_bytes(shape, B, checkpointing=False, bf16=bf16)
    # The estimate adds what is not saved but alive at the loss's backward: 8 B T V of gradients (the
    # logits forward returns are dropped before backward: see test_the_trainer_keeps_what_the_estimate_assumes).
    not_saved = 8 * B * T * VOCAB
    assert measured == pytest.approx(estimate - not_saved, rel=0.03)


def test_parameter_count_is_the_models():
    shape = Shape("test", LAYERS, D, VOCAB, T, B, B * T)
    model = GPT(GPTConfig(block_size=T, vocab_size=VOCAB, n_layer=LAYERS, n_head=HEADS, n_embd=D))
    assert parameter_count(shape) == model.num_params(non_embedding=False)


def test_state_bytes_per_parameter():
    shape = Shape.from_preset("gpt2-350m")
    n = parameter_count(shape)
    single = rank_memory(shape, "ddp", 1, bf16=False)
    assert (single.parameters, single.gradients, single.optimizer, single.working) == (4 * n, 4 * n, 8 * n, 0)
    ddp = rank_memory(shape, "ddp", 8)
    assert ddp.state == 16 * n + 2 * n  # + bf16 autocast weight copies (DDP's buckets are the gradients)
    fsdp = rank_memory(shape, "fsdp", 8)
    assert fsdp.parameters + fsdp.gradients + fsdp.optimizer == pytest.approx(16 * n / 8, abs=3)
    assert 0 < fsdp.working < 4 * n  # two gathered blocks and the root group: a fraction of the model
    assert rank_memory(shape, "fsdp", 64).state < fsdp.state < ddp.state
    assert ddp.activations == fsdp.activations and ddp.activations_checkpointed < ddp.activations
    with pytest.raises(ValueError):
        rank_memory(shape, "zero", 8)


def test_micro_batch_is_capped_by_the_step_and_largest_batch_grows_with_sharding():
    shape = Shape.from_preset("gpt2-1558m")
    assert shape.micro_batch(1) == 8 and shape.micro_batch(64) == 8 and shape.micro_batch(128) == 4
    gpu = 79.1 * GIB
    ddp, fsdp = (largest_micro_batch(shape, s, 8, gpu, checkpointing=False) for s in ("ddp", "fsdp"))
    assert ddp >= shape.batch_size  # the preset's micro-batch fits by the estimate
    assert fsdp >= ddp
    # With activation checkpointing the activations shrink enough for the state to decide: sharding the
    # 26 GiB of state over 8 ranks doubles the micro-batch that fits.
    ddp_ac, fsdp_ac = (largest_micro_batch(shape, s, 8, gpu, checkpointing=True) for s in ("ddp", "fsdp"))
    assert ddp_ac > ddp and fsdp_ac >= 2 * ddp_ac
    assert largest_micro_batch(shape, "ddp", 1, 20 * GIB, checkpointing=True) == 0  # 26 GiB of state


def test_cli_prints_the_table(capsys):
    assert main(["--ranks", "1", "8", "--preset", "gpt2-124m", "gpt2-1558m"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| gpt2-")]
    assert len(rows) == 2 * 2 * 2
    assert rows[0].startswith("| gpt2-124m | 124M | 1 | DDP | 64 |")
    assert "| gpt2-1558m | 1558M | 8 | FSDP | 8 |" in out


def test_cli_refuses_bad_input_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "gpt.memory", "--preset", "gpt9"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "unknown preset 'gpt9'" in result.stderr


class Batches:
    def __init__(self, vocab: int):
        self.generator = torch.Generator().manual_seed(0)
        self.vocab = vocab

    def next_batch(self):
        tokens = torch.randint(0, self.vocab, (B, T + 1), generator=self.generator)
        return tokens[:, :-1], tokens[:, 1:]


def test_the_trainer_keeps_what_the_estimate_assumes(tmp_path):
    """gpt.train's step drops the logits before backward (the loss term has no logits in it), and its DDP
    wrapper keeps the gradients in the all-reduce buckets (no DDP term)."""
    import weakref

    import torch.distributed as dist

    import gpt.train as train
    from gpt.config import TrainConfig
    from gpt.runtime import Runtime

    alive_at_backward = []

    class Recording(GPT):
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            logits_ref = weakref.ref(logits)
            loss.register_hook(lambda grad: alive_at_backward.append(logits_ref() is not None))
            return logits, loss

    config = GPTConfig(
        block_size=T, vocab_size=VOCAB, real_vocab_size=REAL_VOCAB, n_layer=1, n_head=HEADS, n_embd=D
    )
    model = Recording(config)
    rt = Runtime(0, 0, 1, torch.device("cpu"), False, torch.get_num_threads(), distributed=False)
    optimizer = model.configure_optimizers()
    train.train_step(model, optimizer, Batches(REAL_VOCAB), 2, 1e-3, 1.0, rt, train.StopFlag())
    assert alive_at_backward == [False, False]  # one backward per micro-step, the logits already freed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = train.wrap_for_training(
            GPT(config), TrainConfig(), Runtime(**{**rt.__dict__, "distributed": True})
        )
        assert (
            isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) and wrapped.gradient_as_bucket_view
        )
    finally:
        dist.destroy_process_group()
