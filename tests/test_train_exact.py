"""Rust training must give exactly the reference's merges (DESIGN.md §3), whatever the settings or threads."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpe_fast
from bpe_fast import reference
from conftest import corpus_slice, examples, stable_text

pytestmark = pytest.mark.filterwarnings("ignore:training stopped")

CUSTOM_REGEX = r"\w+|\s+|[^\w\s]+"
GAPPY_REGEX = r"[a-z]+| ?\p{Han}"  # leaves capitals, digits, punctuation as text between matches
MIXED = (
    "POSTGRADUATE MANUAL OF PEKING UNIVERSITY\n\n研究生手册：博士研究生、硕士研究生的培养。\n\n"
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "It's 2023; they'll say 12345 and   spaces\t\ttabs, don't we?\r\n"
)


def assert_same_training(documents, vocab_size, **options):
    """Train with Rust (bpe_fast.train) and with the reference; the whole vocab must be identical."""
    ours = bpe_fast.train(documents, vocab_size, **options)
    doc_sep = options.pop("doc_sep", None)
    options.pop("num_threads", None)
    split_docs = [piece for d in documents for piece in (d.split(doc_sep) if doc_sep is not None else [d])]
    oracle = reference.train(split_docs, vocab_size, **options)
    assert ours.merges == oracle.merges()
    assert ours.tokens() == dict(oracle.tokens())
    assert ours.special_tokens == dict(oracle.special_tokens())
    return ours


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "o200k", "raw", CUSTOM_REGEX, GAPPY_REGEX])
@pytest.mark.parametrize("vocab_size", [256, 300, 520])
def test_every_pattern_and_size(pattern, vocab_size):
    assert_same_training([MIXED, MIXED[::-1]], vocab_size, pattern=pattern)


@pytest.mark.parametrize("pattern", ["gpt2", "raw"])
def test_long_runs_of_one_character(pattern):
    documents = ["a" * 1001 + " " + "b" * 777 + "\n" + "ab" * 300, " " * 500 + "aaaa" * 50, "\n" * 99]
    assert_same_training(documents, 330, pattern=pattern)


def test_doc_sep_splits_documents_and_is_dropped():
    tok = assert_same_training([MIXED], 400, pattern="raw", doc_sep="\n\n")
    assert tok.merges != bpe_fast.train([MIXED], 400, pattern="raw").merges


def test_files_with_doc_sep_match_the_reference(tmp_path):
    paths = []
    for index, text in enumerate([MIXED, corpus_slice("sanguo_yanyi.txt", 1200)]):
        path = tmp_path / f"doc{index}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    ours = bpe_fast.train(paths, 450, pattern="raw", doc_sep="\n")
    documents = [piece for p in paths for piece in p.read_text(encoding="utf-8").split("\n")]
    assert ours.merges == reference.train(documents, 450, pattern="raw").merges()
    single = bpe_fast.train(paths[1], 450, pattern="gpt2")  # one path given as str/PathLike
    assert (
        single.merges == reference.train([paths[1].read_text(encoding="utf-8")], 450, pattern="gpt2").merges()
    )


def test_special_tokens_min_frequency_and_max_token_length():
    specials = ["<|endoftext|>", "<|pad|>"]
    text = MIXED + "<|endoftext|>" + MIXED
    assert_same_training([text], 400, pattern="gpt2", special_tokens=specials)
    assert_same_training([text], 2000, pattern="raw", min_frequency=3)
    assert_same_training([text], 600, pattern="raw", max_token_length=3)
    assert_same_training(
        [text], 600, pattern="gpt4", min_frequency=2, max_token_length=4, special_tokens=specials
    )


@pytest.mark.parametrize(
    ("name", "chars", "pattern", "vocab_size"),
    [
        ("tinyshakespeare.txt", 30_000, "gpt2", 700),
        ("tinyshakespeare.txt", 4_000, "raw", 400),
        ("sanguo_yanyi.txt", 1_500, "raw", 450),
        ("sanguo_yanyi.txt", 6_000, "o200k", 500),
    ],
)
def test_corpus_slices(name, chars, pattern, vocab_size):
    assert_same_training([corpus_slice(name, chars, start=1000)], vocab_size, pattern=pattern)


ALPHABET = st.sampled_from(list("aab  \n\t.,'1你好é😀") + ["ab", "ll", "'s", "\r\n"])
DOCUMENTS = st.lists(st.lists(ALPHABET, max_size=60).map("".join), min_size=1, max_size=6).filter(
    lambda docs: any(docs)
)


@settings(max_examples=examples(1.1), suppress_health_check=[HealthCheck.too_slow])
@given(
    documents=DOCUMENTS,
    vocab_size=st.integers(256, 330),
    pattern=st.sampled_from(["gpt2", "gpt4", "o200k", "raw", CUSTOM_REGEX, GAPPY_REGEX]),
    min_frequency=st.integers(1, 3),
    max_token_length=st.one_of(st.none(), st.integers(1, 6)),
    special_count=st.integers(0, 2),
)
def test_hypothesis_corpora(documents, vocab_size, pattern, min_frequency, max_token_length, special_count):
    specials = ["<|endoftext|>", "<|x|>"][:special_count]
    vocab_size = max(vocab_size, 256 + special_count)
    assert_same_training(
        documents,
        vocab_size,
        pattern=pattern,
        special_tokens=specials,
        min_frequency=min_frequency,
        max_token_length=max_token_length,
    )


@given(
    text=st.one_of(stable_text(50), DOCUMENTS.map("".join)),
    pattern=st.sampled_from(["gpt2", "gpt4", "o200k", "raw", CUSTOM_REGEX, GAPPY_REGEX, r"x*", r"(a)b|c"]),
)
def test_rust_pre_tokenizer_splits_like_python_regex(text, pattern):
    from bpe_fast import _core
    from bpe_fast.patterns import canonical_pattern, split_text

    assert _core.split(canonical_pattern(pattern), text) == split_text(pattern, text)


@pytest.fixture(scope="module")
def assigned_characters() -> list[str]:
    """Every code point assigned in Python's Unicode database, minus the few classified differently."""
    import unicodedata

    from conftest import UNICODE_VERSION_SENSITIVE

    return [
        chr(c)
        for c in range(0x110000)
        if unicodedata.category(chr(c)) not in ("Cs", "Cn") and chr(c) not in UNICODE_VERSION_SENSITIVE
    ]


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "o200k"])
def test_rust_and_python_regex_agree_on_every_assigned_character(pattern, assigned_characters):
    from bpe_fast import _core
    from bpe_fast.patterns import split_text

    for separator in ("", " 1'"):
        text = separator.join(assigned_characters)
        assert _core.split(pattern, text) == split_text(pattern, text), separator


@pytest.mark.parametrize("pattern", ["gpt2", "raw"])
def test_one_and_two_threads_write_identical_files(tmp_path, pattern):
    text = corpus_slice("tinyshakespeare.txt", 40_000) + corpus_slice("sanguo_yanyi.txt", 5_000)
    documents = text.split("\n\n")
    saved = []
    for threads in (1, 2):
        path = tmp_path / f"vocab{threads}.json"
        bpe_fast.train(
            documents, 600, pattern=pattern, num_threads=threads, special_tokens=["<|endoftext|>"]
        ).save(path)
        saved.append(path.read_bytes())
    assert saved[0] == saved[1]
