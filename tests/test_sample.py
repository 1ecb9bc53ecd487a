"""gpt.sample (sampling CLI and model loading) and gpt.export (checkpoint -> transformers directory)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gpt.tokenizer
from gpt import export, sample
from gpt.checkpoint import save_checkpoint
from gpt.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent
REAL_VOCAB = 100
EOT = 99


pytestmark = pytest.mark.usefixtures("single_torch_thread")


class ByteTokenizer:
    """A stand-in tokenizer for a 100-token model: one id per UTF-8 byte (mod 97); decode spells ids."""

    special_tokens = {"<|endoftext|>": EOT}

    def encode(self, text, allowed_special=frozenset()):
        ids = []
        for i, piece in enumerate(text.split("<|endoftext|>")):
            if i:
                if "<|endoftext|>" not in allowed_special:
                    raise ValueError("special token text not allowed")
                ids.append(EOT)
            ids.extend(b % 97 for b in piece.encode())
        return ids

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def tiny_gpt(seed: int = 0, real_vocab: int = REAL_VOCAB) -> GPT:
    torch.manual_seed(seed)
    vocab = -(-real_vocab // 64) * 64
    config = GPTConfig(
        block_size=64, vocab_size=vocab, real_vocab_size=real_vocab, n_layer=2, n_head=2, n_embd=32
    )
    return GPT(config).eval()


def write_checkpoint(out_dir: Path, model: GPT, tokenizer_spec=None, step: int = 7) -> Path:
    meta = {"step": step, "model_config": dataclasses.asdict(model.config)}
    if tokenizer_spec is not None:
        meta["config"] = {"tokenizer": tokenizer_spec}
    return save_checkpoint(out_dir, model, None, meta)


# ---------------------------------------------------------------------------------------------- sampling


def test_samples_are_reproducible_and_keep_the_prompt():
    model, tok = tiny_gpt(), ByteTokenizer()
    first = sample.sample(model, tok, prompt="Hi there", num_samples=3, max_new_tokens=10, seed=1)
    again = sample.sample(model, tok, prompt="Hi there", num_samples=3, max_new_tokens=10, seed=1)
    other = sample.sample(model, tok, prompt="Hi there", num_samples=3, max_new_tokens=10, seed=2)
    assert first == again and first != other and len(first) == 3
    prompt_ids = " ".join(str(i) for i in tok.encode("Hi there"))
    for text in first:
        assert text.startswith(prompt_ids + " ")
        assert len(text.split()) == len(tok.encode("Hi there")) + 10


def test_prompt_special_tokens_and_empty_prompt():
    tok = ByteTokenizer()
    assert sample.encode_prompt(tok, "") == [EOT]
    assert sample.encode_prompt(tok, "<|endoftext|>A") == [EOT, ord("A") % 97]

    class NoSpecials:
        special_tokens = {}

    with pytest.raises(ValueError, match="empty prompt"):
        sample.encode_prompt(NoSpecials(), "")


def test_prompt_outside_the_vocabulary_is_an_error():
    class Wide(ByteTokenizer):
        def encode(self, text, allowed_special=frozenset()):
            return [150]

    with pytest.raises(ValueError, match="wrong --tokenizer"):
        sample.sample(tiny_gpt(), Wide(), prompt="x")


def test_tokenizer_spec_from_meta():
    assert sample.tokenizer_spec_from_meta({"tokenizer": "vocab.json"}) == "vocab.json"
    assert sample.tokenizer_spec_from_meta({"tokenizer": {"spec": "gpt2"}}) == "gpt2"
    assert sample.tokenizer_spec_from_meta({"config": {"tokenizer": "v.json"}}) == "v.json"
    assert sample.tokenizer_spec_from_meta({"config": {"tokenizer": None}}) is None


# --------------------------------------------------------------------------------------------- loading


def test_load_model_for_inference_sources(tmp_path):
    model = tiny_gpt()
    ckpt = write_checkpoint(tmp_path / "run", model)
    model.save_hf(tmp_path / "hf")
    idx = torch.randint(0, REAL_VOCAB, (1, 9))
    with torch.no_grad():
        expected = model(idx)[0]
        for spec in (ckpt, tmp_path / "run", tmp_path / "hf"):  # checkpoint, output folder, HF folder
            loaded, meta = sample.load_model_for_inference(str(spec), "cpu")
            assert not loaded.training
            torch.testing.assert_close(loaded(idx)[0], expected, atol=1e-6, rtol=0)
            assert bool(meta) == (spec != tmp_path / "hf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a checkpoint"):
        sample.load_model_for_inference(str(tmp_path / "empty"), "cpu")
    with pytest.raises(ValueError, match="not a model directory"):
        sample.load_model_for_inference(str(tmp_path / "missing"), "cpu")


def test_cli_from_checkpoint_is_deterministic(tmp_path, monkeypatch, capsys):
    write_checkpoint(tmp_path / "run", tiny_gpt(), tokenizer_spec="fake-spec")
    asked = []
    monkeypatch.setattr(gpt.tokenizer, "load_tokenizer", lambda spec: asked.append(spec) or ByteTokenizer())
    argv = ["--checkpoint", str(tmp_path / "run"), "--prompt", "Once", "--num-samples", "2"]
    argv += ["--max-new-tokens", "5", "--seed", "3", "--device", "cpu"]
    assert sample.main(argv) == 0
    first = capsys.readouterr().out
    assert sample.main(argv) == 0
    assert capsys.readouterr().out == first
    assert asked == ["fake-spec", "fake-spec"]
    assert first.count("--- sample") == 2


def test_cli_from_hf_dir_with_explicit_tokenizer(tmp_path, monkeypatch, capsys):
    tiny_gpt().save_hf(tmp_path / "hf")
    asked = []
    monkeypatch.setattr(gpt.tokenizer, "load_tokenizer", lambda spec: asked.append(spec) or ByteTokenizer())
    argv = ["--hf", str(tmp_path / "hf"), "--tokenizer", "mine.json", "--top-k", "0", "--temperature", "0"]
    assert sample.main(argv + ["--num-samples", "1", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert asked == ["mine.json"]
    with pytest.raises(SystemExit, match="config.json"):
        sample.main(["--hf", str(tmp_path), "--device", "cpu"])


def test_cli_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "gpt.sample", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0
    for flag in ("--checkpoint", "--hf", "--prompt", "--num-samples", "--max-new-tokens", "--top-k"):
        assert flag in result.stdout
    for flag in ("--temperature", "--seed", "--tokenizer", "--device", "--compile"):
        assert flag in result.stdout


# ---------------------------------------------------------------------------------------------- export


def test_export_checkpoint_to_transformers(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    model = tiny_gpt()
    ckpt = write_checkpoint(tmp_path / "run", model, tokenizer_spec="fake-spec")
    monkeypatch.setattr(gpt.tokenizer, "load_tokenizer", lambda spec: ByteTokenizer())
    assert export.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["vocab_size"] == REAL_VOCAB and config["eos_token_id"] == EOT
    assert not (tmp_path / "hf" / "tokenizer.json").exists()  # only GPT-2's tokenizer is written
    loaded, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    idx = torch.randint(0, REAL_VOCAB, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(idx).logits, model(idx)[0], atol=1e-5, rtol=0)


def test_export_refuses_a_non_checkpoint(tmp_path):
    tiny_gpt().save_hf(tmp_path / "hf")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        export.export(tmp_path / "hf", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        export.export(tmp_path / "nope", tmp_path / "out")


def test_export_gpt2_writes_a_matching_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    model = tiny_gpt(real_vocab=50257)
    ckpt = write_checkpoint(tmp_path / "run", model, tokenizer_spec="gpt2")
    out = export.export(ckpt, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 50256
    tok = transformers.AutoTokenizer.from_pretrained(out)
    # GPT-2's well-known ids: "Hello" 15496, " world" 995, <|endoftext|> 50256
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 50256
    with pytest.raises(ValueError, match="real vocabulary"):
        export.export(write_checkpoint(tmp_path / "run2", tiny_gpt(), tokenizer_spec="gpt2"), tmp_path / "x")


@pytest.mark.skipif(
    not os.environ.get("GPT_TEST_COMPILE"), reason="set GPT_TEST_COMPILE=1 (about a minute on CPU)"
)
def test_sampling_with_a_compiled_model_matches_eager():
    import torch._dynamo

    torch._dynamo.reset()
    model, tok = tiny_gpt(), ByteTokenizer()
    eager = sample.sample(model, tok, prompt="abc", num_samples=2, max_new_tokens=8, seed=5)
    compiled = sample.sample(torch.compile(model), tok, prompt="abc", num_samples=2, max_new_tokens=8, seed=5)
    assert compiled == eager
