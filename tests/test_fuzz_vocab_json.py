"""Property-based fuzzing of the vocab-file loader (python/bpe_fast/vocab_io.py + the Rust constructor).

Whatever bytes a vocab file holds, `bpe_fast.load` either raises ValueError naming the file, or returns a
tokenizer that saves and reloads to itself: the same tokens, merges, special tokens and pattern, a saved
file that is a fixed point of load + save, and the same encodings. Inputs: raw bytes, byte-level edits of
a valid file, and JSON-level edits of a valid document (values replaced by arbitrary JSON, keys dropped or
added, ids and hex strings changed), for both the hex-JSON v1 format and the bare {id: hex} map.
The Rust core's own constructor is fuzzed by fuzz/ (docs/FUZZING.md).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import bpe_fast

# Short, so that a custom pattern the fuzzer writes (which may backtrack) stays quick to run.
SAMPLE = "the cat sat; it's 2024!  三国\n<|endoftext|> aaaa"


def _trained_document() -> dict:
    tok = bpe_fast.train(
        ["the cat sat on the mat, the hat. aaaa aaaa 三国 三国演义"] * 3,
        280,
        special_tokens=["<|endoftext|>"],
        num_threads=1,
    )
    return json.loads(tok.to_json_text())


VALID = _trained_document()
VALID_TEXT = json.dumps(VALID).encode()
BARE_TEXT = json.dumps(VALID["vocab"]).encode()

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=600)
    | st.sampled_from([2**26 - 1, 2**26, 2**32 - 1, 2**32, 2**64, -(2**63)])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["gpt2", "gpt4", "o200k", "raw", "", "(", r"\w+|\W", "00", "0g", "7468", "ff"])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def check_loads_or_refuses(content: bytes) -> str:
    """ "loaded" or "refused" (for hypothesis's statistics); fails on anything else."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.json"
        path.write_bytes(content)
        try:
            tok = bpe_fast.load(path)
        except ValueError as err:
            assert str(path) in str(err), f"the error does not name the file: {err}"
            return "refused"
        saved = tok.save(Path(folder) / "saved.json")
        again = bpe_fast.load(saved)
        assert again.tokens() == tok.tokens()
        assert again.merges == tok.merges
        assert again.special_tokens == tok.special_tokens
        assert again.pattern == tok.pattern
        assert again.vocab_size == tok.vocab_size
        assert again.to_json_text() == saved.read_text(encoding="utf-8"), "load + save is not a fixed point"
        allowed = set(tok.special_tokens)
        ids = tok.encode(SAMPLE, allowed_special=allowed)
        assert again.encode(SAMPLE, allowed_special=allowed) == ids
        assert tok.decode_bytes(ids) == SAMPLE.encode()
        assert all(0 <= i < tok.vocab_size for i in ids)
        return "loaded"


def test_the_valid_documents_load():
    # The edits below start from these, so both must load (or every edit would only test refusals).
    assert check_loads_or_refuses(VALID_TEXT) == "loaded"
    assert check_loads_or_refuses(BARE_TEXT) == "loaded"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v.json"
        path.write_bytes(VALID_TEXT)
        assert len(bpe_fast.load(path).merges) == 280 - 256 - 1


@settings(deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes(content):
    event(check_loads_or_refuses(content))


@st.composite
def byte_edits(draw):
    """A valid file (v1 or bare) with bytes deleted, replaced or inserted at a few places."""
    content = bytearray(draw(st.sampled_from([VALID_TEXT, BARE_TEXT])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(content)))
        removed = draw(st.integers(0, 4))
        inserted = draw(
            st.binary(max_size=4) | st.sampled_from([b'"', b",", b"}", b"]", b"0", b"f", b"\\u0000"])
        )
        content[at : at + removed] = inserted
    return bytes(content)


@settings(deadline=None)
@given(byte_edits())
def test_byte_edits_of_a_valid_file(content):
    event(check_loads_or_refuses(content))


@st.composite
def json_edits(draw):
    """A valid document with a few of its values replaced by arbitrary JSON, or keys dropped or added."""
    document = json.loads(draw(st.sampled_from([VALID_TEXT, BARE_TEXT])))
    for _ in range(draw(st.integers(1, 3))):
        # Edit the top level or one of the containers inside it.
        containers = [document] + [v for v in document.values() if isinstance(v, (dict, list)) and v]
        target = draw(st.sampled_from(containers))
        if isinstance(target, dict):
            keys = sorted(target)
            action = draw(st.sampled_from(["replace", "drop", "add"] if keys else ["add"]))
            if action == "replace":
                target[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
            elif action == "drop":
                del target[draw(st.sampled_from(keys))]
            else:
                key = draw(
                    st.text(max_size=6) | st.integers(0, 600).map(str) | st.sampled_from(["07", "-1", "1e3"])
                )
                target[key] = draw(JSON_VALUES)
        else:
            at = draw(st.integers(0, len(target) - 1))
            action = draw(st.sampled_from(["replace", "drop", "swap", "append"]))
            if action == "replace":
                target[at] = draw(JSON_VALUES)
            elif action == "drop":
                del target[at]
            elif action == "swap":
                other = draw(st.integers(0, len(target) - 1))
                target[at], target[other] = target[other], target[at]
            else:
                target.append(draw(JSON_VALUES))
    return json.dumps(document).encode()


@settings(deadline=None)
@given(json_edits())
def test_json_edits_of_a_valid_document(content):
    event(check_loads_or_refuses(content))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"[]",
        b"{}",
        b'{"format": "bpe-fast"}',
        b"\xff\xfe",
        b'{"0": "00"}',
        json.dumps({**VALID, "pattern": "("}).encode(),
        json.dumps({**VALID, "special_tokens": {"x": 2**32}}).encode(),
    ],
)
def test_known_bad_files_are_refused(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.json"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="vocab.json"):
            bpe_fast.load(path)
