"""Checkpoints: atomic directories, safe and checked loading, only complete ones are ever picked, and the
inference loader (checkpoint, training output folder, transformers folder; never the network for a
local-looking path)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bpe_fast.files import TEMP_SUFFIX
from gpt.checkpoint import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    CheckpointError,
    NonFiniteWeightsError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    load_model_for_inference,
    looks_like_hub_id,
    recover_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
    tokenizer_spec_from_meta,
)
from gpt.model import GPT, GPTConfig

CONFIG = {"block_size": 16, "vocab_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 16, "real_vocab_size": 60}

pytestmark = pytest.mark.usefixtures("single_torch_thread")


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


def test_load_model_refuses_unknown_config_keys(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(
        tmp_path, model, optimizer, {**meta(3), "model_config": {**CONFIG, "n_kv_head": 2}}
    )
    with pytest.raises(CheckpointError, match="n_kv_head"):
        load_model(path)


def test_files_load_with_weights_only(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(1))
    state = torch.load(path / OPTIMIZER_FILE, weights_only=True)
    assert "state" in state and "param_groups" in state
    tensors = load_file(path / MODEL_FILE)
    # The tied embedding/head is stored once, under one of its two names.
    assert len({"transformer.wte.weight", "lm_head.weight"} & set(tensors)) == 1
    assert "transformer.h.0.attn.c_attn.weight" in tensors


class Payload:
    """Unpickling this would run code: create the file named in `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hand-made payload's protocol, not ours
def test_pickled_code_in_optimizer_file_is_refused_and_never_runs(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(1))
    marker = tmp_path / "payload-ran"
    # The payload must really run when unpickled without weights_only, or this test proves nothing.
    pickle.loads(pickle.dumps(Payload(marker))).close()
    assert marker.exists()
    marker.unlink()
    with open(path / OPTIMIZER_FILE, "wb") as f:
        pickle.dump({"state": Payload(marker), "param_groups": []}, f)
    with pytest.raises(CheckpointError, match=f"{OPTIMIZER_FILE}: refused to load"):
        load_checkpoint(path, model, optimizer)
    assert not marker.exists()
    # The same file through torch.save's zip container is refused too.
    torch.save({"state": Payload(marker)}, path / OPTIMIZER_FILE)
    torch.load(path / OPTIMIZER_FILE, weights_only=False)["state"].close()  # an unsafe load would run it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path, model, optimizer)
    assert not marker.exists()


# ---------------------------------------------------------------------------------- checked loading


def rewrite_weights(path, change):
    tensors = load_file(path / MODEL_FILE)
    change(tensors)
    save_file(tensors, path / MODEL_FILE)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.pop("transformer.h.0.mlp.c_fc.bias"), "tensor transformer.h.0.mlp.c_fc.bias is missing"),
        (
            lambda t: t.update({"transformer.h.0.attn.c_proj.weight": torch.zeros(16, 8)}),
            r"transformer.h.0.attn.c_proj.weight has shape \(16, 8\), the model needs \(16, 16\)",
        ),
        (
            lambda t: t.update({"transformer.h.1.ln_1.weight": torch.ones(16)}),
            "transformer.h.1.ln_1.weight is not",
        ),
        (
            lambda t: t["transformer.ln_f.bias"].fill_(float("nan")),
            "transformer.ln_f.bias holds NaN or infinite values",
        ),
    ],
    ids=["missing", "wrong-shape", "unexpected", "non-finite"],
)
def test_weights_that_do_not_fit_are_named(tmp_path, change, message):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(2))
    rewrite_weights(path, change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, trained_model(seed=1)[0])
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_the_tied_embedding_may_be_stored_under_either_name(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(2))

    def rename(tensors):
        name = "lm_head.weight" if "lm_head.weight" in tensors else "transformer.wte.weight"
        other = "transformer.wte.weight" if name == "lm_head.weight" else "lm_head.weight"
        tensors[other] = tensors.pop(name)

    rewrite_weights(path, rename)
    loaded, _ = load_model(path)
    assert torch.equal(loaded.lm_head.weight, model.transformer.wte.weight)
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()


def test_optimizer_state_of_the_wrong_shape_is_named(tmp_path):
    model, optimizer = trained_model()
    path = save_checkpoint(tmp_path, model, optimizer, meta(2))
    state = torch.load(path / OPTIMIZER_FILE, weights_only=True)
    state["state"][1]["exp_avg"] = torch.zeros(3)
    torch.save(state, path / OPTIMIZER_FILE)
    names = [n for n, p in model.named_parameters() if p.dim() >= 2]  # group 0 (decayed) comes first
    with pytest.raises(CheckpointError, match=f"exp_avg of {names[1]} has shape"):
        load_checkpoint(path, *trained_model(seed=1))


def test_non_finite_weights_are_never_written(tmp_path):
    model, optimizer = trained_model()
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match="transformer.h.0.attn.c_attn.weight"):
        save_checkpoint(tmp_path, model, optimizer, meta(4))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- finding and writing


def test_latest_skips_incomplete_checkpoints(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path, model, optimizer, meta(5))
    save_checkpoint(tmp_path, model, optimizer, meta(10))
    partial = tmp_path / "ckpt_0000020"  # a hand-made folder lacks files
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
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(partial, model, optimizer)


def test_write_interrupted_midway_leaves_no_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path, model, optimizer, meta(5))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while writing")

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


def test_recovery_removes_only_dead_writers_temps(tmp_path):
    model, optimizer = trained_model()
    save_checkpoint(tmp_path, model, optimizer, meta(5))
    from bpe_fast import files

    dead = tmp_path / f".ckpt_0000006.{files._HOST}-999999999.abcd{TEMP_SUFFIX}"  # no such pid
    alive = tmp_path / f".ckpt_0000007.{files._HOST}-{os.getppid()}.abcd{TEMP_SUFFIX}"  # a live process
    foreign = tmp_path / ".tmp-something-else"
    for folder in (dead, alive, foreign):
        folder.mkdir()
        (folder / MODEL_FILE).write_bytes(b"partial")
    recover_checkpoints(tmp_path)
    assert not dead.exists() and alive.exists() and foreign.exists()
    assert latest_checkpoint(tmp_path).name == "ckpt_0000005"


def test_mode_of_checkpoint_files_follows_the_umask(tmp_path):
    model, optimizer = trained_model()
    probe = tmp_path / "probe"
    probe.write_text("x")
    expected = probe.stat().st_mode & 0o777
    path = save_checkpoint(tmp_path / "out", model, optimizer, meta(1))
    assert {(p.stat().st_mode & 0o777) for p in path.iterdir()} == {expected}


def test_rng_state_roundtrips_through_json():
    state = json.loads(json.dumps(rng_state()))
    expected = (torch.rand(3), np.random.rand(3))
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


# ---------------------------------------------------------------------------------- inference loading


def test_tokenizer_spec_from_meta():
    assert tokenizer_spec_from_meta({"tokenizer": "vocab.json"}) == "vocab.json"
    assert tokenizer_spec_from_meta({"tokenizer": {"spec": "gpt2"}}) == "gpt2"
    assert tokenizer_spec_from_meta({"config": {"tokenizer": "v.json"}}) == "v.json"
    assert tokenizer_spec_from_meta({"config": {"tokenizer": None}}) is None


def test_load_model_for_inference_sources(tmp_path):
    pytest.importorskip("transformers")
    model, optimizer = trained_model()
    model.eval()
    ckpt = save_checkpoint(
        tmp_path / "run", model, optimizer, {"step": 7, "model_config": dataclasses.asdict(model.config)}
    )
    model.save_hf(tmp_path / "hf")
    idx = torch.randint(0, 60, (1, 9))
    with torch.no_grad():
        expected = model(idx)[0]
        for spec in (ckpt, tmp_path / "run", tmp_path / "hf"):  # checkpoint, output folder, HF folder
            loaded, info = load_model_for_inference(str(spec), "cpu")
            assert not loaded.training
            torch.testing.assert_close(loaded(idx)[0], expected, atol=1e-6, rtol=0)
            assert bool(info) == (spec != tmp_path / "hf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        load_model_for_inference(str(tmp_path / "empty"), "cpu")


@pytest.mark.parametrize("spec", ["nosuchdir", "runs/nosuch", "./gpt2", "~/nosuch", "/nonexistent/model"])
def test_a_missing_local_path_never_reaches_the_network(tmp_path, monkeypatch, spec):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise AssertionError("network used")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(CheckpointError, match="no such directory"):
        load_model_for_inference(spec, "cpu")  # sample/export never allow hub names
    if spec != "nosuchdir":  # a bare name may be a hub id where the hub is allowed
        with pytest.raises(CheckpointError, match="no such directory"):
            load_model_for_inference(spec, "cpu", allow_hub=True)
    assert calls == []


def test_hub_ids_are_told_from_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert looks_like_hub_id("gpt2") and looks_like_hub_id("openai-community/gpt2")
    for local in ("./gpt2", "/abs/model", "~/m", "runs/model", "a/b/c", "vocab.json", "dir/", ".hidden"):
        assert not looks_like_hub_id(local), local


# ------------------------------------------------------------------------------------ the sharded layout


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo process group of this process alone: enough to shard a model and write DCP checkpoints."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def sharded_model(seed=0):
    from gpt.fsdp import shard_model

    torch.manual_seed(seed)
    return shard_model(GPT(GPTConfig(**CONFIG)))


@pytest.mark.usefixtures("one_rank_group")
def test_sharded_checkpoint_is_complete_only_with_its_index_and_loads_for_inference(tmp_path):
    from gpt.checkpoint import SHARDED_DIR, save_sharded_checkpoint

    model = sharded_model()
    path = save_sharded_checkpoint(tmp_path / "run", model, None, meta(3))
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", SHARDED_DIR]
    assert json.loads((path / "meta.json").read_text())["sharded"] is True
    plain, loaded_meta = load_model_for_inference(tmp_path / "run")
    assert loaded_meta["step"] == 3
    for name, tensor in plain.state_dict().items():
        original = dict(model.state_dict())[name]
        assert torch.equal(tensor, original.full_tensor()), name
    with pytest.raises(CheckpointError, match="a sharded checkpoint .* resume it with --fsdp"):
        load_checkpoint(path, GPT(GPTConfig(**CONFIG)))
    (path / SHARDED_DIR / ".metadata").unlink()  # as if the write had stopped before DCP's index
    assert latest_checkpoint(tmp_path / "run") is None
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_model(path)


@pytest.mark.usefixtures("one_rank_group")
def test_sharded_weights_that_do_not_fit_or_are_not_finite_are_named(tmp_path):
    from gpt.checkpoint import SHARDED_DIR, save_sharded_checkpoint
    from gpt.fsdp import save_sharded

    path = save_sharded_checkpoint(tmp_path / "run", sharded_model(), None, meta(3))
    bigger = {**CONFIG, "n_layer": 2}  # a block the checkpoint does not have
    (path / "meta.json").write_text(json.dumps({**meta(3), "sharded": True, "model_config": bigger}))
    with pytest.raises(CheckpointError, match=r"transformer\.h\.1\."):
        load_model(path)
    wider = {**CONFIG, "n_embd": 32}
    (path / "meta.json").write_text(json.dumps({**meta(3), "sharded": True, "model_config": wider}))
    with pytest.raises(CheckpointError, match=r"Size mismatch .* for model\.transformer\.wte\.weight"):
        load_model(path)
    # save_sharded_checkpoint refuses non-finite weights; DCP itself does not, so such files can exist.
    model = sharded_model()
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match="transformer.h.0.mlp.c_fc.weight"):
        save_sharded_checkpoint(tmp_path / "nan", model, None, meta(3))
    assert not (tmp_path / "nan").exists() or not list((tmp_path / "nan").iterdir())
    from torch.distributed.checkpoint.api import CheckpointException

    with pytest.raises(CheckpointException) as refused:  # never over another checkpoint's shards
        save_sharded(path / SHARDED_DIR, model)
    assert "Checkpoint already exists" in str(refused.value.failures)
    shutil.rmtree(path / SHARDED_DIR)
    save_sharded(path / SHARDED_DIR, model)
    (path / "meta.json").write_text(json.dumps({**meta(3), "sharded": True}))
    with pytest.raises(CheckpointError, match="transformer.h.0.mlp.c_fc.weight holds NaN"):
        load_model(path)
