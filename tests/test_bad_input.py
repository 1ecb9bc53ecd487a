"""Bad input gets a clear Python exception that says what and where."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe_fast
import bpe_fast.patterns
from bpe_fast import _core
from bpe_fast.tokenizer import Tokenizer
from conftest import examples

ENDOFTEXT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.gpt2()


@pytest.mark.parametrize("bad", [50257, 10**6, 2**32, -1, 2**40])
def test_decode_unknown_id_names_it(gpt2, bad):
    with pytest.raises(ValueError, match=str(bad)):
        gpt2.decode([31373, bad])
    with pytest.raises(ValueError, match=str(bad)):
        gpt2.decode_bytes(iter([bad]))


def test_decode_numpy_out_of_range_is_not_wrapped(gpt2):
    with pytest.raises(ValueError, match="-5"):
        gpt2.decode(np.array([1, -5], dtype=np.int64))
    with pytest.raises(ValueError, match=str(2**32 + 1)):
        gpt2.decode(np.array([2**32 + 1], dtype=np.int64))
    with pytest.raises(ValueError, match="50300"):
        gpt2.decode(np.array([50300], dtype=np.uint32))
    with pytest.raises(TypeError, match="integer"):
        gpt2.decode(np.array([1.0]))


def test_decode_non_int_ids_is_rejected(gpt2):
    with pytest.raises((TypeError, ValueError), match="position 1"):
        gpt2.decode([1, "2"])
    with pytest.raises(TypeError):
        gpt2.token_bytes("7")


def test_decode_errors_policy(gpt2):
    broken = gpt2.encode("博")[:1]  # a lone first byte of a UTF-8 sequence
    assert "\ufffd" in gpt2.decode(broken)
    with pytest.raises(UnicodeDecodeError):
        gpt2.decode(broken, errors="strict")
    assert gpt2.decode_bytes(broken) == "博".encode()[: len(gpt2.decode_bytes(broken))]


def test_encode_non_str_is_a_type_error(gpt2):
    with pytest.raises(TypeError):
        gpt2.encode(b"bytes")
    with pytest.raises(TypeError):
        gpt2.encode_batch(["ok", 3])


def test_disallowed_special_text_names_token_and_position(gpt2):
    with pytest.raises(ValueError) as caught:
        gpt2.encode("abc" + ENDOFTEXT)
    assert ENDOFTEXT in str(caught.value) and "character 3" in str(caught.value)
    with pytest.raises(ValueError, match="allowed_special"):
        gpt2.encode("x", allowed_special="everything")


@settings(max_examples=examples(0.75))
@given(st.text())
def test_decode_of_encode_ordinary_is_identity(gpt2, text):
    assert gpt2.decode(gpt2.encode_ordinary(text)) == text


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    for data in (empty, str(empty), [empty], [], [""], iter([])):
        with pytest.raises(ValueError, match="no text to train on"):
            bpe_fast.train(data, 300)


def test_non_utf8_corpus_names_file_and_offset(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"hello w\xf6rld")
    with pytest.raises(ValueError) as caught:
        bpe_fast.train(bad, 300)
    assert "latin1.txt" in str(caught.value) and "7" in str(caught.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(OSError, match="missing.txt"):
        bpe_fast.train(tmp_path / "missing.txt", 300)
    with pytest.raises(ValueError, match="directory"):
        bpe_fast.train(tmp_path, 300)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"vocab_size": 255}, "vocab_size"),
        ({"vocab_size": 256, "special_tokens": [ENDOFTEXT]}, "257"),
        ({"vocab_size": "300"}, "vocab_size"),
        ({"vocab_size": 300, "pattern": "gpt9("}, "pattern"),
        ({"vocab_size": 300, "min_frequency": 0}, "min_frequency"),
        ({"vocab_size": 300, "max_token_length": 0}, "max_token_length"),
        ({"vocab_size": 300, "special_tokens": ENDOFTEXT}, "special_tokens"),
        ({"vocab_size": 300, "special_tokens": ["a", "a"]}, "twice"),
        ({"vocab_size": 300, "doc_sep": ""}, "doc_sep"),
        ({"vocab_size": 300, "num_threads": 0}, "num_threads"),
    ],
)
def test_training_argument_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        bpe_fast.train(["some text"], **kwargs)


def test_training_data_of_the_wrong_type():
    with pytest.raises(ValueError, match="bytes"):
        bpe_fast.train(b"abc", 300)
    with pytest.raises(ValueError, match="item 1"):
        bpe_fast.train(["ok", 5], 300)
    with pytest.raises(ValueError, match="training data"):
        bpe_fast.train(42, 300)


def test_from_parts_validation_names_the_entry():
    tokens = {i: bytes([i]) for i in range(255)}  # byte 0xff missing
    with pytest.raises(ValueError):
        Tokenizer.from_parts(tokens, [], {}, "raw")
    tokens = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="300"):
        Tokenizer.from_parts(tokens, [(97, 300)], {}, "raw")


def test_unrecoverable_bare_map_names_file_and_token(tmp_path):
    entries = {str(i): bytes([i]).hex() for i in range(256)}
    entries["256"] = b"abc".hex()  # no merges before it can leave exactly two parts
    path = tmp_path / "bare.json"
    path.write_text(str(entries).replace("'", '"'), encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        bpe_fast.load(path)
    assert "bare.json" in str(caught.value) and "256" in str(caught.value)


def test_bad_tiktoken_file(tmp_path):
    path = tmp_path / "bad.tiktoken"
    path.write_text("YQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ValueError, match=":2"):
        Tokenizer.from_tiktoken(path, pattern="gpt2")
    assert Path(path).exists()


@pytest.mark.parametrize("method", ["encode_batch", "encode_ordinary_batch", "encode_batch_flat"])
@pytest.mark.parametrize("one_text", ["ABC", b"ABC"])
def test_batch_methods_refuse_one_str(gpt2, method, one_text):
    # A str is an iterable of str: without the check "ABC" encoded as three texts, [[32], [33], [34]].
    with pytest.raises(TypeError, match=rf"{method}\(texts\) takes a list of str"):
        getattr(gpt2, method)(one_text)
    assert getattr(gpt2, method)(["ABC"]) is not None


# A pattern with nested repetitions: exponential backtracking on a run of "a" without a "b" after it.
RUNAWAY = r"(a|aa)+(?=b)|\s"


@pytest.mark.parametrize(
    "text",
    [
        "a" * 60,
        "hello world " * 50_000 + "a" * 60,
        "hello world " * 50_000 + "a" * 60 + "x" * 200_000,  # the runaway spot is followed by more text
    ],
    ids=["short", "after-long-text", "inside-long-text"],
)
def test_runaway_custom_pattern_fails_within_a_second_naming_it(tmp_path, text):
    # thread_time: the CPU this thread spent (the split runs on it), steady on a busy machine.
    started = time.thread_time()
    with pytest.raises(ValueError) as caught:
        _core.split(RUNAWAY, text)
    assert time.thread_time() - started < 1.0
    assert RUNAWAY in str(caught.value) and "runs away" in str(caught.value)
    # Training and encoding report it the same way.
    corpus = tmp_path / "runaway.txt"
    corpus.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="runs away"):
        bpe_fast.train(corpus, 300, pattern=RUNAWAY)
    tok = bpe_fast.train(["hello world"], 260, pattern=RUNAWAY)
    with pytest.raises(ValueError, match="runs away"):
        tok.encode(text)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"(?<=\n)ZZZ+", "the cat sat on the mat\n" * 400_000),  # never matches: one search scans 9 MB
        (r"\w+(?=[.!?])|\s+", ("word " * 100 + "end. ") * 1_000),  # lookahead, quadratic per word only
        (r"'s|\p{L}++|\p{N}++|\s++$|\s+(?!\S)|\s|[^\s\p{L}\p{N}]++", "x" + " " * 500_000 + "y" * 500_000),
    ],
    ids=["rare-lookbehind", "lookahead", "possessive-runs"],
)
def test_ordinary_custom_patterns_run_on_long_inputs(pattern, text):
    chunks = _core.split(pattern, text)
    assert "".join(chunks) == text
    assert chunks == bpe_fast.patterns.split_text(pattern, text)


def test_built_in_patterns_never_hit_the_regex_limits():
    # The built-in patterns run in fast_split, not the regex engine: long runs of anything are fine.
    for pattern in ("gpt2", "gpt4", "o200k"):
        for run in ("a", " ", "1", "!", "\n", "三", " \n"):
            text = "x" + run * 1_000_000 + "y"
            assert "".join(_core.split(pattern, text)) == text
