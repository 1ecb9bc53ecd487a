"""Exports must encode exactly like us: tiktoken.Encoding and rank files, the bare map. (The Hugging Face
export: test_hf_export.py.)"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpe_fast
from bpe_fast import export
from bpe_fast.tokenizer import Tokenizer
from conftest import corpus_slice

tiktoken = pytest.importorskip("tiktoken")
ENDOFTEXT = "<|endoftext|>"
CORPUS = corpus_slice("tinyshakespeare.txt", 15_000) + corpus_slice("sanguo_yanyi.txt", 3_000)
PROBE = (
    corpus_slice("tinyshakespeare.txt", 4_000, start=300_000)
    + corpus_slice("sanguo_yanyi.txt", 1_000, start=50_000)
    + "  12345 don't  \n\n\t x"
    + ENDOFTEXT
    + "y 😀 \r\n"
)


def train_quietly(documents, vocab_size, **options) -> Tokenizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bpe_fast.train(documents, vocab_size, **options)


@pytest.fixture(scope="module", params=["gpt2", "gpt4", "o200k", "raw"])
def trained(request) -> Tokenizer:
    documents = CORPUS.split("\n\n") if request.param == "raw" else [CORPUS]
    return train_quietly(documents, 700, pattern=request.param, special_tokens=[ENDOFTEXT])


def test_tiktoken_encoding_matches(trained):
    encoding = export.to_tiktoken(trained)
    assert encoding.encode(PROBE, allowed_special="all") == trained.encode(PROBE, allowed_special="all")
    assert encoding.encode_ordinary(PROBE) == trained.encode_ordinary(PROBE)
    assert encoding.decode_bytes(trained.encode_ordinary(PROBE)) == PROBE.encode()
    assert encoding.n_vocab == trained.vocab_size


def test_gpt2_exports_to_tiktoken_gpt2():
    gpt2 = Tokenizer.gpt2()
    encoding = export.to_tiktoken(gpt2, name="gpt2")
    text = corpus_slice("tinyshakespeare.txt", 50_000) + corpus_slice("sanguo_yanyi.txt", 10_000)
    assert encoding.encode(text) == gpt2.encode(text)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    documents=st.lists(
        st.lists(st.sampled_from(list("aabbc  d\n你好")), max_size=50).map("".join), min_size=1, max_size=4
    ),
    probe=st.lists(st.sampled_from(list("aabbc  d\n你好x")), max_size=40).map("".join),
    pattern=st.sampled_from(["gpt2", "raw"]),
    vocab_size=st.integers(257, 300),
)
def test_tiktoken_matches_on_random_vocabs(documents, probe, pattern, vocab_size):
    # tiktoken merges any pair whose concatenation is a token; we merge listed pairs only. For vocabs our
    # trainer makes these agree; this searches for a counterexample.
    if not "".join(documents):
        return
    tok = train_quietly(documents, vocab_size, pattern=pattern)
    encoding = export.to_tiktoken(tok)
    for text in [probe, *documents]:
        assert encoding.encode_ordinary(text) == tok.encode_ordinary(text)


def test_tiktoken_rank_file_round_trip(tmp_path, trained):
    path = export.save_tiktoken(trained, tmp_path / "mine.tiktoken")
    again = Tokenizer.from_tiktoken(path, pattern=trained.pattern, special_tokens=trained.special_tokens)
    assert again.merges == trained.merges
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(path))
    assert ranks == {value: i for i, value in trained.tokens().items()}


def test_export_refuses_vocabs_tiktoken_would_rank_differently():
    tokens = {i: bytes([i]) for i in range(256)}
    tokens.update({256: b"ab", 257: b"cd"})
    out_of_order = Tokenizer.from_parts(tokens, [(99, 100), (97, 98)], {}, "raw")  # rank 0 makes id 257
    with pytest.raises(ValueError, match="tiktoken"):
        export.to_tiktoken(out_of_order)


def test_custom_regex_with_gaps_exports_exactly_to_tiktoken():
    # The regex leaves capitals, digits, punctuation and CJK unmatched: we keep that text as chunks.
    # (The Hugging Face export refuses custom regexes: test_hf_export.py.)
    tok = train_quietly([CORPUS], 350, pattern=r"[a-z]+| ")
    assert tok.decode(tok.encode_ordinary(PROBE)) == PROBE
    assert export.to_tiktoken(tok).encode_ordinary(PROBE) == tok.encode_ordinary(PROBE)


def test_export_formats_write_loadable_files(tmp_path, trained):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export.EXPORT_FORMATS["bare"](trained, tmp_path / "bare.json")
    bare = bpe_fast.load(tmp_path / "bare.json", pattern=trained.pattern)
    assert bare.merges == trained.merges
    assert set(export.EXPORT_FORMATS) == {"bare", "tiktoken", "hf"}
