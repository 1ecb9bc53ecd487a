"""The atom path of the encoder (rust/src/char_atoms.rs): chunks holding CJK, kana, Hangul or Cyrillic start BPE from
whole-character tokens and are cut between characters no token joins. Checked against tiktoken and the
pure-Python reference with vocabularies trained on the bundled Chinese corpus: one under o200k's pattern, and
one whose chunks are whole lines, where merges join bytes across character boundaries early and leave many
tokens that hold part of a character (the case the atoms' rules guard against)."""

from __future__ import annotations

import collections

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpe_fast
from bpe_fast import export, reference
from conftest import corpus_slice, examples, tiktoken_comparable

tiktoken = pytest.importorskip("tiktoken")
from tiktoken.load import load_tiktoken_bpe  # noqa: E402

LINES = r"[^\n]+|\n"
CORPUS = corpus_slice("sanguo_yanyi.txt", 60_000)
# The corpus's most frequent characters: neighbours that head and tail tokens are made of.
FREQUENT = [c for c, _ in collections.Counter(CORPUS).most_common(40) if not c.isspace()]


@pytest.fixture(scope="module", params=["o200k", LINES])
def chinese(request, tmp_path_factory):
    tok = bpe_fast.train([CORPUS], 2_000, pattern=request.param)
    path = export.save_tiktoken(tok, tmp_path_factory.mktemp("atoms") / "zh.tiktoken")
    encoding = tiktoken.Encoding(
        "zh",
        pat_str=export.tiktoken_pattern(tok),
        mergeable_ranks=load_tiktoken_bpe(str(path)),
        special_tokens={},
    )
    oracle = reference.ReferenceTokenizer(tok.tokens(), tok.merges, tok.special_tokens, tok.pattern)
    return tok, encoding, oracle


def partial_character_tokens(tok) -> int:
    """Tokens that start with a continuation byte or end inside a character."""
    count = 0
    for token_id in range(256, tok.vocab_size):
        data = tok.token_bytes(token_id)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            count += 1
    return count


def test_the_vocabularies_hold_what_the_atom_path_needs(chinese):
    tok, _, oracle = chinese
    # The atom path is taken only with at least 300 atoms of three bytes (MIN_THREE_BYTE_ATOMS): tokens
    # spelling one such character that BPE of their own bytes gives back.
    atoms = [
        i
        for i in range(256, tok.vocab_size)
        if len(tok.token_bytes(i)) == 3
        and len(tok.decode([i])) == 1
        and oracle.encode_ordinary(tok.decode([i])) == [i]
    ]
    assert len(atoms) >= 300 + 100
    assert partial_character_tokens(tok) > 10


def test_every_cyrillic_cjk_kana_and_hangul_code_point_equals_tiktoken(chinese):
    tok, encoding, _ = chinese
    code_points = [
        chr(c)
        for c in [
            *range(0x400, 0x530),
            *range(0x3000, 0xA000),
            *range(0xAC00, 0xD7A4),
            *range(0xF900, 0xFFFE),
        ]
    ]
    alone = tiktoken_comparable("".join(code_points))
    assert tok.encode_ordinary(alone) == encoding.encode_ordinary(alone)
    # Each one between frequent characters, so that tokens holding part of it and part of a neighbour can apply.
    framed = tiktoken_comparable(
        "".join(
            f"{FREQUENT[i % len(FREQUENT)]}{c}{FREQUENT[(i * 7 + 3) % len(FREQUENT)]}"
            for i, c in enumerate(code_points)
        )
    )
    assert tok.encode_ordinary(framed) == encoding.encode_ordinary(framed)


def test_unseen_corpus_text_equals_tiktoken_and_decodes_back(chinese):
    tok, encoding, _ = chinese
    text = corpus_slice("sanguo_yanyi.txt", 100_000, start=200_000)
    ids = tok.encode_ordinary(text)
    assert ids == encoding.encode_ordinary(text)
    assert tok.decode(ids) == text


# Frequent characters, rarer CJK, kana, Hangul, fullwidth punctuation, Cyrillic, a two-byte letter, ASCII.
ALPHABET = st.sampled_from(FREQUENT + list("曹操刘备关羽張飛あいうカタ한국어，。「」！приветé a1\n"))


@settings(
    max_examples=examples(1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=st.text(alphabet=ALPHABET, max_size=120))
def test_cjk_text_equals_tiktoken_and_the_reference(chinese, text):
    tok, encoding, oracle = chinese
    ids = tok.encode_ordinary(text)
    assert ids == encoding.encode_ordinary(text)
    assert ids == oracle.encode_ordinary(text)
