"""Checkpoints: atomic directories, weights_only loading, only complete ones are ever picked."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from gpt.checkpoint import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    remove_partial_checkpoints,
    save_checkpoint,
)
from gpt.model import GPT, GPTConfig

CONFIG = {"block_size": 16, "vocab_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 16, "real_vocab_size": 60}


def trained_model(seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**CONFIG))
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2, device_type="cpu")
    x = torch.randint(0, 60, (2, 16))
    _, loss = model(x, x)
    loss.backward()
    optimizer.step()
    return model, optimizer


def meta(step):
    return {"step": step, "model_config": CONFIG, "loader": {"position": 3}}


def test_roundtrip_restores_model_and_optimizer(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(7))
    assert path.name == "ckpt_0000007"
    fresh, fresh_opt = trained_model(seed=1)
    loaded = load_checkpoint(path, fresh, fresh_opt)
    assert loaded["step"] == 7 and loaded["loader"] == {"position": 3}
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    # The tie survives: the head still is the embedding.
    assert fresh.lm_head.weight.data_ptr() == fresh.transformer.wte.weight.data_ptr()
    a_state, b_state = optimizer.state_dict(), fresh_opt.state_dict()
    for key in a_state["state"]:
        for name, value in a_state["state"][key].items():
            assert torch.equal(value, b_state["state"][key][name]), (key, name)


def test_load_model_builds_the_gpt(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(3))
    loaded, info = load_model(path)
    assert info["step"] == 3 and not loaded.training
    x = torch.randint(0, 60, (1, 16))
    assert torch.equal(loaded(x)[0], model.eval()(x)[0])


def test_files_load_with_weights_only(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(1))
    state = torch.load(path / OPTIMIZER_FILE, weights_only=True)
    assert "state" in state and "param_groups" in state
    from safetensors.torch import load_file

    tensors = load_file(path / MODEL_FILE)
    # The tied embedding/head is stored once, under one of its two names.
    assert {"transformer.wte.weight", "lm_head.weight"} & set(tensors)
    assert "transformer.h.0.attn.c_attn.weight" in tensors


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hand-made payload's protocol, not ours
def test_pickled_objects_in_optimizer_file_are_refused(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(1))

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(path / OPTIMIZER_FILE, "wb") as f:
        pickle.dump({"state": Payload()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path, model, optimizer)


def test_latest_skips_incomplete_and_temporary(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path, model, optimizer, meta(5))
    save_checkpoint(tmp_path, model, optimizer, meta(10))
    # A writer killed mid-write leaves its temporary folder; a hand-made folder lacks files.
    killed = tmp_path / ".tmp-ckpt_0000015-abc"
    killed.mkdir()
    (killed / MODEL_FILE).write_bytes(b"partial")
    partial = tmp_path / "ckpt_0000020"
    partial.mkdir()
    (partial / MODEL_FILE).write_bytes(b"x")
    broken_meta = tmp_path / "ckpt_0000030"
    broken_meta.mkdir()
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        (broken_meta / name).write_bytes(b"x")
    (broken_meta / "meta.json").write_text('{"step": 3')
    assert latest_checkpoint(tmp_path).name == "ckpt_0000010"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000005", "ckpt_0000010"]
    assert latest_checkpoint(tmp_path / "missing") is None
    assert [p.name for p in remove_partial_checkpoints(tmp_path)] == [killed.name]
    assert latest_checkpoint(tmp_path).name == "ckpt_0000010"


def test_write_killed_midway_leaves_no_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path, model, optimizer, meta(5))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, optimizer, meta(9))
    assert latest_checkpoint(tmp_path).name == "ckpt_0000005"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_0000005"]


def test_same_step_is_replaced_whole(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path, model, optimizer, {**meta(4), "tag": "old"})
    save_checkpoint(tmp_path, model, optimizer, {**meta(4), "tag": "new"})
    assert json.loads((tmp_path / "ckpt_0000004" / "meta.json").read_text())["tag"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_0000004"]


def test_incomplete_checkpoint_is_refused_by_load(tmp_path):
    (tmp_path / "ckpt_0000001").mkdir()
    model, optimizer = trained_model()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "ckpt_0000001", model, optimizer)
