"""Vocab files: hex-JSON v1 and bare map round trips, validation of malformed files, atomic saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpe_fast import reference, vocab_io


def byte_tokens() -> dict[int, bytes]:
    return {i: bytes([i]) for i in range(256)}


def small_vocab():
    """A valid vocab: 'th' = 256, 'the' = 257, one special token."""
    tokens = byte_tokens()
    tokens.update({256: b"th", 257: b"the"})
    return tokens, [(116, 104), (256, 101)], {"<|endoftext|>": 258}


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def valid_document():
    tokens, merges, specials = small_vocab()
    return {
        "format": "bpe-fast",
        "version": 1,
        "pattern": "gpt2",
        "vocab": {str(i): value.hex() for i, value in tokens.items()},
        "merges": [list(m) for m in merges],
        "special_tokens": specials,
    }


def test_v1_round_trip_is_exact_and_deterministic(tmp_path):
    tokens, merges, specials = small_vocab()
    path = vocab_io.save_vocab(tmp_path / "v.json", tokens, merges, specials, "gpt2")
    loaded = vocab_io.load_vocab(path)
    assert (loaded.tokens, loaded.merges, loaded.special_tokens, loaded.pattern) == (
        tokens,
        merges,
        specials,
        "gpt2",
    )
    # Same content in another insertion order -> the same bytes.
    shuffled = dict(reversed(list(tokens.items())))
    again = vocab_io.save_vocab(tmp_path / "w.json", shuffled, merges, specials, "gpt2")
    assert path.read_bytes() == again.read_bytes()
    assert path.read_bytes().endswith(b"}\n")
    assert '"256": "7468"' in path.read_text()


def test_custom_regex_pattern_round_trips(tmp_path):
    tokens, merges, specials = small_vocab()
    pattern = r"\p{L}+|\s+|[^\s\p{L}]+"
    path = vocab_io.save_vocab(tmp_path / "v.json", tokens, merges, specials, pattern)
    assert vocab_io.load_vocab(path).pattern == pattern


def test_bare_map_round_trip_defaults_to_raw(tmp_path):
    tokens, _, _ = small_vocab()
    path = vocab_io.save_bare(tmp_path / "bare.json", tokens)
    loaded = vocab_io.load_vocab(path)
    assert loaded.is_bare and loaded.merges is None and loaded.pattern == "raw"
    assert loaded.tokens == tokens
    assert vocab_io.load_vocab(path, pattern="gpt2").pattern == "gpt2"


def test_bare_map_of_trained_raw_vocab_recovers_the_same_merges(tmp_path):
    text = "POSTGRADUATE MANUAL OF PEKING UNIVERSITY\n研究生手册 研究生 手册\n" * 5
    tok = reference.train([text], 330, pattern="raw")
    path = vocab_io.save_bare(tmp_path / "bare.json", dict(tok.tokens()))
    loaded = vocab_io.load_vocab(path)
    assert reference.recover_merges(sorted(loaded.tokens.items())) == tok.merges()


def test_uppercase_hex_is_accepted(tmp_path):
    document = valid_document()
    document["vocab"]["256"] = "7468".upper()
    document["vocab"]["255"] = "FF"
    assert vocab_io.load_vocab(write_json(tmp_path / "v.json", document)).tokens[255] == b"\xff"


def _expect_error(path: Path, *fragments: str) -> None:
    with pytest.raises(ValueError) as caught:
        vocab_io.load_vocab(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda d: d["vocab"].__setitem__("256", "746"), ["'256'", "hex"]),  # odd length
        (lambda d: d["vocab"].__setitem__("256", "zz"), ["'256'", "hex"]),
        (lambda d: d["vocab"].__setitem__("256", ""), ["'256'", "hex"]),
        (lambda d: d["vocab"].__setitem__("256", "74 68"), ["'256'", "hex"]),
        (lambda d: d["vocab"].__setitem__("256", 7468), ["'256'", "hex"]),
        (lambda d: d["vocab"].__setitem__("259", "7468"), ["'259'", "duplicate", "256"]),  # duplicate bytes
        (lambda d: d["vocab"].__setitem__("x1", "7468"), ["'x1'", "decimal"]),
        (lambda d: d["vocab"].__setitem__("0256", "7400"), ["'0256'", "decimal"]),
        (lambda d: d["vocab"].pop("65"), ["single bytes", "41"]),
        (lambda d: d["merges"].append([116, 9999]), ["merge 2", "9999"]),
        (lambda d: d["merges"].append([104, 116]), ["merge 2", "6874"]),  # "ht" is not a token
        (lambda d: d["merges"].append([116, 104]), ["merge 2", "repeats merge 0"]),
        (lambda d: d["merges"].append([116]), ["merge 2"]),
        (lambda d: d["merges"].append([True, 104]), ["merge 2"]),
        (lambda d: d.__setitem__("merges", {}), ["merges"]),
        (lambda d: d.__setitem__("version", 2), ["version 2"]),
        (lambda d: d.__setitem__("format", "other"), ["format"]),
        (lambda d: d.__setitem__("pattern", "(unclosed"), ["pattern"]),
        (lambda d: d.pop("vocab"), ["'vocab'"]),
        (lambda d: d.__setitem__("extra", 1), ["extra"]),
        (lambda d: d["special_tokens"].__setitem__("<|endoftext|>", 256), ["<|endoftext|>", "256"]),
        (lambda d: d["special_tokens"].__setitem__("<|b|>", 258), ["<|b|>", "258"]),
        (lambda d: d["special_tokens"].__setitem__("<|c|>", "9"), ["<|c|>"]),
    ],
)
def test_malformed_v1_files_name_the_file_and_the_entry(tmp_path, mutate, fragments):
    document = valid_document()
    mutate(document)
    _expect_error(write_json(tmp_path / "bad.json", document), *fragments)


def test_duplicate_ids_in_the_json_text_are_detected(tmp_path):
    text = json.dumps(valid_document())
    text = text.replace('"256": "7468"', '"256": "7468", "256": "7469"')
    path = tmp_path / "dup.json"
    path.write_text(text)
    _expect_error(path, "duplicate key '256'")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty file"),
        (b"  \n", "empty file"),
        (b'{"format": "bpe-fast", "version": 1, "vocab": {"0": "00"', "truncated"),
        (b"[1, 2]", "top level"),
        (b"{}", "empty JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"0": "00", "1": "01"}', "single bytes"),  # a bare map missing bytes
    ],
)
def test_broken_files_are_value_errors(tmp_path, content, fragment):
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    _expect_error(path, fragment)


def test_a_directory_is_a_value_error(tmp_path):
    _expect_error(tmp_path, "directory")


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        vocab_io.load_vocab(tmp_path / "nope.json")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    tokens, merges, specials = small_vocab()
    path = vocab_io.save_vocab(tmp_path / "v.json", tokens, merges, specials, "gpt2")
    before = path.read_bytes()

    # A failure in the middle of the write (here: at the rename) must keep the old file intact.
    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        vocab_io.save_vocab(path, byte_tokens(), [], {}, "raw")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json"]


def test_save_into_a_directory_path_fails_cleanly(tmp_path):
    with pytest.raises(IsADirectoryError):
        vocab_io.save_bare(tmp_path, byte_tokens())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            '{"format": "bpe-fast", "vocab": ' + '{"0": ' * 100_000 + "1" + "}" * 100_000 + "}",
            "nested too deeply",
        ),
        ('{"' + "1" * 5_000 + '": "00"}', "5000 digits"),
        ('{"format": "bpe-fast", "version": ' + "9" * 5_000 + "}", "5000 digits"),
        (
            '{"format": "bpe-fast", "version": 1, "pattern": "gpt2", "vocab": {}, "merges": [['
            + "7" * 5_000
            + ", 1]]}",
            "5000 digits",
        ),
    ],
)
def test_hostile_json_is_a_value_error_naming_the_file(tmp_path, content, fragment):
    # Before: RecursionError for deep nesting; for a 5,000-digit id, int()'s ValueError without the file.
    path = tmp_path / "hostile.json"
    path.write_text(content, encoding="utf-8")
    _expect_error(path, fragment)
    # The tokenizer's loader says the same (it reads through load_vocab).
    import bpe_fast

    with pytest.raises(ValueError, match="hostile.json"):
        bpe_fast.load(path)


def test_merges_out_of_bpe_order_are_refused_naming_the_first(tmp_path):
    import bpe_fast

    document = valid_document()
    document["merges"] = [[256, 101], [116, 104]]  # "th"+"e" listed before "t"+"h" makes "th"
    path = write_json(tmp_path / "reordered.json", document)
    with pytest.raises(ValueError) as caught:
        bpe_fast.load(path)
    message = str(caught.value)
    assert "reordered.json" in message and "merge 0 (256, 101)" in message and "no earlier merge" in message


def test_sparse_special_id_does_not_allocate_a_table_as_large_as_the_id(tmp_path):
    import bpe_fast
    from bpe_fast.tokenizer import MAX_TOKEN_ID

    document = valid_document()
    document["special_tokens"] = {"<|endoftext|>": MAX_TOKEN_ID}
    path = write_json(tmp_path / "sparse.json", document)
    assert path.stat().st_size < 4_000
    tok = bpe_fast.load(path)
    assert tok.vocab_size == MAX_TOKEN_ID + 1
    assert tok.decode([257, MAX_TOKEN_ID]) == "the<|endoftext|>"
    # Peak memory of a fresh process (VmHWM: getrusage's ru_maxrss would carry over this process's peak).
    # A dense decode table indexed by id would be 2^26 * 8 bytes = 512 MiB.
    probe = (
        "import re, sys, bpe_fast\n"
        "def peak():\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "before = peak()\n"
        "bpe_fast.load(sys.argv[1])\n"
        "print((peak() - before) / 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    grown_mib = float(result.stdout)
    assert grown_mib < 64, f"peak memory grew {grown_mib:.0f} MiB"
    with pytest.raises(ValueError, match=str(MAX_TOKEN_ID + 1)):
        bpe_fast.Tokenizer.from_parts(*small_vocab()[:2], {"<|x|>": MAX_TOKEN_ID + 1}, "gpt2")
