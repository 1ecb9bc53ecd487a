"""A vocab of one's own through the whole chain, each step a real command started from its own folder:
`bpe-fast train` (which adds <|endoftext|> by default) -> `gpt.prepare` -> `gpt.train` without
--tokenizer (it finds the vocab through the shards' manifest) -> `gpt.sample` -> `gpt.export`, whose
transformers folder tokenizes like the vocab and holds the trained weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bpe_fast
from conftest import CHILD_PYTHONPATH, corpus_slice

REPO = Path(__file__).resolve().parents[1]
VOCAB = 512
EOT = "<|endoftext|>"
TRAIN = [
    "--preset", "tiny-cpu", "--max-steps", "4", "--warmup-steps", "2", "--val-every", "2", "--val-steps", "2",
    "--sample-every", "2", "--sample-count", "1", "--sample-tokens", "8", "--sample-prompt", "ROMEO:",
    "--checkpoint-every", "0", "--no-tensorboard", "--device", "cpu", "--threads", "1",
]  # fmt: skip


def command(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    cwd.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_a_trained_vocab_goes_through_prepare_train_sample_and_export(tmp_path):
    corpus = tmp_path / "data" / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_text(corpus_slice("tinyshakespeare.txt", 200_000), encoding="utf-8")
    data = tmp_path / "data"
    command(
        "-m",
        "bpe_fast",
        "train",
        "corpus.txt",
        "--vocab",
        str(VOCAB),
        "-o",
        "vocab.json",
        "--no-progress",
        cwd=data,
    )
    tok = bpe_fast.load(data / "vocab.json")
    assert tok.vocab_size == VOCAB and tok.special_tokens[EOT] == VOCAB - 1  # added by default, the last id
    command(
        "-m", "gpt.prepare", "--files", "corpus.txt", "--doc-sep", r"\n\n", "--tokenizer", "vocab.json",
        "--out", "shards", "--val-fraction", "0.1", "--no-progress", cwd=data,
    )  # fmt: skip
    manifest = json.loads((data / "shards" / "manifest.json").read_text())
    assert manifest["tokenizer"]["spec"] == "../vocab.json"  # relative to the manifest, not to a cwd

    # Trained from another folder, with no --tokenizer: the manifest's vocab, found beside the manifest.
    run = tmp_path / "elsewhere" / "run"
    trained = command(
        "-m", "gpt.train", *TRAIN, "--data", str(data / "shards"), "--out", "run", cwd=run.parent
    )
    assert "sample 0: 'ROMEO:" in trained.stdout, trained.stdout[-2000:]
    meta = json.loads((run / "ckpt_0000004" / "meta.json").read_text())
    assert meta["tokenizer"]["spec"] == str((data / "vocab.json").resolve())
    assert meta["model_config"]["real_vocab_size"] == VOCAB == meta["model_config"]["vocab_size"]
    losses = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses[-1] < losses[0]

    # Sampled and exported from a third folder, by the checkpoint alone (it names its vocab).
    third = tmp_path / "third"
    sampled = command(
        "-m", "gpt.sample", "--checkpoint", str(run), "--prompt", "ROMEO:", "--num-samples", "1",
        "--max-new-tokens", "8", "--device", "cpu", cwd=third,
    )  # fmt: skip
    assert "ROMEO:" in sampled.stdout
    command("-m", "gpt.export", "--checkpoint", str(run), "--out", "hf", cwd=third)
    transformers = pytest.importorskip("transformers")
    hf_tok = transformers.AutoTokenizer.from_pretrained(third / "hf")
    text = corpus_slice("tinyshakespeare.txt", 2_000, start=300_000)
    assert hf_tok(text)["input_ids"] == tok.encode_ordinary(text)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(third / "hf").eval()
    assert hf_model.config.vocab_size == VOCAB and hf_model.config.eos_token_id == VOCAB - 1

    from gpt.checkpoint import load_model

    ours, _ = load_model(run / "ckpt_0000004")
    ids = torch.tensor([tok.encode_ordinary(text)[:64]])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, ours(ids)[0], atol=1e-4, rtol=1e-4)
