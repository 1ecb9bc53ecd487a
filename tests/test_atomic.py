"""Atomic writes (bpe_fast.files) and the gpt/ writers built on them: the file appears whole or not at
all, no temp file is left behind, and it gets the mode a plain open() would give (not mkstemp's 0600)."""

import json
import os
import stat

import numpy as np
import pytest

from bpe_fast.files import atomic_path, atomic_write_text


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_path_renames_on_success_with_the_umask_mode(tmp_path, umask_022):
    target = tmp_path / "out.bin"
    with atomic_path(target, suffix=".png") as temp_name:
        assert temp_name.endswith(".png") and os.path.dirname(temp_name) == str(tmp_path)
        with open(temp_name, "wb") as f:
            f.write(b"abc")
        assert not target.exists()
    assert target.read_bytes() == b"abc"
    assert mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_keeps_the_old_file_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as temp_name:
            with open(temp_name, "w") as f:
                f.write("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_refuses_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        with atomic_path(tmp_path):
            pass


def test_gpt_writers_give_readable_files(tmp_path, umask_022):
    pytest.importorskip("matplotlib")
    from gpt.plot import plot
    from gpt.shards import write_manifest, write_shard

    manifest = {
        "format": "bpe-fast-shards", "version": 2, "dtype": "uint16", "num_tokens": 0, "num_documents": 0,
        "tokenizer": {"spec": "gpt2", "vocab_size": 50257}, "shards": [],
    }  # fmt: skip
    write_manifest(tmp_path, manifest)
    write_shard(tmp_path / "shard.bin", np.arange(10, dtype=np.uint16), vocab_size=50304)
    records = [{"step": s, "train_loss": 5.0 - s * 0.1, "val_loss": 5.0 - s * 0.1} for s in range(5)]
    plot(records, tmp_path / "loss.png", "t")
    for name in ("manifest.json", "shard.bin", "loss.png"):
        assert mode(tmp_path / name) == 0o644, name
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "manifest.json", "shard.bin"]
