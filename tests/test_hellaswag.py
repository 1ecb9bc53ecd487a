"""gpt.hellaswag on the hand-written fixture tests/data/hellaswag_tiny.jsonl (HellaSwag's jsonl format)."""

from __future__ import annotations

import json
import os
import urllib.error
from pathlib import Path

import pytest
import torch

from gpt import hellaswag
from gpt.model import GPT, GPTConfig

FIXTURE = Path(__file__).parent / "data" / "hellaswag_tiny.jsonl"
REAL_VOCAB = 100


pytestmark = pytest.mark.usefixtures("single_torch_thread")


class ByteTokenizer:
    """A stand-in tokenizer for a 100-token model: one id per UTF-8 byte (mod 97), spaces kept as 32 % 97."""

    special_tokens = {"<|endoftext|>": 99}

    def encode_ordinary(self, text: str) -> list[int]:
        return [b % 97 for b in text.encode("utf-8")]


class CheatingModel(torch.nn.Module):
    """Assigns a high logit to the true next token in row `favored` only (every other row: uniform
    logits), so that row has the lowest mean ending loss. It reads the answer from its own input."""

    def __init__(self, choose_row):
        super().__init__()
        self.choose_row = choose_row  # tokens (4, T) -> the index of the row to favour

    def forward(self, tokens):
        logits = torch.zeros(tokens.size(0), tokens.size(1), REAL_VOCAB)
        favored = self.choose_row(tokens)
        nxt = tokens[favored, 1:]
        logits[favored, torch.arange(tokens.size(1) - 1), nxt] = 10.0
        return logits, None


def tiny_gpt(seed: int = 0, block_size: int = 256) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(
        block_size=block_size, vocab_size=128, real_vocab_size=REAL_VOCAB, n_layer=2, n_head=2, n_embd=32
    )
    return GPT(config).eval()


# ---------------------------------------------------------------------------------------------- loading


def test_load_fixture():
    examples = hellaswag.load_examples(FIXTURE)
    assert len(examples) == 10
    assert sorted({ex["label"] for ex in examples}) == [0, 1, 2, 3]
    assert all(len(ex["endings"]) == 4 for ex in examples)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"ctx": "a", "endings": ["1", "2", "3"], "label": 0}, "endings"),
        ({"ctx": "a", "endings": ["1", "2", "3", "4"], "label": 4}, "label"),
        ({"ctx": "a", "endings": ["1", "2", "3", "4"], "label": "0"}, "label"),
        ({"endings": ["1", "2", "3", "4"], "label": 0}, "ctx"),
        ([1, 2], "JSON object"),
    ],
)
def test_load_rejects_bad_rows_naming_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"ctx": "a", "endings": ["1", "2", "3", "4"], "label": 1})
    path.write_text(good + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=message) as err:
        hellaswag.load_examples(path)
    assert f"{path}:2" in str(err.value)


def test_load_rejects_invalid_json_and_empty_files(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: invalid JSON"):
        hellaswag.load_examples(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="no HellaSwag examples"):
        hellaswag.load_examples(path)


def test_offline_download_error_points_to_the_flag(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(hellaswag.urllib.request, "urlopen", offline)
    monkeypatch.setenv("HELLASWAG_CACHE", str(tmp_path))
    with pytest.raises(hellaswag.HellaSwagError, match="--hellaswag PATH"):
        hellaswag.load_examples(None, split="val")
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_cached_download_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HELLASWAG_CACHE", str(tmp_path))
    (tmp_path / "hellaswag_val.jsonl").write_bytes(FIXTURE.read_bytes())
    monkeypatch.setattr(hellaswag.urllib.request, "urlopen", None)  # would fail if called
    assert len(hellaswag.load_examples()) == 10


# -------------------------------------------------------------------------------------------- rendering


def test_render_example_rows_and_masks():
    tok = ByteTokenizer()
    example = hellaswag.load_examples(FIXTURE)[0]
    tokens, mask, label = hellaswag.render_example(example, tok)
    assert tokens.shape == mask.shape and tokens.shape[0] == 4 and label == example["label"]
    ctx = tok.encode_ordinary(example["ctx"])
    for i, ending in enumerate(example["endings"]):
        end = tok.encode_ordinary(" " + ending)
        n = len(ctx) + len(end)
        assert tokens[i, :n].tolist() == ctx + end
        assert mask[i, :n].tolist() == [0] * len(ctx) + [1] * len(end)
        assert not tokens[i, n:].any() and not mask[i, n:].any()  # right padding


def test_render_example_truncates_context_from_the_left():
    tok = ByteTokenizer()
    example = {"ctx": "abcdefghij", "endings": ["x", "yy", "zzz", "w"], "label": 0}
    tokens, mask, _ = hellaswag.render_example(example, tok, max_len=6)
    assert tokens.shape[1] <= 6
    # row 2: " zzz" is 4 tokens, so 2 context tokens ("ij") remain
    assert tokens[2].tolist() == tok.encode_ordinary("ij zzz")
    assert mask[2].tolist() == [0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="ending 2"):
        hellaswag.render_example(example, tok, max_len=4)


# ---------------------------------------------------------------------------------------------- scoring


def test_ending_losses_are_means_over_ending_tokens_only():
    torch.manual_seed(0)
    tokens = torch.randint(0, REAL_VOCAB, (4, 9))
    mask = torch.zeros(4, 9, dtype=torch.long)
    spans = [(5, 9), (6, 8), (4, 5), (3, 9)]  # row 1 has padding after position 8
    for row, (a, b) in enumerate(spans):
        mask[row, a:b] = 1
    logits = torch.randn(4, 9, REAL_VOCAB)
    losses = hellaswag.ending_losses(logits, tokens, mask)
    log_probs = torch.log_softmax(logits, -1)
    for row, (a, b) in enumerate(spans):
        expected = -torch.stack([log_probs[row, t - 1, tokens[row, t]] for t in range(a, b)]).mean()
        torch.testing.assert_close(losses[row], expected)
    # logits that predict context tokens or padding do not matter
    changed = logits.clone()
    changed[:, :2] += 5 * torch.randn(4, 2, REAL_VOCAB)
    changed[1, 7:] = 100.0
    torch.testing.assert_close(hellaswag.ending_losses(changed, tokens, mask), losses)


def test_mean_not_sum_decides():
    # Row 0: two ending tokens at loss ln(2) each (sum 2 ln 2, mean ln 2); row 1: one token at loss ln(3)
    # (sum and mean ln 3). The sum would pick row 1, the mean picks row 0.
    tokens = torch.tensor([[5, 1, 1], [5, 1, 0], [5, 2, 0], [5, 3, 0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0], [0, 1, 0], [0, 1, 0]])
    logits = torch.full((4, 3, REAL_VOCAB), -1e4)
    logits[0, :, 1] = 0.0
    logits[0, :, 2] = 0.0  # p(1) = 1/2 at both steps
    logits[1, 0, 1:4] = 0.0  # p(1) = 1/3
    logits[2, 0, 2:7] = 0.0  # p(2) = 1/5
    logits[3, 0, 3:10] = 0.0  # p(3) = 1/7
    losses = hellaswag.ending_losses(logits, tokens, mask)
    torch.testing.assert_close(losses[:2], torch.tensor([0.6931472, 1.0986123]))
    assert hellaswag.predict(logits, tokens, mask) == 0


@pytest.mark.parametrize("offset, expected", [(0, 10), (1, 0)])
def test_evaluate_picks_the_lowest_mean_loss(offset, expected):
    examples = hellaswag.load_examples(FIXTURE)
    tok = ByteTokenizer()
    # Route each example to the row that should win: the correct one (offset 0) or a wrong one (offset 1).
    first_token_to_favored = {}
    for ex in examples:
        tokens, _, label = hellaswag.render_example(ex, tok)
        first_token_to_favored[tuple(tokens[0, :12].tolist())] = (label + offset) % 4
    model = CheatingModel(lambda t: first_token_to_favored[tuple(t[0, :12].tolist())])
    correct, total = hellaswag.evaluate(model, examples, tok)
    assert (correct, total) == (expected, 10)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_cover_every_example_exactly_once(world_size):
    seen = [i for rank in range(world_size) for i in hellaswag.rank_indices(10, rank, world_size)]
    assert sorted(seen) == list(range(10))
    model = tiny_gpt()
    examples = hellaswag.load_examples(FIXTURE)
    tok = ByteTokenizer()
    per_rank = [
        hellaswag.evaluate(model, examples, tok, rank=r, world_size=world_size) for r in range(world_size)
    ]
    assert sum(total for _, total in per_rank) == 10
    assert sum(c for c, _ in per_rank) == hellaswag.evaluate(model, examples, tok)[0]
    with pytest.raises(ValueError, match="rank"):
        hellaswag.rank_indices(10, world_size, world_size)


def test_padding_does_not_change_the_losses():
    model = tiny_gpt()
    tok = ByteTokenizer()
    for example in hellaswag.load_examples(FIXTURE)[:3]:
        tokens, mask, _ = hellaswag.render_example(example, tok)
        with torch.no_grad():
            exact = hellaswag.ending_losses(model(tokens)[0], tokens, mask)
            width = hellaswag.padded_length(tokens.size(1), 64, None)
            padded_tokens = torch.nn.functional.pad(tokens, (0, width - tokens.size(1)))
            padded_mask = torch.nn.functional.pad(mask, (0, width - mask.size(1)))
            padded = hellaswag.ending_losses(model(padded_tokens)[0], padded_tokens, padded_mask)
        torch.testing.assert_close(padded, exact, atol=1e-5, rtol=1e-5)


def test_evaluate_with_limit_and_short_block():
    model = tiny_gpt(block_size=48)  # shorter than most rows: contexts get truncated from the left
    correct, total = hellaswag.evaluate(model, FIXTURE, ByteTokenizer(), limit=4)
    assert total == 4 and 0 <= correct <= 4


def test_evaluate_rejects_a_tokenizer_too_large_for_the_model():
    class WideTokenizer(ByteTokenizer):
        def encode_ordinary(self, text):
            return [b + 100 for b in text.encode()]

    with pytest.raises(ValueError, match="wrong --tokenizer"):
        hellaswag.evaluate(tiny_gpt(), FIXTURE, WideTokenizer())


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_on_a_tiny_model_dir(tmp_path, monkeypatch, capsys):
    import gpt.tokenizer

    model_dir = tmp_path / "hf"
    tiny_gpt().save_hf(model_dir)
    monkeypatch.setattr(gpt.tokenizer, "load_tokenizer", lambda spec: ByteTokenizer())
    assert hellaswag.main(["--model", str(model_dir), "--hellaswag", str(FIXTURE), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "hellaswag acc_norm" in out and "/10 =" in out


def test_cli_on_a_checkpoint_dir(tmp_path, monkeypatch, capsys):
    import dataclasses

    import gpt.tokenizer
    from gpt.checkpoint import save_checkpoint

    model = tiny_gpt()
    meta = {"step": 3, "model_config": dataclasses.asdict(model.config), "config": {"tokenizer": "fake-spec"}}
    save_checkpoint(tmp_path / "run", model, None, meta)
    asked = []
    monkeypatch.setattr(gpt.tokenizer, "load_tokenizer", lambda spec: asked.append(spec) or ByteTokenizer())
    argv = ["--model", str(tmp_path / "run"), "--hellaswag", str(FIXTURE), "--limit", "3", "--device", "cpu"]
    assert hellaswag.main(argv) == 0
    assert asked == ["fake-spec"]  # the checkpoint's tokenizer, found through the training output folder
    assert "/3 =" in capsys.readouterr().out


def test_cli_help_names_every_flag():
    text = hellaswag.build_parser().format_help()
    for flag in (
        "--model",
        "--hellaswag",
        "--split",
        "--tokenizer",
        "--device",
        "--dtype",
        "--limit",
        "--compile",
    ):
        assert flag in text


def gpt2_tokenizer_or_skip():
    """GPT-2's bpe_fast tokenizer, or a skip while the Rust extension is not built."""
    from gpt.tokenizer import load_tokenizer

    try:
        return load_tokenizer("gpt2")
    except ImportError as e:
        pytest.skip(f"bpe_fast not usable: {e}")


def test_cli_end_to_end_with_gpt2_tokenizer(tmp_path, capsys):
    """The real GPT-2 tokenizer (bpe_fast) on a tiny model with GPT-2's vocabulary, in-process."""
    tokenizer = gpt2_tokenizer_or_skip()
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(block_size=128, vocab_size=50304, real_vocab_size=50257, n_layer=1, n_head=2, n_embd=16)
    )
    model.save_hf(tmp_path / "hf")
    argv = ["--model", str(tmp_path / "hf"), "--hellaswag", str(FIXTURE), "--tokenizer", "gpt2"]
    assert hellaswag.main(argv + ["--device", "cpu", "--limit", "4"]) == 0
    printed = capsys.readouterr().out
    correct, total = hellaswag.evaluate(model.eval(), FIXTURE, tokenizer, limit=4)
    assert f"{correct}/{total} =" in printed and total == 4


@pytest.mark.skipif(
    not os.environ.get("GPT_TEST_COMPILE"), reason="set GPT_TEST_COMPILE=1 (about a minute on CPU)"
)
def test_compiled_model_scores_like_eager():
    import torch._dynamo

    torch._dynamo.reset()
    model = tiny_gpt()
    examples = hellaswag.load_examples(FIXTURE)
    tok = ByteTokenizer()
    compiled = torch.compile(model)
    assert hellaswag.evaluate(compiled, examples, tok) == hellaswag.evaluate(model, examples, tok)
    # the fixture's rows pad to 128 or 192 tokens: two shapes, hence at most two graphs
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2
