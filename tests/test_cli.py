"""The `bpe-fast` CLI, through main(argv) (in process, fast) and once through `python -m bpe_fast`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import bpe_fast
from bpe_fast.cli import REPORT_WORDS, main
from bpe_fast.tokenizer import Tokenizer
from conftest import corpus_slice


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "manual.txt"
    path.write_text(
        corpus_slice("sanguo_yanyi.txt", 4_000) + "\nPOSTGRADUATE MANUAL OF PEKING UNIVERSITY in China\n" * 3,
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def vocab(corpus):
    path = corpus.parent / "vocab.json"
    assert (
        main(["train", str(corpus), "--vocab", "400", "--pattern", "raw", "--no-progress", "-o", str(path)])
        == 0
    )
    return path


def test_train_writes_a_vocab_and_reports_numbers(corpus, tmp_path, capsys):
    out = tmp_path / "v.json"
    status = main(
        [
            "train",
            str(corpus),
            "--vocab",
            "300",
            "--special",
            "<|endoftext|>",
            "--doc-sep",
            r"\n\n",
            "-o",
            str(out),
        ]
    )
    assert status == 0
    printed = capsys.readouterr()
    assert "merges/s" in printed.out and "bytes/token" in printed.out
    assert "merges" in printed.err  # the progress bar
    tok = bpe_fast.load(out)
    assert tok.vocab_size == 300 and tok.special_tokens == {"<|endoftext|>": 299} and tok.pattern == "gpt2"
    documents = corpus.read_text(encoding="utf-8").split("\n\n")
    assert tok.merges == bpe_fast.train(documents, 300, special_tokens=["<|endoftext|>"]).merges


def test_roundtrip_says_identical(vocab, corpus, capsys):
    assert main(["roundtrip", "--tokenizer", str(vocab), str(corpus)]) == 0
    assert capsys.readouterr().out.startswith("identical")
    assert main(["roundtrip", "--tokenizer", "gpt2", str(corpus)]) == 0


@pytest.mark.parametrize("suffix", [".npy", ".txt"])
def test_encode_decode_round_trip(vocab, corpus, tmp_path, suffix):
    ids_path = tmp_path / f"ids{suffix}"
    assert main(["encode", "--tokenizer", str(vocab), str(corpus), "-o", str(ids_path)]) == 0
    tok = bpe_fast.load(vocab)
    expected = tok.encode(corpus.read_text(encoding="utf-8"))
    if suffix == ".npy":
        array = np.load(ids_path)
        assert array.dtype == np.uint16 and array.tolist() == expected
    else:
        assert [int(x) for x in ids_path.read_text().split()] == expected
    restored = tmp_path / "restored.txt"
    assert main(["decode", "--tokenizer", str(vocab), str(ids_path), "-o", str(restored)]) == 0
    assert restored.read_bytes() == corpus.read_bytes()


def test_encode_to_stdout_and_special_policy(tmp_path, capsys):
    text = tmp_path / "s.txt"
    text.write_text("hello<|endoftext|>", encoding="utf-8")
    assert main(["encode", "--tokenizer", "gpt2", str(text)]) == 2
    assert "disallowed special token" in capsys.readouterr().err
    assert main(["encode", "--tokenizer", "gpt2", "--allow-special", str(text)]) == 0
    assert capsys.readouterr().out.split() == ["31373", "50256"]
    assert main(["encode", "--tokenizer", "gpt2", "--ordinary", str(text)]) == 0
    assert "50256" not in capsys.readouterr().out.split()


def test_compare_prints_both_tables(vocab, corpus, capsys):
    assert main(["compare", "--tokenizer", str(vocab), str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "Token counts" in out and "Word splits" in out and "ratio" in out
    for word in REPORT_WORDS:
        assert word in out
    gpt2_ids = str(bpe_fast.Tokenizer.gpt2().encode("博士"))
    assert gpt2_ids in out


def test_inspect_shows_ids_and_bytes(capsys):
    assert main(["inspect", "--tokenizer", "gpt2", "hello 博士"]) == 0
    out = capsys.readouterr().out
    assert "31373" in out and "68656c6c6f" in out and "'hello'" in out


@pytest.mark.parametrize("fmt", ["bare", "tiktoken", "hf"])
def test_export_formats(vocab, tmp_path, fmt):
    out = tmp_path / f"export.{fmt}"
    assert main(["export", "--tokenizer", str(vocab), "--format", fmt, "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    if fmt == "hf":
        assert json.loads(out.read_text(encoding="utf-8"))["model"]["type"] == "BPE"
    if fmt == "bare":
        assert bpe_fast.load(out).merges == bpe_fast.load(vocab).merges


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "missing.txt", "--vocab", "300"], "missing.txt"),
        (["roundtrip", "--tokenizer", "nope.json", "x.txt"], "nope.json"),
        (["train", "{corpus}", "--vocab", "100"], "vocab_size"),
        (["train", "{corpus}", "--vocab", "300", "--pattern", "(bad"], "pattern"),
        (["encode", "--tokenizer", "{corpus}", "{corpus}"], "JSON"),
        (["decode", "--tokenizer", "gpt2", "{ids}"], "99999999"),
        (["roundtrip", "--tokenizer", "gpt2", "{latin1}"], "byte offset 3"),
    ],
)
def test_user_errors_exit_2_with_one_line(corpus, tmp_path, capsys, argv, fragment):
    ids = tmp_path / "ids.txt"
    ids.write_text("1 2 99999999")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"abc\xe9def")
    argv = [a.format(corpus=corpus, ids=ids, latin1=latin1) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_roundtrip_exits_1_and_names_the_first_differing_offset(vocab, tmp_path, capsys, monkeypatch):
    # Every tokenizer round-trips exactly, so a broken decoder is simulated to exercise the failure path.
    path = tmp_path / "t.txt"
    path.write_text("abc, def", encoding="utf-8")
    real_decode = Tokenizer.decode_bytes

    def corrupting_decode(self, ids):
        data = bytearray(real_decode(self, ids))
        data[3] ^= 0xFF
        return bytes(data)

    monkeypatch.setattr(Tokenizer, "decode_bytes", corrupting_decode)
    assert main(["roundtrip", "--tokenizer", str(vocab), str(path)]) == 1
    assert "offset 3" in capsys.readouterr().out


def test_help_describes_every_flag():
    for command in ["train", "encode", "decode", "roundtrip", "compare", "inspect", "export"]:
        with pytest.raises(SystemExit):
            main([command, "--help"])


def test_python_dash_m_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bpe_fast", "inspect", "--tokenizer", "gpt2", "hi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "5303" in result.stdout  # gpt2's id of "hi"
