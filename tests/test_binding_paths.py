"""The binding's fast paths (rust/src/python.rs) against its general ones: decode reads lists and
tuples by index and other iterables item by item; encode lists share one Python int per id;
encode_batch overlaps building lists with encoding. Each must give the same output and errors."""

from __future__ import annotations

import enum

import numpy as np
import pytest

from bpe_fast.tokenizer import Tokenizer

ENDOFTEXT = "<|endoftext|>"
TEXT = "Hello world, 你好世界! Ünïcödé and some more text\n\n  with   spaces 12345"


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.gpt2()


@pytest.fixture(scope="module")
def core(gpt2):
    return gpt2._core


class Color(enum.IntEnum):
    RED = 15496


class Index:
    """Not an int, but has __index__ (like a numpy integer)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_decode_accepts_every_sequence_kind(core):
    ids = core.encode_ordinary(TEXT)
    want = TEXT.encode()
    assert core.decode_bytes(ids) == want
    assert core.decode_bytes(tuple(ids)) == want
    assert core.decode_bytes(iter(ids)) == want
    assert core.decode_bytes(x for x in ids) == want
    assert core.decode_bytes(np.array(ids, dtype=np.int64).tolist()) == want
    assert core.decode_bytes([np.int64(i) for i in ids]) == want
    assert core.decode_bytes(tuple(np.uint16(i) for i in ids)) == want
    assert core.decode_bytes([Index(i) for i in ids]) == want
    assert core.decode_bytes([Color.RED, True, False]) == b"Hello" + core.token_bytes(1) + core.token_bytes(0)
    assert core.decode_bytes(range(256, 260)) == b"".join(core.token_bytes(i) for i in range(256, 260))
    assert core.decode_bytes([]) == core.decode_bytes(()) == core.decode_bytes(iter([])) == b""
    # A special token's id decodes to its text; long tokens (past the 16-byte copy) too.
    longest = max(core.tokens(), key=lambda t: len(t[1]))
    assert (
        core.decode_bytes([50256, longest[0], 50256]) == ENDOFTEXT.encode() + longest[1] + ENDOFTEXT.encode()
    )


@pytest.mark.parametrize("kind", [list, tuple, iter])
@pytest.mark.parametrize(
    "bad, message",
    [
        (50257, "unknown token id 50257 at position 2"),
        (-1, "unknown token id -1 at position 2"),
        (2**32 - 1, f"unknown token id {2**32 - 1} at position 2"),
        (2**32, f"unknown token id {2**32} at position 2"),
        (2**64 - 1, f"unknown token id {2**64 - 1} at position 2"),
        (2**64, f"unknown token id {2**64} at position 2"),
        (-(2**70), f"unknown token id {-(2**70)} at position 2"),
        (np.int64(-5), "unknown token id -5 at position 2"),
        (Index(-7), r"token id at position 2 is <.*Index.*>, not an int|unknown token id"),
        ("7", "token id at position 2 is '7', not an int"),
        (7.0, "token id at position 2 is 7.0, not an int"),
        (None, "token id at position 2 is None, not an int"),
    ],
)
def test_decode_bad_item_in_the_middle_names_it_and_its_position(core, kind, bad, message):
    with pytest.raises(ValueError, match=message):
        core.decode_bytes(kind([15496, 995, bad, 15496]))


def test_wrapper_decode_errors_match_core(gpt2):
    with pytest.raises(ValueError, match="position 1"):
        gpt2.decode_bytes((1, -1))
    with pytest.raises(ValueError, match="position 3"):
        gpt2.decode_bytes(iter([1, 2, 3, 2**40]))
    with pytest.raises(ValueError, match="not an int"):
        gpt2.decode_bytes([1, b"x"])
    with pytest.raises(ValueError, match="not a str"):
        gpt2.decode_bytes("15496")


def test_decode_survives_index_that_shrinks_the_list(core):
    ids = [15496, 995, 0, 1]

    class Shrinker:
        def __index__(self) -> int:
            del ids[:]
            return 995

    ids[1] = Shrinker()
    # The list shrinks under the reader: an error (or the ids read so far), never a crash.
    with pytest.raises(IndexError):
        core.decode_bytes(ids)


def test_decode_buffer_and_token_bytes_share_the_checks(core):
    ids = core.encode_ordinary(TEXT)
    assert core.decode_buffer(np.array(ids, dtype="<u4").tobytes()) == TEXT.encode()
    with pytest.raises(ValueError, match="unknown token id 60000 at position 1"):
        core.decode_buffer(np.array([1, 60000], dtype="<u4").tobytes())
    assert core.token_bytes(np.int32(15496)) == b"Hello"
    for bad in (-1, 2**32, 50257):
        with pytest.raises(ValueError, match=str(bad)):
            core.token_bytes(bad)
    with pytest.raises(ValueError, match="not an int"):
        core.token_bytes("7")


def test_encode_lists_are_plain_equal_ints(core):
    first = core.encode_ordinary(TEXT)
    again = core.encode(TEXT, [])
    assert first == again and type(first) is list
    assert all(type(i) is int for i in first)
    # Shared ints are only visible to `is`; mutating a returned list touches no other.
    first[0] = -1
    assert core.encode_ordinary(TEXT)[0] == again[0] != -1


def test_ids_past_the_shared_int_range_get_their_own_ints():
    # A sparse vocab: a special id far above the shared-int table (2**18 entries).
    tokens = {b: bytes([b]) for b in range(256)}
    tok = Tokenizer.from_parts(tokens, [], {"<|big|>": 2**20 + 3}, "gpt2")
    ids = tok._core.encode("a<|big|>b", ["<|big|>"])
    assert ids == [97, 2**20 + 3, 98]
    assert tok._core.encode_batch(["a<|big|>b"] * 3, ["<|big|>"], 2) == [ids] * 3
    assert tok.decode_bytes(ids) == b"a<|big|>b"


DOCS = [TEXT * k for k in (0, 1, 3, 200, 2000)] + ["x"] * 3000 + ["", ENDOFTEXT + " z" * 50_000]


@pytest.mark.parametrize("num_threads", [0, 1, 2, 3])
def test_encode_batch_matches_encode_in_order(core, num_threads):
    docs = DOCS[::-1] + DOCS
    want = [core.encode(doc, [ENDOFTEXT]) for doc in docs]
    assert core.encode_batch(docs, [ENDOFTEXT], num_threads) == want
    assert core.encode_batch(iter(docs), [ENDOFTEXT], num_threads) == want
    assert core.encode_batch(tuple(docs), [], num_threads) == [core.encode_ordinary(d) for d in docs]


def test_encode_batch_edge_inputs(core, gpt2):
    assert core.encode_batch([], [], 2) == []
    assert core.encode_batch(iter(()), []) == []
    assert core.encode_batch([""], [], 2) == [[]]
    with pytest.raises(TypeError, match=r"texts\[2\] must be a str, got int"):
        core.encode_batch(["a", "b", 3, "d"], [], 2)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got bytes"):
        core.encode_batch(["a", b"b"], [], 2)
    with pytest.raises(TypeError, match="not a str"):
        core.encode_batch("abc", [], 2)
    with pytest.raises(TypeError):
        core.encode_batch(5, [], 2)
    with pytest.raises(UnicodeEncodeError):
        core.encode_batch(["fine", "x\ud800y"], [], 2)
    with pytest.raises(ValueError, match="not a special token"):
        core.encode_batch(["a"], ["<|nope|>"], 2)
    # The wrapper's own checks come first and name the index.
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        gpt2.encode_batch(["ok", None])
    with pytest.raises(ValueError, match="of text 1"):
        gpt2.encode_batch(["fine", "not " + ENDOFTEXT], num_threads=2)
    # The batch after errors still works (nothing left half-done in the pool).
    assert core.encode_batch(DOCS, [], 2) == [core.encode_ordinary(d) for d in DOCS]


def test_encode_batch_iterator_errors_propagate(core):
    def texts():
        yield "a"
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        core.encode_batch(texts(), [], 2)
