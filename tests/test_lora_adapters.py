"""Loading an adapter checks every tensor: one that is missing, extra, of the wrong shape or not finite is
an error naming it (lora.merge and lora.evaluate exit 2, never 0), and a pickle file is never loaded."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from peft import get_peft_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from bpe_fast.cliutil import UserError, run_main  # noqa: E402
from bpe_fast.files import OverwriteRefused  # noqa: E402
from lora import evaluate, merge, modeling  # noqa: E402
from lora.adapters import (
    known_peft_warnings_silenced,  # noqa: E402
    load_adapter,  # noqa: E402
)
from lora.tiny_model import tiny_model, write_tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")
QUIET = {"log": lambda _: None}
A_TENSOR = "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base = write_tiny_model(root / "base", "gpt2")
    model = tiny_model("gpt2")
    config, _ = modeling.lora_config(model, ["attention"], r=2, alpha=4.0, dropout=0.0)
    with known_peft_warnings_silenced():
        peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    peft_model.save_pretrained(str(root / "good"))
    return base, root / "good"


def corrupted(tmp_path, good, change):
    folder = tmp_path / "adapter"
    shutil.copytree(good, folder)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def _drop(tensors):
    del tensors[A_TENSOR]


def _reshape(tensors):
    tensors[A_TENSOR] = torch.zeros(96, 3)


def _extra(tensors):
    tensors["base_model.model.transformer.h.9.attn.c_attn.lora_B.weight"] = torch.zeros(96, 2)


def _nan(tensors):
    tensors[A_TENSOR][0, 0] = float("nan")


CORRUPTIONS = [
    (_drop, f"lacks the tensor {A_TENSOR}"),
    (_reshape, rf"tensor {A_TENSOR} has shape \(96, 3\), the model needs \(96, 2\)"),
    (_extra, r"h\.9\.attn\.c_attn\.lora_B\.weight does not belong"),
    (_nan, f"tensor {A_TENSOR} holds NaN"),
]


def test_a_good_adapter_loads_exactly(base_and_adapter):
    base, good = base_and_adapter
    model = load_adapter(modeling.load_model(modeling.resolve_model_source(str(base))), good)
    saved = load_file(str(good / "adapter_model.safetensors"))
    loaded = {name.replace(".default", ""): p for name, p in model.named_parameters() if "lora_" in name}
    assert set(loaded) == set(saved) and all(torch.equal(loaded[n], saved[n]) for n in saved)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("change, message", CORRUPTIONS, ids=["missing", "shape", "extra", "nan"])
def test_merge_refuses_a_broken_adapter(base_and_adapter, tmp_path, change, message):
    base, good = base_and_adapter
    adapter = corrupted(tmp_path, good, change)
    with pytest.raises(UserError, match=message):
        merge.merge_adapter(adapter, tmp_path / "merged", model=str(base), **QUIET)
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("change, message", CORRUPTIONS[:2], ids=["missing", "shape"])
def test_evaluate_refuses_a_broken_adapter(base_and_adapter, tmp_path, change, message):
    base, good = base_and_adapter
    adapter = corrupted(tmp_path, good, change)
    with pytest.raises(UserError, match=message):
        evaluate.evaluate(
            str(base), [good, adapter], names=["good", "broken"], loss_datasets=[], progress=False, **QUIET
        )


def test_commands_exit_2_on_a_broken_adapter(base_and_adapter, tmp_path, capsys):
    base, good = base_and_adapter
    adapter = corrupted(tmp_path, good, _drop)
    for module, argv in (
        (merge, ["--adapter", str(adapter), "--model", str(base), "--out", str(tmp_path / "m")]),
        (evaluate, ["--adapters", str(adapter), "--model", str(base), "--loss-datasets", "--no-progress"]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_main(module.main, module.PROG, argv)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert error[-1].startswith(f"{module.PROG}: error: ") and f"lacks the tensor {A_TENSOR}" in error[-1]


def test_merge_overwrites_only_its_own_output(base_and_adapter, tmp_path):
    base, good = base_and_adapter
    out = merge.merge_adapter(good, tmp_path / "merged", model=str(base), **QUIET)
    first = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(OverwriteRefused, match="pass --overwrite"):
        merge.merge_adapter(good, out, model=str(base), **QUIET)
    merge.merge_adapter(good, out, model=str(base), overwrite=True, **QUIET)
    assert (out / "model.safetensors").stat().st_mtime_ns != first
    with pytest.raises(OverwriteRefused, match="overlaps the input"):
        merge.merge_adapter(good, good, model=str(base), overwrite=True, **QUIET)
    assert (good / "adapter_model.safetensors").is_file()
    with pytest.raises(OverwriteRefused, match="was made by lora.merge"):
        from lora import config as lora_config
        from lora.run_folder import prepare_run_folder

        prepare_run_folder(lora_config.FinetuneConfig(model=str(base), out=str(out), overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temp left beside it


class _Payload:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (Path.touch, (self.flag,))


def test_pickle_weights_are_never_unpickled(tmp_path):
    flag = tmp_path / "payload-ran"
    base = tmp_path / "base"
    tiny_model("gpt2").config.save_pretrained(base)
    torch.save({"weights": _Payload(flag)}, base / "pytorch_model.bin")
    with pytest.raises(UserError, match="pytorch_model.bin is a pickle file, which is never loaded"):
        modeling.load_model(modeling.resolve_model_source(str(base)))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    torch.save({"weights": _Payload(flag)}, adapter / "adapter_model.bin")
    with pytest.raises(UserError, match="adapter_model.bin is a pickle file"):
        merge.merge_adapter(adapter, tmp_path / "merged", model=str(base), **QUIET)
    assert not flag.exists()
    pickle.loads(pickle.dumps(_Payload(flag)))  # the payload is live: unpickling it does run it
    assert flag.exists()
