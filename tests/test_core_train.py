"""The Rust core's counting, training, splitting and validation, against plain-Python references."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpe_fast import _core
from bpe_fast.patterns import PATTERNS  # tiktoken's patterns, as the `regex` module (the judge) runs them
from conftest import examples

regex = pytest.importorskip("regex")

ALPHABET = [
    "a",
    "b",
    "Z",
    " ",
    "  ",
    "\n",
    "\r\n",
    "'s",
    "'",
    "/",
    ".",
    "1",
    "123",
    "曰",
    "，",
    "　",
    "\t",
    "é",
    "😀",
]
texts = st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join)


def naive_train(docs: list[str], pattern: str, num_merges: int, min_frequency: int = 1, max_len=None):
    """DESIGN.md section 3, literally."""
    chunks = Counter()
    for doc in docs:
        parts = [doc] if pattern == "raw" else regex.findall(PATTERNS[pattern], doc)
        chunks.update(p.encode() for p in parts if p)
    seqs = [(list(chunk), n) for chunk, n in chunks.items()]
    lengths = [1] * 256
    merges = []
    while len(merges) < num_merges:
        counts = Counter()
        for seq, n in seqs:
            for pair in zip(seq, seq[1:]):
                counts[pair] += n
        candidates = [
            (-c, pair)
            for pair, c in counts.items()
            if max_len is None or lengths[pair[0]] + lengths[pair[1]] <= max_len
        ]
        if not candidates:
            break
        neg_count, best = min(candidates)
        if -neg_count < max(min_frequency, 1):
            break
        new_id = 256 + len(merges)
        merges.append(best)
        lengths.append(lengths[best[0]] + lengths[best[1]])
        for k, (seq, n) in enumerate(seqs):
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[k] = (out, n)
    return merges


@settings(max_examples=examples(0.75))
@given(texts)
def test_split_equals_python_regex(text):
    for name, source in PATTERNS.items():
        assert _core.split(name, text) == regex.findall(source, text), name
    assert _core.split("raw", text) == ([text] if text else [])


@settings(max_examples=examples(0.6))
@given(
    st.lists(texts, min_size=1, max_size=5),
    st.sampled_from(["gpt2", "gpt4", "o200k", "raw"]),
    st.integers(1, 30),
    st.integers(0, 3),
    st.one_of(st.none(), st.integers(2, 6)),
)
def test_training_equals_naive(docs, pattern, num_merges, min_frequency, max_len):
    counter = _core.ChunkCounter(pattern, num_threads=1)
    counter.add_texts(docs)
    merges = counter.train(num_merges, min_frequency=min_frequency, max_token_length=max_len)
    assert merges == naive_train(docs, pattern, num_merges, min_frequency, max_len)


def test_long_runs_and_threads_are_deterministic():
    docs = ["a" * 3000, "ab" * 500 + " " * 100, "三国演义" * 200]
    expected = naive_train(docs, "raw", 40)
    for threads in (1, 2):
        counter = _core.ChunkCounter("raw", num_threads=threads)
        counter.add_texts(docs)
        assert counter.train(40) == expected


def test_file_and_texts_count_the_same(tmp_path):
    docs = ["The cat sat.\nOn the mat!", "曰：三国演义。\n第一回", "x y z\n\n"]
    path = tmp_path / "corpus.txt"
    path.write_text("<SEP>".join(docs), encoding="utf-8")
    from_file = _core.ChunkCounter("gpt2")
    from_file.add_file(str(path), doc_sep="<SEP>")
    from_texts = _core.ChunkCounter("gpt2")
    from_texts.add_texts(docs)
    assert from_file.num_chunks() == from_texts.num_chunks()
    assert from_file.total_bytes() == from_texts.total_bytes() == sum(len(d.encode()) for d in docs)
    assert from_file.train(50) == from_texts.train(50) == naive_train(docs, "gpt2", 50)


def test_file_errors_name_path_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello world\n" * 3 + b"\xff tail")
    counter = _core.ChunkCounter("gpt2")
    with pytest.raises(ValueError, match=r"bad\.txt.*offset 36"):
        counter.add_file(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        counter.add_file(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    counter = _core.ChunkCounter("gpt2")
    counter.add_file(str(empty))
    assert counter.num_chunks() == 0
    assert counter.train(10) == []


def test_progress_is_called_and_its_error_propagates():
    counter = _core.ChunkCounter("raw")
    counter.add_texts(["abcdefghij" * 500 + "".join(chr(0x4E00 + i) for i in range(600))])
    seen = []
    merges = counter.train(600, progress=seen.append)
    assert seen and seen[-1] == len(merges)

    def stop(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        counter.train(600, progress=stop)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="pattern"):
        _core.ChunkCounter("(unclosed")
    counter = _core.ChunkCounter("gpt2")
    with pytest.raises(ValueError, match="doc_sep"):
        counter.add_file(__file__, doc_sep="")
    with pytest.raises(ValueError):
        _core.split("(", "x")


BYTES = [(b, bytes([b])) for b in range(256)]


@pytest.mark.parametrize(
    ("tokens", "merges", "specials", "message"),
    [
        (BYTES[1:], [], [], "byte 00"),
        ([*BYTES, (256, b"a")], [], [], "token id 256"),
        ([*BYTES, (255, b"xy")], [], [], "duplicate id"),
        ([*BYTES, (256, b"")], [], [], "empty"),
        ([*BYTES, (256, b"ab")], [], [], "made by no merge"),
        ([*BYTES, (256, b"ab")], [(97, 99)], [], "not a token"),
        ([*BYTES, (256, b"ab")], [(97, 999)], [], "unknown token id 999"),
        ([*BYTES, (256, b"ab")], [(97, 98), (97, 98)], [], "merge 1"),
        ([*BYTES, (256, b"ab")], [(97, 98)], [("<s>", 256)], "already used"),
        ([*BYTES, (256, b"ab")], [(97, 98)], [("<s>", 300), ("<s>", 301)], "duplicate special"),
        ([*BYTES, (-1, b"ab")], [], [], "tokens"),
        ([*BYTES, (256, "ab")], [], [], "tokens"),
    ],
)
def test_constructor_validation_names_the_entry(tokens, merges, specials, message):
    with pytest.raises(ValueError, match=message):
        _core.CoreTokenizer(tokens, merges, specials, "gpt2")


def test_recover_merges_errors_name_the_token():
    with pytest.raises(ValueError, match=r"token id 256.*3 parts"):
        _core.recover_merges([*BYTES, (256, b"abc")])
    assert _core.recover_merges([*BYTES, (256, b"ab"), (257, b"abc")]) == [(97, 98), (256, 99)]


@settings(max_examples=examples(0.3))
@given(st.lists(texts, min_size=1, max_size=4), st.sampled_from(["gpt2", "raw"]), st.integers(1, 40))
def test_trained_vocab_encodes_roundtrips_and_recovers(docs, pattern, num_merges):
    counter = _core.ChunkCounter(pattern)
    counter.add_texts(docs)
    merges = counter.train(num_merges)
    table = [bytes([b]) for b in range(256)]
    for left, right in merges:
        table.append(table[left] + table[right])
    tokens = list(enumerate(table))
    assert _core.recover_merges(tokens) == merges
    tok = _core.CoreTokenizer(tokens, merges, [("<|endoftext|>", len(table))], pattern)
    for doc in docs:
        assert tok.decode_bytes(tok.encode_ordinary(doc)) == doc.encode()
