"""gpt.sample: sampling, prompts, and the CLI (model loading is tested with the checkpoint code)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gpt.tokenizer
from bpe_fast.cliutil import UserError
from gpt import sample
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


# ------------------------------------------------------------------------------------------------- CLI


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
    with pytest.raises(UserError, match="config.json"):
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
