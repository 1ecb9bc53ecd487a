"""gpt.export: a training checkpoint becomes a transformers folder whose model and tokenizer load with
AutoModelForCausalLM / AutoTokenizer and generate, for GPT-2's tokenizer and for vocabs bpe_fast trained."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

import bpe_fast
from bpe_fast.cliutil import UserError
from bpe_fast.files import MARKER_NAME, OverwriteRefused
from conftest import corpus_slice
from gpt import export
from gpt.checkpoint import CheckpointError, save_checkpoint
from gpt.model import GPT, GPTConfig, generate, padded_vocab_size

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

EOT = "<|endoftext|>"
PROBE = (
    corpus_slice("tinyshakespeare.txt", 3_000, start=200_000)
    + corpus_slice("sanguo_yanyi.txt", 500, start=20_000)
    + f"  12345 don't {EOT}\n\n\t x 😀 \r\n"
)


def tiny_gpt(real_vocab: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(
        block_size=64, vocab_size=padded_vocab_size(real_vocab), real_vocab_size=real_vocab, n_layer=2,
        n_head=2, n_embd=32,
    )  # fmt: skip
    return GPT(config).eval()


def write_checkpoint(out_dir, model: GPT, tokenizer_spec=None, step: int = 7):
    meta = {"step": step, "model_config": dataclasses.asdict(model.config)}
    if tokenizer_spec is not None:
        meta["tokenizer"] = {"spec": str(tokenizer_spec), "vocab_size": model.config.real_vocab_size}
    return save_checkpoint(out_dir, model, None, meta)


@pytest.fixture(scope="module", params=["gpt2", "gpt4", "raw"])
def own_vocab(request, tmp_path_factory):
    """A vocab made like `bpe-fast train FILE --vocab 400 --special '<|endoftext|>'`, in each pattern."""
    text = corpus_slice("tinyshakespeare.txt", 40_000) + corpus_slice("sanguo_yanyi.txt", 4_000)
    documents = text.split("\n\n") if request.param == "raw" else [text]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = bpe_fast.train(documents, 400, pattern=request.param, special_tokens=[EOT])
    path = tmp_path_factory.mktemp(f"vocab-{request.param}") / "vocab.json"
    tok.save(path)
    return path, tok


def test_own_vocab_exports_a_working_transformers_folder(tmp_path, own_vocab):
    vocab_path, tok = own_vocab
    model = tiny_gpt(tok.vocab_size)
    ckpt = write_checkpoint(tmp_path / "run", model, tokenizer_spec=vocab_path)
    out = export.export(ckpt, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    # The same ids as bpe_fast (HF always splits out special tokens: our allowed_special="all").
    ids = tok.encode(PROBE, allowed_special="all")
    assert hf_tok.encode(PROBE) == ids
    assert hf_tok.decode(ids) == PROBE
    assert hf_tok.eos_token == EOT and hf_tok.eos_token_id == tok.special_tokens[EOT]
    assert (
        hf_model.config.eos_token_id == tok.special_tokens[EOT]
        and hf_model.config.vocab_size == tok.vocab_size
    )
    # generate() runs and continues exactly as our own greedy generation does.
    prompt = hf_tok("ROMEO:", return_tensors="pt")
    with torch.no_grad():
        theirs = hf_model.generate(
            **prompt, max_new_tokens=12, do_sample=False, pad_token_id=hf_tok.eos_token_id
        )
    ours = generate(model, prompt["input_ids"], 12, temperature=0)
    assert theirs.shape[1] > prompt["input_ids"].shape[1]
    assert theirs[0].tolist() == ours[0, : theirs.shape[1]].tolist()
    assert isinstance(hf_tok.decode(theirs[0]), str)


def test_gpt2_checkpoint_exports_gpt2s_tokenizer(tmp_path):
    model = tiny_gpt(50257)
    ckpt = write_checkpoint(tmp_path / "run", model, tokenizer_spec="gpt2")
    out = export.export(ckpt, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 50256
    tok = transformers.AutoTokenizer.from_pretrained(out)
    # GPT-2's well-known ids: "Hello" 15496, " world" 995, <|endoftext|> 50256
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.convert_tokens_to_ids(EOT) == 50256
    text = corpus_slice("tinyshakespeare.txt", 5_000)
    assert tok.encode(text) == bpe_fast.Tokenizer.gpt2().encode(text)
    loaded, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    idx = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(idx).logits, model(idx)[0], atol=1e-5, rtol=0)


def test_model_only_export(tmp_path):
    ckpt = write_checkpoint(tmp_path / "run", tiny_gpt(100))  # no tokenizer recorded, and none fits
    with pytest.raises(
        UserError, match="tokenizer gpt2 has 50257 tokens but the model's real vocabulary is 100"
    ):
        export.export(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    out = export.export(ckpt, tmp_path / "hf", with_tokenizer=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER_NAME, "config.json", "model.safetensors"])


def test_refusals(tmp_path, own_vocab):
    vocab_path, tok = own_vocab
    model = tiny_gpt(tok.vocab_size)
    ckpt = write_checkpoint(tmp_path / "run", model, tokenizer_spec=vocab_path)
    model.save_hf(tmp_path / "plain-hf")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        export.export(tmp_path / "plain-hf", tmp_path / "out")
    with pytest.raises(CheckpointError, match="no such directory"):
        export.export(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(UserError, match="tokenizer .*missing.json"):
        export.export(ckpt, tmp_path / "out", tokenizer=str(tmp_path / "missing.json"))
    # The output never overwrites the checkpoint it reads, nor a folder gpt.export did not make.
    with pytest.raises(OverwriteRefused, match="overlaps the input"):
        export.export(ckpt, ckpt, overwrite=True)
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "precious.tex").write_text("keep me")
    with pytest.raises(OverwriteRefused, match="will not delete it"):
        export.export(ckpt, tmp_path / "thesis", overwrite=True)
    assert (tmp_path / "thesis" / "precious.tex").read_text() == "keep me"
    # An earlier export is replaced with --overwrite only.
    export.export(ckpt, tmp_path / "out")
    with pytest.raises(OverwriteRefused, match="--overwrite"):
        export.export(ckpt, tmp_path / "out")
    assert export.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if "bpefast-tmp" in p.name]
