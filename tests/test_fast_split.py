"""The Rust pre-tokenizers for "gpt2", "gpt4" and "o200k" against the judge: Python's `regex` module
running tiktoken's own pattern strings (DESIGN.md section 3).

The Rust core splits the built-in patterns with hand-written splitters (rust/src/fast_split.rs) whose
Unicode classes were generated from `regex` itself; these tests check that every chunk list equals
`regex.findall(pattern, text)` on random text biased towards the patterns' corners, on every code point,
and on the bundled corpora.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import examples

core = pytest.importorskip("bpe_fast._core", reason="bpe_fast's Rust extension is not built")
if not hasattr(core, "split"):
    pytest.skip("bpe_fast._core has no split(pattern, text) yet", allow_module_level=True)

CORPORA = Path(__file__).resolve().parent.parent / "python" / "bpe_fast" / "samples" / "corpora"

# GPT-2's pattern as published in GPT-2's encoder.py; tiktoken spells the same language differently
# (possessive quantifiers, `\s++$`), and both spellings must give our chunks.
GPT2_ORIGINAL = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def tiktoken_patterns() -> dict[str, str]:
    """tiktoken's pattern strings, read from its source (its constructors would download rank files)."""
    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    with (
        mock.patch.object(openai_public, "load_tiktoken_bpe", return_value={}),
        mock.patch.object(openai_public, "data_gym_to_mergeable_bpe_ranks", return_value={}),
    ):
        return {
            "gpt2": openai_public.gpt2()["pat_str"],
            "gpt4": openai_public.cl100k_base()["pat_str"],
            "o200k": openai_public.o200k_base()["pat_str"],
        }


JUDGES: dict[str, list[regex.Pattern]] = {
    name: [regex.compile(source)] for name, source in tiktoken_patterns().items()
}
JUDGES["gpt2"].append(regex.compile(GPT2_ORIGINAL))
NAMES = sorted(JUDGES)


def assert_same_as_judge(name: str, text: str, label: str) -> None:
    ours = core.split(name, text)
    assert "".join(ours) == text, f"{name}: chunks of {label} do not concatenate to the text"
    for judge in JUDGES[name]:
        expected = judge.findall(text)
        if ours != expected:
            at = next(
                (i for i, (a, b) in enumerate(zip(ours, expected)) if a != b), min(len(ours), len(expected))
            )
            pytest.fail(
                f"{name} differs from /{judge.pattern}/ on {label} at chunk {at}: "
                f"ours {ours[at : at + 3]!r}, regex {expected[at : at + 3]!r}"
            )


# Characters and fragments around which the three patterns behave differently: ASCII and Unicode
# spaces, \r\n, apostrophes and (case-insensitive) contractions including U+017F (long s, which (?i)
# matches to "s"), letters of each case class (Lu Ll Lt Lm Lo), combining marks (Mn Mc Me), numbers
# (Nd Nl No), emoji and joiners, CJK and its punctuation, and characters newer than older Unicode tables.
TRICKY = [
    *" \t\n\r'/aAsStTlLvVeErRdDmMzZ019.,!?-_\"#()\x00\x7f",
    *["\u00a0", "\u3000", "\u0085", "\u1680", "\u2000", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f"],
    *["\x0b", "\x0c", "\x1c", "\u200b", "\ufeff"],
    *[
        "é",
        "ß",
        "Ω",
        "ω",
        "Ж",
        "ж",
        "ǅ",
        "ǈ",
        "ʰ",
        "ˇ",
        "ー",
        "中",
        "文",
        "あ",
        "ア",
        "한",
        "ا",
        "א",
        "क",
        "ि",
    ],
    *["\u0301", "\u20dd", "\u0903", "\ufe0f", "ſ", "K", "İ", "ı", "ŉ", "\U0001d400", "\U000e0100"],
    *["٣", "１", "Ⅻ", "²", "½", "〇", "😀", "👍", "\u200d", "€", "—", "“", "’", "、", "。", "，"],
    *["\u0295", "\u0c5c", "\u1acf", "\U000323b0", "\U0003d000"],
    *["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'RE", "'Ll", "'ſ", "\r\n", " \n", "  ", " \r\n "],
    *["don't", "HELLO", "Hello", "hELLO", "123456", "/\n", "e\u0301", "\u0301A"],
]


def tricky_text() -> st.SearchStrategy[str]:
    # Lone surrogates cannot cross into Rust (str must be valid UTF-8), so they are left out here;
    # test_bad_input covers how they are rejected.
    any_char = st.characters(blacklist_categories=("Cs",))
    return st.lists(st.one_of(st.sampled_from(TRICKY), any_char), max_size=40).map("".join)


@pytest.mark.parametrize("name", NAMES)
def test_random_text_matches_regex(name: str) -> None:
    @settings(max_examples=examples(2), suppress_health_check=[HealthCheck.too_slow])
    @given(tricky_text())
    def check(text: str) -> None:
        assert_same_as_judge(name, text, repr(text))

    check()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "   ",
        "a  ",
        "a \n",
        "a\n\n b",
        "a \r\n  b",
        "x \n \n  y",
        "I'll've we'RE THEY'LL 'S 'ſ 'Ll 'ss ''s '' 's' don't DON'T",
        "1234567 12 3  123",
        " !!\n\n a/b//\n/c +\n/\n",
        "\u3000中文\u3000测试，“引号”。",
        "e\u0301cole \u0301a \u0301\u0301 \u0301ABC ABC\u0301",
        "AbC dEF ǅungla ʰa ǅ HELLOworld helloWORLD",
        "😀😀 😀a Ⅻ ² ١٢٣٤ １２",
        "\u0085\u2028\u2029 \u1680x \x0b\x0ca\x1cb ab\x00cd\x00",
    ],
)
def test_handpicked_text_matches_regex(name: str, text: str) -> None:
    assert_same_as_judge(name, text, repr(text))


@pytest.mark.parametrize("name", NAMES)
def test_every_code_point_matches_regex(name: str) -> None:
    # All code points in order, concatenated: a code point classed wrongly by the Rust tables moves a
    # chunk boundary inside or around its run of same-class neighbours. A second pass puts each one after
    # a space and before a letter, where the optional-prefix alternatives decide.
    code_points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    assert_same_as_judge(name, "".join(code_points), "every code point")
    assert_same_as_judge(name, "".join(f" {c}a" for c in code_points[0x80:0x30000]), "code points in context")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("corpus", sorted(CORPORA.glob("*.txt")), ids=lambda p: p.name)
def test_bundled_corpora_match_regex(name: str, corpus: Path) -> None:
    assert_same_as_judge(name, corpus.read_text(encoding="utf-8"), str(corpus))
