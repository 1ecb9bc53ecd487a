"""The pure-Python reference (the oracle) against hand-worked examples and against tiktoken's GPT-2."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpe_fast import reference
from bpe_fast.gpt2_files import read_gpt2_files
from bpe_fast.patterns import GPT2_PATTERN, canonical_pattern, split_text
from bpe_fast.tokenizer import bundled_gpt2_paths
from conftest import corpus_slice, examples, stable_text

A, B, SPACE = ord("a"), ord("b"), ord(" ")


def test_overlapping_pairs_count_and_ties_go_to_the_smallest_pair():
    # raw: "aaa abab aaa" -> (a,a) occurs 4 times (overlapping), wins merge 0.
    # Then [X a ' ' a b a b ' ' X a]: (X,a)=2 and (a,b)=2 tie -> the smaller pair (97, 98) first.
    tok = reference.train(["aaa abab aaa"], 258, pattern="raw")
    assert tok.merges() == [(A, A), (A, B)]


def test_replacement_is_left_to_right_non_overlapping():
    # "aaaaa": (a,a) x4 -> X X a; then (X,X)=1 vs (X,a)=1 -> (256, 97) < (256, 256) -> X then Y=(X,a).
    tok = reference.train(["aaaaa"], 258, pattern="raw")
    assert tok.merges() == [(A, A), (256, A)]
    assert tok.encode_ordinary("aaaaa") == [256, 257]


def test_chunks_keep_their_multiplicity_and_never_merge_across_chunks():
    # gpt2 splits "ab ab ab" into "ab", " ab", " ab": (a,b)=3, (' ',a)=2; no (b,' ') pair exists.
    tok = reference.train(["ab ab ab"], 300, pattern="gpt2")
    assert tok.merges()[0] == (A, B)
    assert (B, SPACE) not in tok.merges()


def test_documents_are_boundaries():
    one_document = reference.train(["ab", "ab"], 300, pattern="raw").merges()
    assert one_document == [(A, B)]
    joined = reference.train(["abab"], 300, pattern="raw").merges()
    assert (256, 256) in joined  # only possible when the documents are one sequence


def test_min_frequency_stops_training_early():
    # (a,b) occurs twice; after it, every pair occurs once, below min_frequency=2.
    tok = reference.train(["abab cd"], 1000, pattern="raw", min_frequency=2)
    assert tok.merges() == [(A, B)]


def test_max_token_length_excludes_long_candidates():
    tok = reference.train(["aaaaaaaa" * 10], 270, pattern="raw", max_token_length=2)
    tokens = dict(tok.tokens())
    assert all(len(value) <= 2 for value in tokens.values())
    assert tok.merges() == [(A, A)]  # nothing else fits in 2 bytes


def test_special_tokens_follow_the_last_merge_and_their_text_is_ordinary():
    tok = reference.train(["<|x|> hi <|x|>"], 262, pattern="gpt2", special_tokens=["<|x|>", "<|y|>"])
    merges = tok.merges()
    assert len(merges) == 4
    assert dict(tok.special_tokens()) == {"<|x|>": 260, "<|y|>": 261}
    assert tok.encode("a<|x|>b", ["<|x|>"]) == [ord("a"), 260, ord("b")]
    assert 260 not in tok.encode_ordinary("a<|x|>b")


def test_vocab_size_below_bytes_and_specials_is_rejected():
    with pytest.raises(ValueError, match="vocab_size"):
        reference.train(["abc"], 256, special_tokens=["<|x|>"])


def test_encoding_applies_only_listed_merges_lowest_rank_first():
    tokens = {i: bytes([i]) for i in range(256)}
    tokens.update({256: b"bc", 257: b"ab", 258: b"abc"})
    # merges: (b,c) rank 0, (a,b) rank 1, (ab, c) rank 2. "abc" -> [a, bc] and (a, bc) is not listed,
    # even though "abc" is a token.
    tok = reference.ReferenceTokenizer(tokens, [(B, ord("c")), (A, B), (257, ord("c"))], {}, "raw")
    assert tok.encode_ordinary("abc") == [A, 256]
    assert tok.encode_ordinary("abd") == [257, ord("d")]


def test_leftmost_wins_among_equal_ranks():
    tokens = {i: bytes([i]) for i in range(256)}
    tokens.update({256: b"aa"})
    tok = reference.ReferenceTokenizer(tokens, [(A, A)], {}, "raw")
    assert tok.encode_ordinary("aaa") == [256, A]


@settings(max_examples=examples(0.3))
@given(st.lists(st.text(alphabet="ab c\n", max_size=30), min_size=1, max_size=5), st.integers(256, 300))
def test_recover_merges_gives_back_trained_merges(documents, vocab_size):
    tok = reference.train(documents, vocab_size, pattern="raw")
    assert reference.recover_merges(tok.tokens()) == tok.merges()


def test_recover_merges_names_a_token_that_has_no_two_part_split():
    tokens = [(i, bytes([i])) for i in range(256)] + [(256, b"abc")]
    with pytest.raises(ValueError, match="256"):
        reference.recover_merges(tokens)


@pytest.fixture(scope="module")
def reference_gpt2():
    tokens, merges, specials = read_gpt2_files(*bundled_gpt2_paths())
    return reference.ReferenceTokenizer(tokens, merges, specials, "gpt2")


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    tiktoken_load = pytest.importorskip("tiktoken.load")
    import tiktoken

    encoder, merges = bundled_gpt2_paths()
    ranks = tiktoken_load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(merges), encoder_json_file=str(encoder)
    )
    return tiktoken.Encoding(
        "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )


@pytest.mark.parametrize("name", ["tinyshakespeare.txt", "sanguo_yanyi.txt"])
def test_reference_encodes_like_tiktoken_gpt2(name, reference_gpt2, tiktoken_gpt2):
    text = corpus_slice(name, 3000)
    assert reference_gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


@settings(max_examples=examples(0.5))
@given(stable_text(40))
def test_reference_gpt2_matches_tiktoken_on_any_text(reference_gpt2, tiktoken_gpt2, text):
    assert reference_gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)


@settings(max_examples=examples(0.5))
@given(st.text(max_size=60))
def test_gpt2_chunks_cover_the_text(text):
    # tiktoken's patterns match every character, so chunks concatenate back to the text.
    for pattern in ("gpt2", "gpt4", "o200k"):
        assert "".join(split_text(pattern, text)) == text


def test_split_uses_whole_matches_even_with_groups():
    assert split_text(r"(a)b|c", "abcab") == ["ab", "c", "ab"]


def test_split_keeps_text_between_matches_and_skips_empty_matches():
    assert split_text(r"[a-z]+", "Ab, cd!EF") == ["A", "b", ", ", "cd", "!EF"]
    assert split_text(r"x*", "abxxc") == ["ab", "xx", "c"]
    assert split_text("raw", "") == [] and split_text("gpt2", "") == []


def test_unknown_pattern_that_is_not_a_regex_is_a_value_error():
    with pytest.raises(ValueError, match="unknown pattern"):
        canonical_pattern("gpt5(")
    assert canonical_pattern("cl100k_base") == "gpt4"
