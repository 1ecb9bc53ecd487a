"""lora.data: Alpaca / plain formatting, label masking, padding, loading and splitting."""

import json

import pytest

pytest.importorskip("transformers")

from bpe_fast.cliutil import UserError  # noqa: E402
from lora import data as lora_data  # noqa: E402
from lora.data import IGNORE_INDEX  # noqa: E402
from lora.modeling import bundled_gpt2_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return bundled_gpt2_tokenizer(tmp_path_factory.mktemp("gpt2-tokenizer"))


def test_bundled_gpt2_tokenizer_is_gpt2(tokenizer):
    # The tokenizer written from encoder.json / vocab.bpe must be the real GPT-2 one, not an empty shell.
    assert len(tokenizer) == 50257
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.eos_token_id == 50256


@pytest.mark.parametrize("with_input", [True, False])
def test_alpaca_masks_prompt_and_labels_response_and_eos(tokenizer, with_input):
    row = {
        "instruction": "Name a colour.",
        "input": "Think of the sky." if with_input else "",
        "output": "Blue.",
    }
    example = lora_data.encode_alpaca(tokenizer, row, max_length=512)
    prompt = lora_data.alpaca_prompt(row["instruction"], row["input"])
    assert ("### Input:" in prompt) == with_input
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer("Blue.")["input_ids"]
    assert example.input_ids == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert example.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert example.labels[len(prompt_ids) :] == response_ids + [tokenizer.eos_token_id]


def test_collate_pads_with_eos_and_masks_padding(tokenizer):
    short = lora_data.encode_alpaca(tokenizer, {"instruction": "Hi", "input": "", "output": "Yo"}, 512)
    long = lora_data.encode_alpaca(
        tokenizer, {"instruction": "Hi", "input": "", "output": "A much longer answer here."}, 512
    )
    pad = lora_data.pad_token_id(tokenizer)
    assert pad == tokenizer.eos_token_id  # GPT-2 has no pad token: EOS pads, no embedding resize
    batch = lora_data.collate([short, long], pad)
    width = len(long.input_ids)
    assert batch["input_ids"].shape == (2, width)
    n = len(short.input_ids)
    assert batch["input_ids"][0, n:].tolist() == [pad] * (width - n)
    assert batch["labels"][0, n:].tolist() == [IGNORE_INDEX] * (width - n)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (width - n)
    # The response's EOS has the same id as padding but stays labelled and attended.
    assert batch["labels"][0, n - 1].item() == tokenizer.eos_token_id
    assert batch["labels"][1].tolist() == long.labels


def test_alpaca_truncation(tokenizer):
    row = {"instruction": "Say something.", "input": "", "output": "word " * 50}
    prompt_length = len(tokenizer(lora_data.alpaca_prompt(row["instruction"]))["input_ids"])
    cut = lora_data.encode_alpaca(tokenizer, row, max_length=prompt_length + 3)
    assert len(cut.input_ids) == len(cut.labels) == prompt_length + 3
    assert cut.labels[prompt_length:] != [IGNORE_INDEX] * 3
    # A prompt that fills max_length leaves nothing to train on: the row is dropped, and counted.
    assert lora_data.encode_alpaca(tokenizer, row, max_length=prompt_length) is None
    examples, dropped = lora_data.encode_rows(tokenizer, [row, row], "alpaca", prompt_length)
    assert (examples, dropped) == ([], 2)


def test_text_format_labels_equal_inputs(tokenizer):
    example = lora_data.encode_text(tokenizer, {"text": "A fine film, well acted."}, max_length=512)
    assert example.labels == example.input_ids == tokenizer("A fine film, well acted.")["input_ids"]
    assert lora_data.encode_text(tokenizer, {"text": "A"}, max_length=512) is None  # nothing to predict


def test_detect_format():
    assert lora_data.detect_format([{"instruction": "a", "input": "", "output": "b"}]) == "alpaca"
    assert lora_data.detect_format([{"text": "a", "label": 1}]) == "text"
    with pytest.raises(UserError, match="cannot tell the format"):
        lora_data.detect_format([{"question": "a"}], "x.jsonl")


def test_wrong_field_type_names_the_row(tokenizer):
    with pytest.raises(UserError, match="row 1 field 'output' is int"):
        lora_data.encode_rows(
            tokenizer, [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": 3}], "alpaca", 64
        )


def test_local_file_formats_agree(tmp_path):
    rows = [
        {"instruction": "Q1", "input": "", "output": "A1"},
        {"instruction": "Q2", "input": "x", "output": "A2"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}), encoding="utf-8")
    (tmp_path / "d.csv").write_text("instruction,input,output\nQ1,,A1\nQ2,x,A2\n", encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for suffix in ("jsonl", "json", "csv", "parquet"):
        loaded, source = lora_data.load_rows(str(tmp_path / f"d.{suffix}"))
        assert loaded == rows, suffix
        assert source.endswith(f"d.{suffix}")


def test_bad_local_files_fail_clearly(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        lora_data.load_rows(str(bad))
    (tmp_path / "d.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="unsupported file type"):
        lora_data.load_rows(str(tmp_path / "d.txt"))
    with pytest.raises(UserError, match="missing.jsonl: no such file.*alpaca-sample"):
        lora_data.load_rows(str(tmp_path / "missing.jsonl"))


def test_bundled_samples_and_offline_fallback(monkeypatch):
    rows, source = lora_data.load_rows("alpaca-sample")
    assert len(rows) == 2945 and "bundled" in source
    assert lora_data.detect_format(rows) == "alpaca"
    imdb, _ = lora_data.load_rows("imdb-sample")
    assert lora_data.detect_format(imdb) == "text"

    monkeypatch.setattr(lora_data, "hub_reachable", lambda timeout_s=3.0: False)
    notices = []
    fallback, source = lora_data.load_rows("alpaca", log=notices.append)
    assert fallback == rows
    assert "offline stand-in for tatsu-lab/alpaca" in source
    assert any("not available offline" in notice for notice in notices)


def test_split_is_seeded_disjoint_and_prefix_stable():
    rows = [{"text": str(i)} for i in range(100)]
    train, held = lora_data.split_rows(rows, eval_samples=10, max_samples=30, seed=3)
    assert len(train) == 30 and len(held) == 10
    assert not {r["text"] for r in train} & {r["text"] for r in held}
    assert lora_data.split_rows(rows, 10, 30, 3) == (train, held)
    # lora.evaluate relies on this: a smaller held-out count is a prefix of a larger one (same seed).
    _, fewer = lora_data.split_rows(rows, 4, None, 3)
    assert fewer == held[:4]
    assert lora_data.split_rows(rows, 10, 30, 4)[1] != held
    with pytest.raises(UserError, match="no training rows"):
        lora_data.split_rows(rows[:5], 5, None, 0)
