"""gpt.model: HF parity and round trip, init statistics, weight tying, optimizer groups, sampling, export.

Everything runs on CPU with tiny configs. The torch.compile test is opt-in (GPT_TEST_COMPILE=1): compiling
on CPU takes about a minute here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from gpt.model import GPT, IGNORE_INDEX, GPTConfig, generate, padded_vocab_size  # noqa: E402

REAL_VOCAB = 100
TINY = dict(block_size=64, n_layer=2, n_head=2, n_embd=32)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_config(**overrides) -> GPTConfig:
    fields = dict(TINY, vocab_size=padded_vocab_size(REAL_VOCAB), real_vocab_size=REAL_VOCAB)
    fields.update(overrides)
    return GPTConfig(**fields)


def random_hf_model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=REAL_VOCAB, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).eval()
    # HF initialises biases and LayerNorms to constants; randomise them so the parity test covers them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(mean=1.0 if name.endswith("ln_1.weight") else 0.0, std=0.1)
    return model


# ------------------------------------------------------------------------------------------------ config


def test_importing_the_model_loads_nothing_else_of_the_repo():
    # gpt.model depends on torch only: the tokenizer package, the HF conversion and transformers stay
    # out until something asks for them.
    script = (
        "import sys, gpt.model; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bpe_fast', 'gpt', 'transformers')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['gpt', 'gpt.model']"


def test_padded_vocab_size():
    assert padded_vocab_size(50257) == 50304
    assert padded_vocab_size(64) == 64
    assert padded_vocab_size(65) == 128
    with pytest.raises(ValueError):
        padded_vocab_size(0)


def test_config_defaults_and_validation():
    cfg = GPTConfig()
    assert (cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (1024, 50304, 12, 12, 768)
    assert cfg.real_vocab_size == 50304  # no padded rows unless said
    assert GPTConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(tiny_config())))) == tiny_config()
    with pytest.raises(ValueError, match="real_vocab_size"):
        GPTConfig(vocab_size=64, real_vocab_size=65)
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="unknown GPTConfig"):
        GPTConfig.from_dict({"n_layers": 3})


# ------------------------------------------------------------------------------------------------ parity


def test_from_hf_logits_match_hf():
    hf = random_hf_model()
    model = GPT.from_hf(hf).eval()
    assert model.config.vocab_size == 128 and model.config.real_vocab_size == REAL_VOCAB
    assert torch.count_nonzero(model.transformer.wte.weight[REAL_VOCAB:]) == 0  # padded rows are zero
    idx = torch.randint(0, REAL_VOCAB, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, _ = model(idx)
    assert logits.shape == expected.shape == (3, 64, REAL_VOCAB)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_from_hf_accepts_a_directory(tmp_path):
    hf = random_hf_model(seed=3)
    hf.save_pretrained(tmp_path)
    model = GPT.from_hf(tmp_path).eval()
    idx = torch.randint(0, REAL_VOCAB, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)


def test_from_hf_refuses_unsupported_variants():
    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=50, activation_function="relu"
    )
    with pytest.raises(ValueError, match="activation_function"):
        GPT.from_hf(GPT2LMHeadModel(config))


def test_save_hf_round_trip(tmp_path):
    hf = random_hf_model(seed=5)
    model = GPT.from_hf(hf).eval()
    model.save_hf(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["vocab_size"] == REAL_VOCAB
    loaded, info = GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded.eval()
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    idx = torch.randint(0, REAL_VOCAB, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx).logits, hf(idx).logits, atol=0, rtol=0)
        # and back again: HF -> ours -> HF -> ours keeps every weight
        again = GPT.from_hf(loaded).eval()
        torch.testing.assert_close(again(idx)[0], model(idx)[0], atol=0, rtol=0)


def test_fresh_model_exports_with_real_vocab(tmp_path):
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    model.save_hf(tmp_path)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert loaded.transformer.wte.weight.shape == (REAL_VOCAB, 32)
    idx = torch.randint(0, REAL_VOCAB, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx).logits, model(idx)[0], atol=1e-5, rtol=0)


def test_greedy_generation_matches_hf():
    hf = random_hf_model(seed=7)
    model = GPT.from_hf(hf).eval()
    prompt = torch.randint(0, REAL_VOCAB, (2, 6), generator=torch.Generator().manual_seed(2))
    expected = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=40,
        min_new_tokens=40,  # the random model may emit the eos id: keep going, as ours does
        pad_token_id=0,
    )
    ours = model.generate(prompt, 40, temperature=0)
    assert torch.equal(ours, expected)


# ------------------------------------------------------------------------------------ init, tying, groups


def test_init_statistics():
    torch.manual_seed(0)
    n_layer, width = 4, 256
    model = GPT(GPTConfig(block_size=64, vocab_size=512, n_layer=n_layer, n_head=4, n_embd=width))
    residual = 0.02 / math.sqrt(2 * n_layer)
    for block in model.transformer.h:
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            assert proj.weight.std().item() == pytest.approx(residual, rel=0.05)
            assert torch.count_nonzero(proj.bias) == 0
        for linear in (block.attn.c_attn, block.mlp.c_fc):
            assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
            assert torch.count_nonzero(linear.bias) == 0
        assert torch.all(block.ln_1.weight == 1) and torch.all(block.ln_1.bias == 0)
    for emb in (model.transformer.wte, model.transformer.wpe):
        assert emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert emb.weight.mean().abs().item() < 0.002


def test_weight_tying_shares_storage_and_survives_a_step():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2)
    idx = torch.randint(0, REAL_VOCAB, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    optimizer.step()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert sum(1 for p in model.parameters() if p is model.transformer.wte.weight) == 1


def test_decay_groups():
    model = GPT(tiny_config())
    decay, no_decay = model.decay_groups()
    assert all(p.dim() >= 2 for p in decay) and all(p.dim() < 2 for p in no_decay)
    # wte (= lm_head), wpe, and 4 matrices per layer; 8 vectors per layer + ln_f's two
    assert len(decay) == 2 + 4 * TINY["n_layer"]
    assert len(no_decay) == 8 * TINY["n_layer"] + 2
    assert sum(p.numel() for p in decay + no_decay) == model.num_params(non_embedding=False)
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95), eps=1e-8)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(decay), len(no_decay)]
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95) and optimizer.param_groups[0]["lr"] == 3e-4
    assert not optimizer.defaults.get("fused")  # fused only on CUDA


def test_num_params_and_flops():
    model = GPT(tiny_config(vocab_size=REAL_VOCAB))
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=REAL_VOCAB))
    assert model.num_params(non_embedding=False) == hf.num_parameters()
    non_embedding = hf.num_parameters() - 64 * 32  # minus the position embedding
    assert model.num_params() == non_embedding
    L, H, Q = 2, 2, 16
    assert model.flops_per_token() == 6 * non_embedding + 12 * L * H * Q * 64
    assert model.flops_per_token(seq_len=16) == 6 * non_embedding + 12 * L * H * Q * 16
    assert model.estimate_mfu(1000.0, 1e12) == pytest.approx(model.flops_per_token() * 1000.0 / 1e12)
    # GPT-2 124M: the well-known 124M parameters (124,439,808 with the 50257 vocab)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        full = GPT(GPTConfig(vocab_size=50257))
    assert full.num_params(non_embedding=False) == 124_439_808


# ------------------------------------------------------------------------------------------------ forward


def test_loss_is_mean_cross_entropy_with_ignore_index():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, REAL_VOCAB, (2, 10))
    targets = torch.randint(0, REAL_VOCAB, (2, 10))
    targets[0, :4] = IGNORE_INDEX
    logits, loss = model(idx, targets)
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)
    assert model(idx)[1] is None


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx = torch.randint(0, REAL_VOCAB, (2, 16))
    with torch.no_grad():
        reference, _ = model(idx)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    torch.testing.assert_close(logits.float(), reference, atol=0.05, rtol=0.05)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_forward_rejects_too_long_input():
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 65, dtype=torch.long))


# ------------------------------------------------------------------------------------------------ sampling


def test_sampling_is_deterministic_with_a_seed():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(0, REAL_VOCAB, (3, 5))

    def run(seed):
        return model.generate(prompt, 30, top_k=20, generator=torch.Generator().manual_seed(seed))

    first, second, other = run(11), run(11), run(12)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.equal(first[:, :5], prompt)


def test_top_k_is_respected():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(0, REAL_VOCAB, (4, 3))
    k = 3
    out = model.generate(prompt, 25, temperature=1.5, top_k=k, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = model(out[:, :-1])
    allowed = torch.topk(logits, k, dim=-1).indices  # (B, T-1, k): the k choices at every position
    produced = out[:, 1:].unsqueeze(-1)
    in_top_k = (allowed == produced).any(-1)[:, prompt.size(1) - 1 :]
    assert in_top_k.all()
    # top_k=1 is greedy decoding
    greedy = model.generate(prompt, 10, temperature=0)
    assert torch.equal(
        model.generate(prompt, 10, top_k=1, generator=torch.Generator().manual_seed(5)), greedy
    )


def test_padded_vocab_is_never_sampled():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    with torch.no_grad():
        # Through the tied head, huge padded rows would dominate every distribution if they were scored.
        model.transformer.wte.weight[REAL_VOCAB:] = 50.0
    prompt = torch.randint(0, REAL_VOCAB, (8, 2))
    out = model.generate(prompt, 40, temperature=2.0, generator=torch.Generator().manual_seed(0))
    assert out.max().item() < REAL_VOCAB
    assert model(prompt)[0].size(-1) == REAL_VOCAB

    class WideLogits(torch.nn.Module):  # a model that does return the padded columns
        def forward(self, idx):
            logits = torch.zeros(idx.size(0), idx.size(1), 128)
            logits[..., REAL_VOCAB:] = 100.0
            return logits, None

    out = generate(
        WideLogits(),
        prompt,
        20,
        block_size=64,
        real_vocab_size=REAL_VOCAB,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.max().item() < REAL_VOCAB


def test_generation_beyond_block_size_slides_the_window():
    torch.manual_seed(0)
    model = GPT(tiny_config(block_size=8)).eval()
    prompt = torch.randint(0, REAL_VOCAB, (1, 12))  # already longer than the block
    out = model.generate(prompt, 6, temperature=0)
    assert out.shape == (1, 18)
    tokens = prompt
    for _ in range(6):  # reference: crop to the last 8 tokens, greedy
        with torch.no_grad():
            logits, _ = model(tokens[:, -8:])
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, tokens)


def test_generate_argument_errors():
    model = GPT(tiny_config()).eval()
    prompt = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 3, top_k=0)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 3, temperature=-1)
    with pytest.raises(ValueError, match="idx"):
        model.generate(torch.zeros(3, dtype=torch.long), 3)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("GPT_TEST_COMPILE"), reason="set GPT_TEST_COMPILE=1 (about a minute on CPU)"
)
def test_compiled_model_generates_the_same_tokens():
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    compiled = torch.compile(model)
    prompt = torch.randint(0, REAL_VOCAB, (2, 5))
    eager = generate(model, prompt, 12, top_k=10, generator=torch.Generator().manual_seed(3))
    fast = generate(compiled, prompt, 12, top_k=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(eager, fast)
    # one graph for the whole generation: the window shape never changes
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    with torch.no_grad():
        torch.testing.assert_close(compiled(prompt)[0], model(prompt)[0], atol=1e-5, rtol=1e-5)
