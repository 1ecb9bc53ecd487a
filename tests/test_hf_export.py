"""The Hugging Face export of any bpe_fast vocab encodes exactly like bpe_fast, loaded either way:
`tokenizers.Tokenizer.from_file(tokenizer.json)` and `transformers.AutoTokenizer.from_pretrained(dir)`."""

from __future__ import annotations

import json
import random
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpe_fast
from bpe_fast import export
from bpe_fast.tokenizer import MAX_TOKEN_ID, Tokenizer
from conftest import corpus_slice, examples

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
CORPUS = corpus_slice("tinyshakespeare.txt", 12_000) + corpus_slice("sanguo_yanyi.txt", 3_000)
WHITESPACE = "  \n\n\t  x   \r\n \u3000 \u00a0y \u2028 z\t\t\n \n  \x0b\x0c end  "
SAMPLES = {
    "english": corpus_slice("tinyshakespeare.txt", 3_000, start=200_000) + " don't I'll 12345 3.14",
    "chinese": corpus_slice("sanguo_yanyi.txt", 800, start=40_000),
    "whitespace": WHITESPACE,
    "specials": f"a{ENDOFTEXT}b {PAD}{PAD} c\n{ENDOFTEXT}",
    "mixed": "Hello WORLD's café 😀 naïve ΑΒΓ αβγ Привет  مرحبا\r\n\r\n 你好，世界！" + ENDOFTEXT,
}


def train_quietly(documents, vocab_size, **options) -> Tokenizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bpe_fast.train(documents, vocab_size, **options)


def permuted(tok: Tokenizer, seed: int) -> Tokenizer:
    """The same tokenizer with its ids shuffled (byte ids anywhere, merges not in id order)."""
    tokens = tok.tokens()
    ids = sorted(tokens)
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    new_id = dict(zip(ids, shuffled))
    return Tokenizer.from_parts(
        {new_id[i]: value for i, value in tokens.items()},
        [(new_id[a], new_id[b]) for a, b in tok.merges],
        tok.special_tokens,
        tok.pattern,
    )


def _vocab(kind: str) -> Tokenizer:
    if kind == "gpt2-files":
        return Tokenizer.gpt2()  # GPT-2's byte ids are permuted
    if kind == "permuted":
        return permuted(train_quietly([CORPUS], 600, pattern="gpt4", special_tokens=[ENDOFTEXT, PAD]), seed=3)
    if kind == "sparse-special":
        tok = train_quietly([CORPUS], 500, pattern="gpt2")
        return Tokenizer.from_parts(tok.tokens(), tok.merges, {ENDOFTEXT: MAX_TOKEN_ID, PAD: 100_000}, "gpt2")
    documents = CORPUS.split("\n\n") if kind == "raw" else [CORPUS]
    return train_quietly(documents, 700, pattern=kind, special_tokens=[ENDOFTEXT, PAD])


VOCABS = ["gpt2", "gpt4", "o200k", "raw", "gpt2-files", "permuted", "sparse-special"]


@pytest.fixture(scope="module", params=VOCABS)
def exported(request, tmp_path_factory):
    tok = _vocab(request.param)
    folder = export.write_hf_tokenizer_dir(tok, tmp_path_factory.mktemp(request.param) / "hf")
    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(str(folder))
    return tok, hf, auto


def ours(tok: Tokenizer, text: str) -> list[int]:
    # HF always splits out added (special) tokens: our allowed_special="all".
    return tok.encode(text, allowed_special="all")


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_hf_ids_equal_ours(exported, sample):
    tok, hf, auto = exported
    text = SAMPLES[sample]  # GPT-2 has no <|pad|>: both sides then read it as ordinary text
    want = ours(tok, text)
    assert hf.encode(text).ids == want
    assert auto.encode(text) == want
    assert auto(text)["input_ids"] == want
    assert auto.decode(want) == tok.decode(want)


def test_auto_tokenizer_knows_the_special_tokens(exported):
    tok, _, auto = exported
    if ENDOFTEXT in tok.special_tokens:
        assert auto.eos_token == ENDOFTEXT and auto.eos_token_id == tok.special_tokens[ENDOFTEXT]
        assert auto.bos_token_id == tok.special_tokens[ENDOFTEXT]
    for text, token_id in tok.special_tokens.items():
        assert auto.convert_tokens_to_ids(text) == token_id


@settings(
    max_examples=examples(0.5), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.lists(
        st.sampled_from(
            [
                "a",
                "b",
                "ab",
                " ",
                "  ",
                "\n",
                "\r\n",
                "\t",
                "1",
                "234",
                "'s",
                "'LL",
                "你好",
                "世",
                "é",
                "😀",
                "A",
                "Hello",
                " world",
                ".",
                "!!",
                "\u3000",
                "\u00a0",
                ENDOFTEXT,
            ]
        ),
        max_size=40,
    ).map("".join)
)
def test_hf_ids_equal_ours_on_generated_text(exported, text):
    tok, hf, auto = exported
    want = ours(tok, text)
    assert hf.encode(text).ids == want
    assert auto.encode(text) == want


def test_custom_regex_is_refused_before_writing(tmp_path):
    tok = train_quietly([CORPUS], 300, pattern=r"[a-z]+| ")
    with pytest.raises(export.HFExportError, match="custom pattern"):
        export.write_hf_tokenizer_dir(tok, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="custom pattern"):
        export.save_hf(tok, tmp_path / "tokenizer.json")
    assert not (tmp_path / "tokenizer.json").exists()


def test_special_text_that_is_also_an_ordinary_token_is_refused(tmp_path):
    # With "raw", merges can build the special token's text as an ordinary token; HF would map both to one id.
    tok = train_quietly(
        [f"ab{ENDOFTEXT}cd{ENDOFTEXT}"] * 50, 256 + 20, pattern="raw", special_tokens=[ENDOFTEXT]
    )
    assert ENDOFTEXT.encode() in tok.tokens().values()
    with pytest.raises(export.HFExportError, match="same text as ordinary token"):
        export.write_hf_tokenizer_dir(tok, tmp_path / "out")


def test_config_files(tmp_path):
    tok = _vocab("gpt2")
    folder = export.write_hf_tokenizer_dir(tok, tmp_path / "hf", model_max_length=256)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["eos_token"] == ENDOFTEXT and config["model_max_length"] == 256
    assert config["additional_special_tokens"] == [PAD]
    assert config["clean_up_tokenization_spaces"] is False
    special_map = json.loads((folder / "special_tokens_map.json").read_text())
    assert special_map == {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "additional_special_tokens": [PAD]}
    # Other files in the folder (a model's) are left alone.
    (folder / "config.json").write_text("{}")
    export.write_hf_tokenizer_dir(tok, folder)
    assert (folder / "config.json").read_text() == "{}"
    no_specials = train_quietly([CORPUS], 300)
    config = export.hf_tokenizer_config(no_specials)
    assert "eos_token" not in config and "additional_special_tokens" not in config
