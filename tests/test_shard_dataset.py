"""The training side of a shard folder (gpt.shards.dataset via gpt.data): exactly the listed shards, every
shard checked, notices for what is skipped, and the manifest's own tokenizer from any working directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import bpe_fast
from bpe_fast.cliutil import UserError
from conftest import CORPORA
from gpt.data import ShardLoader, open_shards, resolve_tokenizer
from gpt.shards import ManifestError, ShardError, load_manifest, write_shard
from gpt.shards.job import prepare
from gpt.shards.sources import FileSource
from gpt.tokenizer import EOT_TEXT


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """project/vocab.json + project/data/shards made by gpt.prepare (so the manifest says ../../vocab.json)."""
    root = tmp_path_factory.mktemp("made")
    project = root / "project"
    (project / "data").mkdir(parents=True)
    text = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:40_000]
    corpus = project / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    tok = bpe_fast.train([text], 320, special_tokens=[EOT_TEXT])
    tok.save(project / "vocab.json")
    prepare(FileSource([corpus], doc_sep="\n\n"), tok, project / "data" / "shards", tokenizer_spec=str(project / "vocab.json"),
            shard_size=2_000, val_fraction=0.1, show_progress=False)  # fmt: skip
    return project


@pytest.fixture
def project(made, tmp_path):
    """A fresh copy for each test to damage."""
    copy = tmp_path / "project"
    shutil.copytree(made, copy)
    return copy


def lines(capture):
    return [line for line in capture.readouterr().err.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ which shards


def test_with_a_manifest_the_data_is_exactly_the_listed_shards(project, capsys):
    shards = project / "data" / "shards"
    manifest = load_manifest(shards)
    write_shard(shards / "train_000999.bin", np.arange(5000) % 300, vocab_size=320)  # not listed
    shard_set = open_shards(shards)
    notices = lines(capsys)
    assert len(notices) == 1 and "ignoring 1 shard" in notices[0] and "train_000999.bin" in notices[0]
    for split in ("val", "train"):
        assert [p.path.name for p in shard_set.split(split)] == [
            s["file"] for s in manifest["shards"] if s["split"] == split
        ]
    assert shard_set.has("val") and shard_set.has("train")
    loader = ShardLoader(shard_set, "train", 2, 16, vocab_size=320)
    assert "train_000999.bin" not in [p.name for p in loader.paths]


def test_a_missing_or_resized_listed_shard_stops_the_run_at_start(project):
    shards = project / "data" / "shards"
    manifest = load_manifest(shards)
    victim = shards / manifest["shards"][-1]["file"]
    data = victim.read_bytes()
    victim.unlink()
    with pytest.raises(ManifestError, match=f"{victim.name}: listed in manifest.json but missing"):
        open_shards(shards)
    victim.write_bytes(data[:-2])
    with pytest.raises(ManifestError, match=victim.name):
        open_shards(shards)


def test_a_listed_shard_with_other_contents_stops_when_it_is_loaded(project):
    shards = project / "data" / "shards"
    manifest = load_manifest(shards)
    first_train = next(s["file"] for s in manifest["shards"] if s["split"] == "train")
    path = shards / first_train
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1  # same size, same header
    path.write_bytes(bytes(raw))
    loader = ShardLoader(open_shards(shards), "train", 2, 16, vocab_size=320)  # the header is fine
    with pytest.raises(ShardError, match=f"{first_train}: contents changed"):
        loader.next_batch()


def test_without_a_manifest_every_shard_header_is_checked_at_start(tmp_path):
    write_shard(tmp_path / "train_000001.bin", np.arange(3000) % 50, vocab_size=50)
    write_shard(tmp_path / "val_000000.bin", np.arange(3000) % 50, vocab_size=50)
    bad = tmp_path / "val_000000.bin"
    raw = bytearray(bad.read_bytes())
    raw[0:4] = (4242).to_bytes(4, "little")
    bad.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="val_000000.bin.*magic"):
        open_shards(tmp_path)  # even a run that would only read train refuses it


def test_without_a_manifest_gaps_and_too_small_shards_are_named_in_one_line_each(tmp_path, capsys):
    for index, size in ((1, 3000), (2, 10), (5, 3000), (6, 0)):
        write_shard(tmp_path / f"train_{index:06d}.bin", np.arange(size) % 50, vocab_size=50)
    shard_set = open_shards(tmp_path)
    gap = lines(capsys)
    assert len(gap) == 1 and "train_000003.bin, train_000004.bin" in gap[0] and "no manifest.json" in gap[0]
    loader = ShardLoader(shard_set, "train", 2, 16)
    small = lines(capsys)
    assert len(small) == 1
    assert "train_000002.bin (10 tokens), train_000006.bin (0 tokens)" in small[0] and "33 tokens" in small[0]
    assert [loader.paths[i].name for i in loader.usable] == ["train_000001.bin", "train_000005.bin"]


def test_a_missing_data_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist: make shards with python -m gpt.prepare"):
        open_shards(tmp_path / "nope")


# ------------------------------------------------------------------------------------ the tokenizer


def test_the_manifest_tokenizer_is_found_from_any_working_directory(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec, tok = resolve_tokenizer(project / "data" / "shards")
    assert spec == str((project / "vocab.json").resolve())
    assert tok.vocab_size == 320 and tok.special_tokens[EOT_TEXT] == 319
    # The folder and its vocab move together: the relative path still finds it.
    moved = tmp_path / "moved"
    shutil.move(str(project), moved)
    monkeypatch.chdir(moved / "data")
    spec, _ = resolve_tokenizer(Path("shards"))
    assert spec == str((moved / "vocab.json").resolve())


def test_a_missing_or_changed_tokenizer_is_an_error_never_gpt2(project):
    shards = project / "data" / "shards"
    vocab = project / "vocab.json"
    saved = vocab.read_bytes()
    vocab.unlink()
    with pytest.raises(ManifestError, match="vocab.json, which is missing") as missing:
        resolve_tokenizer(shards)
    assert "\n" not in str(missing.value)
    with pytest.raises(ManifestError, match="missing"):
        resolve_tokenizer(shards, load=False)
    vocab.write_bytes(saved.replace(b'"version": 1', b'"version":  1'))  # same tokenizer, other bytes
    with pytest.raises(ManifestError, match="changed since the shards were made"):
        resolve_tokenizer(shards)


def test_an_explicit_tokenizer_must_be_the_manifests(project, tmp_path):
    shards = project / "data" / "shards"
    with pytest.raises(ManifestError, match="not the tokenizer the shards .* were made with"):
        resolve_tokenizer(shards, "gpt2")
    copy = tmp_path / "copy.json"
    shutil.copy(project / "vocab.json", copy)
    spec, tok = resolve_tokenizer(shards, str(copy))  # the same file elsewhere: accepted
    assert spec == str(copy.resolve()) and tok.vocab_size == 320
    with pytest.raises(UserError, match="not 'gpt2' and not an existing vocab file"):
        resolve_tokenizer(shards, str(tmp_path / "nope.json"), load=False)


def test_without_a_manifest_the_tokenizer_is_the_one_given_or_gpt2(tmp_path):
    write_shard(tmp_path / "train_000000.bin", [1, 2, 3])
    assert resolve_tokenizer(tmp_path, load=False) == ("gpt2", None)
    spec, tok = resolve_tokenizer(tmp_path)
    assert spec == "gpt2" and tok.vocab_size == 50257


def test_the_model_must_fit_the_manifests_tokenizer(project):
    shard_set = open_shards(project / "data" / "shards")
    shard_set.check_model(model_vocab_size=384, tokenizer_vocab_size=320)  # padded embedding: fine
    with pytest.raises(ManifestError, match="manifest.json: .*smaller"):
        shard_set.check_model(model_vocab_size=256)
    with pytest.raises(ManifestError, match="manifest.json: .*vocab_size 320.*vocab_size 50257"):
        shard_set.check_model(model_vocab_size=50304, tokenizer_vocab_size=50257)
