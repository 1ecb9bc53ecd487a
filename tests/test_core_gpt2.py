"""The Rust core (bpe_fast._core) built from GPT-2's own files must encode exactly like tiktoken's gpt2.

Everything here uses only repository files: python/bpe_fast/gpt2/{encoder.json,vocab.bpe}. The
tiktoken reference is built from the same two files with tiktoken's r50k pattern.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

tiktoken_load = pytest.importorskip("tiktoken.load")
tiktoken = pytest.importorskip("tiktoken")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bpe_fast import _core  # noqa: E402
from conftest import examples, tiktoken_comparable  # noqa: E402

GPT2_DIR = Path(__file__).resolve().parents[1] / "python" / "bpe_fast" / "gpt2"
ENDOFTEXT = "<|endoftext|>"
R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def gpt2_unicode_to_byte() -> dict[str, int]:
    """GPT-2 writes each byte as one printable character: printable Latin-1 as itself, the rest
    from U+0100 on, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {chr(b): b for b in printable}
    extra = 256
    for b in range(256):
        if b not in printable:
            mapping[chr(extra)] = b
            extra += 1
    return mapping


def load_gpt2_core() -> _core.CoreTokenizer:
    to_byte = gpt2_unicode_to_byte()

    def as_bytes(text: str) -> bytes:
        return bytes(to_byte[c] for c in text)

    encoder = json.loads((GPT2_DIR / "encoder.json").read_text(encoding="utf-8"))
    tokens = [(token_id, as_bytes(text)) for text, token_id in encoder.items() if text != ENDOFTEXT]
    id_of = {b: i for i, b in tokens}
    lines = (GPT2_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    merges = []
    for line in lines:
        if line:
            left, right = line.split(" ")
            merges.append((id_of[as_bytes(left)], id_of[as_bytes(right)]))
    return _core.CoreTokenizer(tokens, merges, [(ENDOFTEXT, encoder[ENDOFTEXT])], "gpt2")


@pytest.fixture(scope="module")
def core() -> _core.CoreTokenizer:
    return load_gpt2_core()


@pytest.fixture(scope="module")
def reference():
    ranks = tiktoken_load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(GPT2_DIR / "vocab.bpe"), encoder_json_file=str(GPT2_DIR / "encoder.json")
    )
    return tiktoken.Encoding(
        name="gpt2_local", pat_str=R50K_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256}
    )


def without_surrogates(text: str) -> str:
    """What tiktoken does with lone surrogates before encoding."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def check_same(core, reference, text: str) -> None:
    text = tiktoken_comparable(text)
    expected = reference.encode_ordinary(text)
    assert core.encode_ordinary(text) == expected
    assert core.decode_bytes(expected) == text.encode("utf-8")


def test_vocab_shape(core):
    assert core.vocab_size == 50257
    assert core.pattern == "gpt2"
    assert len(core.merges()) == 50000
    assert core.special_tokens() == [(ENDOFTEXT, 50256)]
    assert core.token_bytes(50256) == ENDOFTEXT.encode()


@settings(max_examples=examples(1.5), suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_hypothesis_text_equals_tiktoken(core, reference, text):
    check_same(core, reference, without_surrogates(text))


@settings(max_examples=examples(0.75))
@given(st.binary(max_size=200))
def test_arbitrary_bytes_replace_equals_tiktoken(core, reference, raw):
    check_same(core, reference, raw.decode("utf-8", errors="replace"))


@settings(max_examples=examples(0.5))
@given(st.binary(max_size=120))
def test_arbitrary_bytes_surrogatepass(core, reference, raw):
    try:
        text = raw.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
    if any("\ud800" <= c <= "\udfff" for c in text):
        # A str with lone surrogates has no UTF-8 form: the core refuses it with a ValueError.
        with pytest.raises(ValueError):
            core.encode_ordinary(text)
        text = without_surrogates(text)
    check_same(core, reference, text)


@settings(max_examples=examples(0.3))
@given(
    st.lists(
        st.sampled_from(["a", "b", " ", "  ", "\n", "'s", "0", "9", "é", "中", "!", "\t", "😀"]), max_size=60
    )
)
def test_tricky_alphabet_equals_tiktoken(core, reference, parts):
    check_same(core, reference, "".join(parts))


REPEATED = ["^", "0", "a", "'s", " ", "\n"]
PREFIXES = ["", "x", " ", "\n", "a ", "0"]


@pytest.mark.parametrize("piece", REPEATED)
def test_catastrophically_repetitive(core, reference, piece):
    # tiktoken's own pathological cases: 10,000 repeats, with and without prefixes.
    for prefix in PREFIXES:
        text = prefix + piece * 10_000
        check_same(core, reference, text)
        check_same(core, reference, text + "x")


def test_megabyte_of_one_char_roundtrips(core):
    for char in ["a", " ", "0", "中"]:
        text = char * 1_000_000
        ids = core.encode_ordinary(text)
        assert core.decode_bytes(ids) == text.encode("utf-8")


def test_special_tokens_allowed_and_ordinary(core, reference):
    text = f"Hello{ENDOFTEXT} world {ENDOFTEXT}{ENDOFTEXT}x"
    assert core.encode(text, [ENDOFTEXT]) == reference.encode(text, allowed_special={ENDOFTEXT})
    assert core.encode(text, []) == reference.encode_ordinary(text)
    assert core.encode_ordinary(text) == reference.encode_ordinary(text)
    with pytest.raises(ValueError, match="not a special token"):
        core.encode(text, ["<|nope|>"])


def test_batch_and_buffers_match_single_encodes(core, reference):
    texts = ["Hello world", "", f"a{ENDOFTEXT}b", "三国演义 " * 50, "x" * 5000]
    expected = [reference.encode(t, allowed_special={ENDOFTEXT}) for t in texts]
    assert core.encode_batch(texts, [ENDOFTEXT]) == expected
    assert core.encode_batch(texts, [ENDOFTEXT], num_threads=1) == expected
    import numpy as np

    single = np.frombuffer(core.encode_to_buffer(texts[0], []), dtype="<u4")
    assert single.tolist() == expected[0]
    ids, ends = core.encode_batch_to_buffer(texts, [ENDOFTEXT], 2, 50256)
    ids = np.frombuffer(ids, dtype="<u4").tolist()
    ends = np.frombuffer(ends, dtype="<u8").tolist()
    start = 0
    for end, want in zip(ends, expected):
        assert ids[start : int(end)] == [50256, *want]
        start = int(end)
    assert start == len(ids)
    assert core.decode_buffer(np.array(expected[3], dtype="<u4").tobytes()) == texts[3].encode()


def test_decode_errors_name_the_id(core):
    with pytest.raises(ValueError, match=r"99999999.*position 1"):
        core.decode_bytes([15496, 99999999])
    with pytest.raises(ValueError, match=r"-1.*position 2"):
        core.decode_bytes([1, 2, -1])
    with pytest.raises(ValueError, match="multiple of 4"):
        core.decode_buffer(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        core.token_bytes(50257)


def test_recover_merges_gives_gpt2_merges_back(core):
    assert _core.recover_merges(core.tokens()) == core.merges()


def test_split_matches_python_regex():
    regex = pytest.importorskip("regex")
    text = "Hello world's  end\n\n  x 12345 !!? \t\n"
    assert _core.split("gpt2", text) == regex.findall(R50K_PATTERN, text)
