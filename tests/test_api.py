"""The public Python API: GPT-2 equals tiktoken, Rust encode equals the reference, special-token policy,
batch/numpy forms, properties, pickling, tiktoken rank files, training options."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpe_fast
from bpe_fast import export, reference
from bpe_fast.patterns import GPT2_PATTERN
from bpe_fast.tokenizer import Tokenizer, bundled_gpt2_paths
from conftest import CORPORA, corpus_slice, examples, stable_text, tiktoken_comparable

ENDOFTEXT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.gpt2()


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder, merges = bundled_gpt2_paths()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(merges), encoder_json_file=str(encoder))
    return tiktoken.Encoding(
        "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256}
    )


# ------------------------------------------------------------------------------------------------------
# GPT-2 == tiktoken
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tinyshakespeare.txt", "sanguo_yanyi.txt"])
def test_gpt2_equals_tiktoken_on_whole_corpora(gpt2, tiktoken_gpt2, name):
    text = (CORPORA / name).read_text(encoding="utf-8")
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.decode(gpt2.encode_ordinary(text)) == text


def test_gpt2_properties(gpt2):
    assert gpt2.vocab_size == 50257
    assert gpt2.special_tokens == {ENDOFTEXT: 50256}
    assert len(gpt2.merges) == 50000
    assert gpt2.pattern == "gpt2"
    assert gpt2.token_bytes(50256) == ENDOFTEXT.encode()
    assert gpt2.id_to_bytes(31373) == b"hello"
    assert "vocab_size=50257" in repr(gpt2)


def test_gpt2_special_tokens_match_tiktoken_policy(gpt2, tiktoken_gpt2):
    text = (
        corpus_slice("tinyshakespeare.txt", 2000)
        + ENDOFTEXT
        + corpus_slice("sanguo_yanyi.txt", 500)
        + ENDOFTEXT
    )
    for kwargs in [
        {"allowed_special": "all"},
        {"allowed_special": {ENDOFTEXT}},
        {"disallowed_special": ()},
        {"allowed_special": set(), "disallowed_special": set()},
    ]:
        assert gpt2.encode(text, **kwargs) == tiktoken_gpt2.encode(text, **kwargs), kwargs
    for kwargs in [{}, {"allowed_special": set()}, {"disallowed_special": {ENDOFTEXT}}]:
        with pytest.raises(ValueError) as ours:
            gpt2.encode(text, **kwargs)
        with pytest.raises(ValueError):
            tiktoken_gpt2.encode(text, **kwargs)
        assert ENDOFTEXT in str(ours.value) and "character 2000" in str(ours.value)
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    documents = text.split("\n")
    assert gpt2.encode_batch(documents, allowed_special="all") == tiktoken_gpt2.encode_batch(
        documents, allowed_special="all"
    )
    with pytest.raises(ValueError, match="of text"):
        gpt2.encode_batch(["fine", "not " + ENDOFTEXT])


@settings(max_examples=examples(0.75))
@given(st.text(max_size=80))
def test_gpt2_equals_tiktoken_on_any_text(gpt2, tiktoken_gpt2, text):
    text = tiktoken_comparable(text)
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.decode(gpt2.encode_ordinary(text)) == text


# ------------------------------------------------------------------------------------------------------
# Rust encode == reference encode on trained vocabs
# ------------------------------------------------------------------------------------------------------

TRAIN_TEXT = corpus_slice("tinyshakespeare.txt", 12_000) + corpus_slice("sanguo_yanyi.txt", 3_000)


@pytest.fixture(scope="module", params=["gpt2", "gpt4", "raw"])
def trained(request):
    documents = TRAIN_TEXT.split("\n\n") if request.param == "raw" else [TRAIN_TEXT]
    ours = bpe_fast.train(documents, 600, pattern=request.param, special_tokens=[ENDOFTEXT])
    oracle = reference.ReferenceTokenizer(ours.tokens(), ours.merges, ours.special_tokens, ours.pattern)
    return ours, oracle


@settings(max_examples=examples(0.6), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.lists(st.sampled_from(list(TRAIN_TEXT[:3000]) + ["é", "😀", "\r", ENDOFTEXT]), max_size=120).map(
        "".join
    )
)
def test_rust_encode_equals_reference(trained, text):
    ours, oracle = trained
    assert ours.encode_ordinary(text) == oracle.encode_ordinary(text)
    assert ours.encode(text, allowed_special="all") == oracle.encode(text, [ENDOFTEXT])
    assert ours.decode(ours.encode_ordinary(text)) == text


@settings(max_examples=examples(0.4), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=stable_text(60))
def test_rust_encode_equals_reference_on_arbitrary_unicode(trained, text):
    ours, oracle = trained
    assert ours.encode_ordinary(text) == oracle.encode_ordinary(text)


def test_corpus_slice_encodes_like_reference(trained):
    ours, oracle = trained
    text = corpus_slice("tinyshakespeare.txt", 2_000, start=200_000)
    assert ours.encode_ordinary(text) == oracle.encode_ordinary(text)


# ------------------------------------------------------------------------------------------------------
# batch, numpy, pickling, module-level forms
# ------------------------------------------------------------------------------------------------------


def test_encode_batch_and_numpy_forms(gpt2):
    texts = corpus_slice("tinyshakespeare.txt", 6000).split("\n") + ["", "博士论文"]
    expected = [gpt2.encode(t) for t in texts]
    assert gpt2.encode_batch(texts) == expected
    assert gpt2.encode_batch(texts, num_threads=1) == expected
    assert gpt2.encode_batch(iter(texts), num_threads=2) == expected
    assert gpt2.encode_ordinary_batch(texts) == expected
    array = gpt2.encode_to_numpy(texts[0])
    assert array.dtype == np.uint32 and array.tolist() == expected[0]
    for dtype in (np.uint16, np.int64, np.uint32):
        assert gpt2.decode(np.array(expected[0], dtype=dtype)) == texts[0]
    assert gpt2.decode(np.array([], dtype=np.int64)) == ""


def test_module_level_encode_decode(gpt2):
    ids = bpe_fast.encode(gpt2, "hello world")
    assert ids == [31373, 995]
    assert bpe_fast.decode(gpt2, ids) == "hello world"
    assert set(bpe_fast.PATTERNS) == {"gpt2", "gpt4", "o200k"}
    assert isinstance(bpe_fast.__version__, str)


def test_pickle_round_trip(trained):
    ours, _ = trained
    again = pickle.loads(pickle.dumps(ours))
    assert again.merges == ours.merges and again.special_tokens == ours.special_tokens
    assert again.encode_ordinary(TRAIN_TEXT[:500]) == ours.encode_ordinary(TRAIN_TEXT[:500])


def test_save_load_round_trip_and_pattern_override(tmp_path, trained):
    ours, _ = trained
    path = ours.save(tmp_path / "v.json")
    loaded = bpe_fast.load(path)
    assert loaded.merges == ours.merges and loaded.tokens() == ours.tokens()
    assert loaded.special_tokens == ours.special_tokens and loaded.pattern == ours.pattern
    assert loaded.to_json_text() == path.read_text()
    assert bpe_fast.load(path, pattern="o200k").pattern == "o200k"


def test_bare_map_round_trip_recovers_merges(tmp_path):
    documents = TRAIN_TEXT.split("\n\n")
    tok = bpe_fast.train(documents, 500, pattern="raw")
    path = tmp_path / "bare.json"
    tok.save(path, bare=True)
    loaded = bpe_fast.load(path)
    assert loaded.pattern == "raw" and loaded.merges == tok.merges
    assert loaded.encode(TRAIN_TEXT[:2000]) == tok.encode(TRAIN_TEXT[:2000])


def test_bare_save_warns_that_special_tokens_are_dropped(tmp_path, trained):
    ours, _ = trained
    with pytest.warns(UserWarning, match="special tokens"):
        ours.save(tmp_path / "bare.json", bare=True)


def test_gpt2_bare_map_recovers_gpt2_merges(tmp_path, gpt2):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = gpt2.save(tmp_path / "gpt2_bare.json", bare=True)
    loaded = bpe_fast.load(path, pattern="gpt2")
    assert loaded.merges == gpt2.merges


def test_from_tiktoken_rank_file(tmp_path, gpt2, tiktoken_gpt2):
    path = export.save_tiktoken(gpt2, tmp_path / "r50k_base.tiktoken")
    known = Tokenizer.from_tiktoken(path)  # a known name: pattern and specials default to tiktoken's
    assert known.pattern == "gpt2" and known.special_tokens == {ENDOFTEXT: 50256}
    assert known.merges == gpt2.merges
    other = path.rename(tmp_path / "mine.tiktoken")
    with pytest.raises(ValueError, match="pattern"):
        Tokenizer.from_tiktoken(other)
    explicit = Tokenizer.from_tiktoken(other, pattern="gpt2", special_tokens={})
    text = corpus_slice("tinyshakespeare.txt", 3000)
    assert explicit.encode(text) == tiktoken_gpt2.encode(text)


# ------------------------------------------------------------------------------------------------------
# training options
# ------------------------------------------------------------------------------------------------------


def test_training_stops_early_with_a_warning():
    with pytest.warns(UserWarning, match="stopped after"):
        tok = bpe_fast.train(["abab"], 1000, pattern="raw", special_tokens=[ENDOFTEXT])
    assert tok.merges == [(97, 98), (256, 256)]
    assert tok.special_tokens == {ENDOFTEXT: 258} and tok.vocab_size == 259


def test_training_from_a_generator_in_batches_matches_reference():
    # More documents than one batch handed to Rust, from a generator (never a list in memory).
    lines = corpus_slice("tinyshakespeare.txt", 60_000).split("\n")
    documents = (line for _ in range(3) for line in lines)
    tok = bpe_fast.train(documents, 400, pattern="gpt2")
    oracle = reference.train([line for _ in range(3) for line in lines], 400, pattern="gpt2")
    assert tok.merges == oracle.merges()


def test_progress_bar(capsys):
    bpe_fast.train([TRAIN_TEXT], 400, progress=True)
    assert "merges" in capsys.readouterr().err


def test_vocab_exactly_256_has_no_merges():
    tok = bpe_fast.train(["hello"], 256)
    assert tok.merges == [] and tok.vocab_size == 256
    assert tok.encode("hi") == [104, 105]


# ------------------------------------------------------------------------------------------------------
# goldens and vocab orders
# ------------------------------------------------------------------------------------------------------

# minbpe's own test (karpathy/minbpe, tests/test_tokenizer.py, the Wikipedia BPE example): training on
# "aaabdaaabac" with vocab 256 + 3 gives merges (a,a)->256, (256,a)->257, (257,b)->258 and the encoding
# [258, 100, 258, 97, 99].
MINBPE_TEXT = "aaabdaaabac"
MINBPE_MERGES = [(97, 97), (256, 97), (257, 98)]
MINBPE_IDS = [258, 100, 258, 97, 99]


def test_minbpe_aaabdaaabac_golden():
    tok = bpe_fast.train([MINBPE_TEXT], 256 + 3, pattern="raw")
    oracle = reference.train([MINBPE_TEXT], 256 + 3, pattern="raw")
    assert tok.encode(MINBPE_TEXT) == MINBPE_IDS == oracle.encode_ordinary(MINBPE_TEXT)
    assert tok.decode(MINBPE_IDS) == MINBPE_TEXT
    # After (a,a), the pairs (256,a) and (a,b) both occur twice. minbpe takes the one it saw first;
    # DESIGN.md §3 takes the smallest pair, (97, 98). The last merge then makes the same token: "aaab".
    assert tok.merges == oracle.merges() == [(97, 97), (97, 98), (256, 257)]
    minbpe_tokens = {i: bytes([i]) for i in range(256)}
    for rank, (left, right) in enumerate(MINBPE_MERGES):
        minbpe_tokens[256 + rank] = minbpe_tokens[left] + minbpe_tokens[right]
    assert tok.token_bytes(258) == minbpe_tokens[258] == b"aaab"
    assert tok.token_bytes(256) == minbpe_tokens[256] == b"aa"


@pytest.mark.parametrize(
    ("name", "pattern", "specials"),
    [
        ("cl100k_base", "gpt4", {ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|endofprompt|>": 100276}),
        ("o200k_base", "o200k", {ENDOFTEXT: 199999, "<|endofprompt|>": 200018}),
    ],
)
def test_tiktoken_rank_files_in_cl100k_and_o200k_layout_load(tmp_path, name, pattern, specials):
    # The real rank files are not in the repo: a small one in the same layout (ranks = ids, merges
    # recovered in rank order, special ids far above the ranks), under the name that selects the defaults.
    tiktoken = pytest.importorskip("tiktoken")
    small = bpe_fast.train([corpus_slice("tinyshakespeare.txt", 20_000)], 600, pattern=pattern)
    path = export.save_tiktoken(small, tmp_path / f"{name}.tiktoken")
    tok = Tokenizer.from_tiktoken(path)
    assert tok.pattern == pattern and tok.merges == small.merges
    assert {text: tok.special_tokens[text] for text in specials} == specials
    assert tok.vocab_size == max(tok.special_tokens.values()) + 1
    from tiktoken.load import load_tiktoken_bpe

    encoding = tiktoken.Encoding(
        name,
        pat_str=export.tiktoken_pattern(tok),
        mergeable_ranks=load_tiktoken_bpe(str(path)),
        special_tokens=tok.special_tokens,
    )
    text = corpus_slice("tinyshakespeare.txt", 5_000, start=100_000) + ENDOFTEXT + " 12345 你好"
    assert tok.encode(text, allowed_special="all") == encoding.encode(text, allowed_special="all")


def test_gpt2_files_are_in_bpe_order_and_a_reordered_copy_is_refused(gpt2):
    # Loading checks that each merge joins bytes or tokens of earlier merges; GPT-2's files comply.
    tokens = gpt2.tokens()
    id_of = {value: key for key, value in tokens.items()}
    made = set()
    for left, right in gpt2.merges:
        assert all(len(tokens[part]) == 1 or part in made for part in (left, right))
        made.add(id_of[tokens[left] + tokens[right]])
    # Moving a merge that uses a merged token ahead of the merge making that token is refused.
    merges = gpt2.merges
    late = next(rank for rank, (left, _) in enumerate(merges) if len(tokens[left]) > 1)
    reordered = [merges[late], *merges[:late], *merges[late + 1 :]]
    with pytest.raises(
        ValueError, match=rf"merge 0 \({merges[late][0]}, {merges[late][1]}\).*no earlier merge"
    ):
        Tokenizer.from_parts(tokens, reordered, gpt2.special_tokens, "gpt2")


def test_version_has_one_source():
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cargo = re.search(r'^version\s*=\s*"([^"]+)"', (repo / "Cargo.toml").read_text(), re.M).group(1)
    project = (repo / "pyproject.toml").read_text().split("[project]")[1].split("\n[")[0]
    assert 'dynamic = ["version"]' in project and not re.search(r"^version\s*=", project, re.M)
    assert bpe_fast.__version__ == cargo

    # A source checkout that was never installed reads Cargo.toml itself (no copy of the string). Run in a
    # child importing the source tree's package: the one imported here may be an installed wheel (CI).
    source_tree_without_metadata = (
        "from importlib import metadata\n"
        "def not_installed(name):\n"
        "    raise metadata.PackageNotFoundError(name)\n"
        "metadata.version = not_installed\n"
        "import bpe_fast\n"
        "print(bpe_fast.__version__)\n"
        "print(bpe_fast.__file__)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", source_tree_without_metadata],
        env={**os.environ, "PYTHONPATH": str(repo / "python")},
        capture_output=True,
        text=True,
        check=True,
    )
    version, package_file = child.stdout.split()
    assert Path(package_file).resolve().is_relative_to(repo / "python")
    assert version == cargo


def test_hypothesis_examples_come_from_the_environment(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    probe = "import conftest; from hypothesis import settings; print(settings().max_examples, conftest.examples(0.5))"
    env = {**os.environ, "BPE_FAST_HYPOTHESIS_EXAMPLES": "37"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tests,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["37", "18"]


def test_long_texts_encode_the_same_on_any_thread_count(tiktoken_gpt2):
    """A text of 256 KiB or more is cut into parts encoded in parallel; the cuts must not change any id
    (through the binding: encode, encode_ordinary and encode_to_numpy, with specials in the text)."""
    gpt2 = bpe_fast.Tokenizer.gpt2()
    english = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:200_000]
    chinese = (CORPORA / "sanguo_yanyi.txt").read_text(encoding="utf-8")[:60_000]
    text = english + "<|endoftext|>" + chinese + "   \n\n" + english[:50_000]
    assert len(text.encode("utf-8")) > 256 * 1024
    expected = tiktoken_gpt2.encode(text, allowed_special="all")
    for threads in (1, 2, 3, 8):
        assert gpt2.encode(text, allowed_special="all", num_threads=threads) == expected, threads
        assert gpt2.encode_to_numpy(text, allowed_special="all", num_threads=threads).tolist() == expected
    ordinary = tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.encode_ordinary(text, num_threads=2) == ordinary


def test_extension_path_names_the_compiled_extension_of_this_package():
    from importlib.machinery import EXTENSION_SUFFIXES
    from pathlib import Path

    path = bpe_fast.extension_path()
    assert path is not None and path.is_file()
    assert path.parent.resolve() == Path(bpe_fast.__file__).resolve().parent
    assert any(path.name.endswith(suffix) for suffix in EXTENSION_SUFFIXES)
