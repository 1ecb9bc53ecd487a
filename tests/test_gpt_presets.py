"""The GPT-2 medium/large/xl presets (gpt2-350m, gpt2-774m, gpt2-1558m): their shapes and GPT-3 Table 2.1
hyper-parameters, their parameter counts as HF counts them (computed on the meta device: no allocation),
and from_hf / save_hf parity at each preset's full width and head count with the depth cut to 2 blocks."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from gpt.config import TrainConfig, load_preset, parse_config, preset_names  # noqa: E402
from gpt.memory import Shape, parameter_count  # noqa: E402
from gpt.model import GPT, GPTConfig, padded_vocab_size  # noqa: E402

GPT2_VOCAB = 50257
# preset -> (n_layer, n_embd, n_head, max_lr from GPT-3 Table 2.1, parameters as HF counts them, micro-batch)
PRESETS = {
    "gpt2-350m": (24, 1024, 16, 3.0e-4, 354_823_168, 32),
    "gpt2-774m": (36, 1280, 20, 2.5e-4, 774_030_080, 16),
    "gpt2-1558m": (48, 1600, 25, 2.0e-4, 1_557_611_200, 8),
}

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def hf_config(n_layer: int, n_embd: int, n_head: int) -> GPT2Config:
    return GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=1024, vocab_size=GPT2_VOCAB)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_shape_and_schedule(name):
    n_layer, n_embd, n_head, lr, _, batch = PRESETS[name]
    assert name in preset_names()
    cfg = parse_config(["--preset", name])
    base = TrainConfig(**load_preset("gpt2-124m"))
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head) == (n_layer, n_embd, n_head)
    assert cfg.n_embd // cfg.n_head == 64  # GPT-2's head width at every size
    assert cfg.max_lr == lr and cfg.batch_size == batch
    assert cfg.seq_len == 1024 and cfg.vocab_size == padded_vocab_size(GPT2_VOCAB) == 50304
    assert cfg.total_batch_size == 2**19  # GPT-3's 0.5M-token batch
    for same in (
        "total_batch_size", "warmup_steps", "max_steps", "min_lr_ratio", "weight_decay", "beta1", "beta2",
        "eps", "grad_clip", "data", "hellaswag", "compile",
    ):  # fmt: skip
        assert getattr(cfg, same) == getattr(base, same), same
    # One optimizer step divides evenly for 1..64 ranks of B sequences (down to B=8 at 64 ranks).
    for world in (1, 2, 4, 8):
        assert cfg.total_batch_size % (cfg.batch_size * cfg.seq_len * world) == 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_matches_hf_on_the_meta_device(name):
    n_layer, n_embd, n_head, _, hf_count, _ = PRESETS[name]
    with torch.device("meta"):
        hf = GPT2LMHeadModel(hf_config(n_layer, n_embd, n_head))
        ours = GPT(
            GPTConfig(
                block_size=1024,
                vocab_size=50304,
                real_vocab_size=GPT2_VOCAB,
                n_layer=n_layer,
                n_head=n_head,
                n_embd=n_embd,
            )
        )
    assert sum(p.numel() for p in hf.parameters()) == hf_count  # parameters() counts the tied head once
    padded_rows = (50304 - GPT2_VOCAB) * n_embd
    assert ours.num_params(non_embedding=False) - padded_rows == hf_count
    assert parameter_count(Shape.from_preset(name)) == ours.num_params(non_embedding=False)


def random_hf(n_layer: int, n_embd: int, n_head: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(hf_config(n_layer, n_embd, n_head)).eval()
    with torch.no_grad():  # HF's constant biases and LayerNorm gains would leave them untested
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_from_hf_and_save_hf_parity_at_full_width(name, tmp_path):
    _, n_embd, n_head, _, _, _ = PRESETS[name]
    hf = random_hf(2, n_embd, n_head, seed=n_embd)
    model = GPT.from_hf(hf).eval()
    assert (model.config.n_embd, model.config.n_head, model.config.block_size) == (n_embd, n_head, 1024)
    assert model.config.vocab_size == 50304 and model.config.real_vocab_size == GPT2_VOCAB
    idx = torch.randint(0, GPT2_VOCAB, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(idx).logits
        torch.testing.assert_close(model(idx)[0], expected, atol=1e-4, rtol=0)
    model.save_hf(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["n_embd"], config["n_head"], config["n_positions"], config["vocab_size"]) == (
        n_embd,
        n_head,
        1024,
        GPT2_VOCAB,
    )
    loaded, info = GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    source = hf.state_dict()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, source[key]), key  # bit-exact round trip, the tied head included
