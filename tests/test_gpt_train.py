"""The trainer, in-process on CPU with tiny models: logs, evaluation hooks, config, refusals, non-finite stop."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt.train as train
from bpe_fast.cliutil import UserError
from bpe_fast.files import TEMP_SUFFIX
from gpt.config import ConfigError, TrainConfig, load_preset, parse_config
from gpt.data import ManifestError, ShardError
from gpt.shards import write_shard
from gpt.shards.manifest import tokenizer_sha256

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64
TINY = [
    "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--vocab-size", str(VOCAB),
    "--seq-len", "16", "--batch-size", "4", "--total-batch-size", "128",
    "--max-lr", "1e-2", "--warmup-steps", "2", "--sample-every", "0", "--no-tensorboard",
    "--device", "cpu", "--threads", "1", "--val-steps", "2", "--checkpoint-every", "0",
]  # fmt: skip


def markov_stream(n: int, vocab: int = VOCAB, seed: int = 0, ids: np.ndarray | None = None) -> np.ndarray:
    """A learnable stream: each token is a fixed function of the previous one, plus rare noise."""
    rng = np.random.default_rng(seed)
    table = np.random.default_rng(123).permutation(vocab)
    out = np.empty(n, dtype=np.int64)
    out[0] = 0
    noise = rng.random(n) < 0.1
    random_ids = rng.integers(0, vocab, n)
    for i in range(1, n):
        out[i] = random_ids[i] if noise[i] else table[out[i - 1]]
    return out if ids is None else ids[out]


def make_shards(
    folder: Path, vocab: int = VOCAB, ids: np.ndarray | None = None, train_shards: int = 2
) -> Path:
    write_shard(folder / "val_000000.bin", markov_stream(4000, vocab, seed=99, ids=ids), vocab_size=50257)
    for i in range(train_shards):
        write_shard(
            folder / f"train_{i + 1:06d}.bin", markov_stream(6000, vocab, seed=i, ids=ids), vocab_size=50257
        )
    return folder


def run(tmp_path, *extra, data=None):
    data = data or make_shards(tmp_path / "shards")
    out = tmp_path / "out"
    status = train.main([*TINY, "--data", str(data), "--out", str(out), *map(str, extra)])
    return status, out


def strict_json(line: str) -> dict:
    """json.loads refusing NaN and infinities, which are not JSON."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def read_log(out: Path) -> list[dict]:
    return [strict_json(line) for line in (out / "log.jsonl").read_text().splitlines()]


class StandInTokenizer:
    """GPT-2 through tiktoken, built from the files in the repo, when bpe_fast's extension is not built."""

    def __init__(self):
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        folder = REPO / "python" / "bpe_fast" / "gpt2"
        ranks = data_gym_to_mergeable_bpe_ranks(str(folder / "vocab.bpe"), str(folder / "encoder.json"))
        self.special_tokens = {"<|endoftext|>": 50256}
        self._enc = tiktoken.Encoding(
            "gpt2-local",
            pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        self.vocab_size = self._enc.n_vocab

    def encode(self, text, **kwargs):
        return self._enc.encode(text, **kwargs)

    def encode_ordinary(self, text):
        return self._enc.encode_ordinary(text)

    def decode(self, ids, errors="replace"):
        return self._enc.decode(ids, errors=errors)


@pytest.fixture
def gpt2_tokenizer(monkeypatch):
    try:
        from gpt.tokenizer import load_tokenizer

        return load_tokenizer("gpt2")
    except ImportError:
        import gpt.tokenizer

        tok = StandInTokenizer()
        monkeypatch.setattr(gpt.tokenizer, "load_tokenizer", lambda spec: tok)
        return tok


# ------------------------------------------------------------------------------------------- training


def test_tiny_run_learns_logs_and_checkpoints(tmp_path):
    status, out = run(tmp_path, "--max-steps", 30, "--val-every", 10, "--log-every", 1)
    assert status == 0
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(30))
    for record in log:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu"} <= set(record)
        assert record["mfu"] is None  # CPU without --peak-flops: n/a
    assert [r["step"] for r in log if "val_loss" in r] == [0, 10, 20, 29]
    val = [r["val_loss"] for r in log if "val_loss" in r]
    assert val[-1] < val[0] - 1.0, val  # the Markov stream is learnable
    assert log[-1]["loss"] < log[0]["loss"] - 1.0
    # Warmup then cosine: lr rises to max_lr and decays toward 10 %.
    assert log[1]["lr"] == pytest.approx(1e-2) and log[-1]["lr"] < 2e-3
    assert (out / "ckpt_0000030" / "meta.json").exists()
    meta = json.loads((out / "ckpt_0000030" / "meta.json").read_text())
    assert meta["step"] == 30 and meta["tokens_seen"] == 30 * 128 and meta["config"]["n_embd"] == 32


def test_log_every_and_peak_flops(tmp_path):
    status, out = run(tmp_path, "--max-steps", 7, "--val-every", 0, "--log-every", 3, "--peak-flops", 1e12)
    assert status == 0
    log = read_log(out)
    assert [r["step"] for r in log] == [0, 3, 6]
    assert all(0 < r["mfu"] < 1 for r in log)


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    data = make_shards(tmp_path / "shards")
    common = ["--max-steps", 3, "--val-every", 0, "--data", data]
    finals = []
    for i, batch in enumerate(("8", "2")):  # 128 tokens/step as 1 x (8x16) or 4 x (2x16)
        out = tmp_path / f"o{i}"
        assert train.main([*TINY, *map(str, common), "--batch-size", batch, "--out", str(out)]) == 0
        finals.append(read_log(out))
    for a, b in zip(*finals):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)


def test_activation_checkpointing_without_fsdp_follows_the_same_curve(tmp_path, capsys):
    data = make_shards(tmp_path / "shards")
    common = [*TINY, "--max-steps", "4", "--val-every", "2", "--data", str(data)]
    assert train.main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert train.main([*common, "--activation-checkpointing", "--out", str(tmp_path / "ac")]) == 0
    assert "| activation checkpointing |" in capsys.readouterr().out
    for a, b in zip(read_log(tmp_path / "plain"), read_log(tmp_path / "ac"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a.get("val_loss") == b.get("val_loss")


def test_bfloat16_autocast_on_cpu_runs(tmp_path):
    status, out = run(tmp_path, "--max-steps", 2, "--val-every", 1, "--dtype", "bfloat16")
    assert status == 0 and all(np.isfinite(r["loss"]) for r in read_log(out))


def test_tensorboard_events_written(tmp_path):
    pytest.importorskip("tensorboard")
    status, out = run(tmp_path, "--max-steps", 2, "--val-every", 1, "--tensorboard")
    assert status == 0 and list((out / "tb").glob("events.out.tfevents.*"))


def test_non_finite_loss_stops_cleanly(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_forward = train.GPT.forward

    def poisoned(self, idx, targets=None):
        logits, loss = real_forward(self, idx, targets)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] > 6:  # 1 micro-step per step: steps 0-5 fine, step 6 poisoned
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(train.GPT, "forward", poisoned)
    status, out = run(
        tmp_path, "--max-steps", 20, "--val-every", 0, "--batch-size", 8, "--checkpoint-every", 3
    )
    assert status == 2
    log = read_log(out)  # still valid JSON: the NaN loss is null, flagged
    assert log[-1]["step"] == 6 and log[-1]["error"] == "non-finite"
    assert log[-1]["loss"] is None and log[-1]["nonfinite"] == ["loss"]
    assert sorted(p.name for p in out.glob("ckpt_*")) == ["ckpt_0000003", "ckpt_0000006"]
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "step 6: non-finite loss" in errors[0]


def test_weights_that_become_non_finite_are_never_checkpointed(tmp_path, monkeypatch):
    # The optimizer step of step 2 overflows one weight (as an absurd learning rate or a bf16 overflow
    # would) while that step's loss and gradients were finite: the checkpoint after it is refused.
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def overflowing_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][1].view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", overflowing_step)
    with pytest.raises(
        UserError, match=r"step 3: weight \S+ is not finite.*no checkpoint written.*ckpt_0000002"
    ):
        run(tmp_path, "--max-steps", 6, "--val-every", 0, "--checkpoint-every", 1)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("ckpt_*")) == ["ckpt_0000001", "ckpt_0000002"]
    assert not [p for p in out.iterdir() if TEMP_SUFFIX in p.name]
    assert [r["step"] for r in read_log(out)] == [0, 1, 2]


def test_log_records_are_strict_json():
    from gpt.trainlog import json_record

    record = json_record({"step": 3, "loss": float("nan"), "lr": 1e-3, "ppl": float("inf"), "mfu": None})
    assert record == {
        "step": 3,
        "loss": None,
        "lr": 1e-3,
        "ppl": None,
        "mfu": None,
        "nonfinite": ["loss", "ppl"],
    }
    assert strict_json(json.dumps(record, allow_nan=False)) == record


# --------------------------------------------------------------------------------- evaluation hooks


def test_samples_hellaswag_and_perplexity(tmp_path, gpt2_tokenizer, capsys):
    ids = np.array(gpt2_tokenizer.encode_ordinary(" the cat sat on a mat and then it ran away quickly"))
    data = make_shards(tmp_path / "shards", vocab=len(ids), ids=ids)
    status, out = run(
        tmp_path,
        "--vocab-size", 50304, "--max-steps", 2, "--val-every", 1,
        "--sample-every", 1, "--sample-count", 2, "--sample-tokens", 5, "--sample-prompt", "Hello,",
        "--hellaswag", REPO / "tests" / "data" / "hellaswag_tiny.jsonl", "--hellaswag-every", 1,
        "--eval-text", REPO / "python" / "bpe_fast" / "samples" / "corpora" / "tinyshakespeare.txt", "--eval-text-every", 1,
        "--eval-text-tokens", 200,
        data=data,
    )  # fmt: skip
    assert status == 0
    log = read_log(out)
    assert all(0.0 <= r["hellaswag"] <= 1.0 for r in log)
    assert all(r["ppl"] > 1.0 and np.isfinite(r["ppl"]) for r in log)
    printed = capsys.readouterr().out
    assert printed.count("sample ") == 2 and "'Hello," in printed


def test_plot_writes_png(tmp_path):
    status, out = run(tmp_path, "--max-steps", 4, "--val-every", 2)
    assert status == 0
    from gpt.plot import main as plot_main

    assert plot_main([str(out), "-o", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A run killed while appending leaves half a line: the plot is still drawn from the complete ones.
    with open(out / "log.jsonl", "a") as log:
        log.write('{"step": 4, "lo')
    from gpt.plot import read_log as read_plot_log

    assert [r["step"] for r in read_plot_log(out / "log.jsonl")] == [0, 1, 2, 3]
    assert plot_main([str(out)]) == 0 and (out / "loss.png").is_file()


# --------------------------------------------------------------------------------------- refusals


def test_indivisible_total_batch_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a multiple of B\\*T\\*world_size"):
        run(tmp_path, "--total-batch-size", 100)


def test_bad_shard_is_named_before_training(tmp_path):
    data = make_shards(tmp_path / "shards")
    bad = data / "train_000002.bin"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(ShardError, match="train_000002.bin"):
        run(tmp_path, data=data)
    assert not (tmp_path / "out" / "log.jsonl").exists()


def test_ids_beyond_model_vocab_are_refused(tmp_path):
    data = make_shards(tmp_path / "shards", vocab=100)
    with pytest.raises(ShardError, match="id 9[0-9]"):
        run(tmp_path, data=data)


def manifest_for(folder: Path, vocab_size: int, sha: str, spec: str = "gpt2") -> None:
    shards = [
        {"file": p.name, "split": p.name.split("_")[0], "tokens": int((p.stat().st_size - 1024) // 2)}
        for p in sorted(folder.glob("*.bin"))
    ]
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "format": "bpe-fast-shards",
                "version": 2,
                "tokenizer": {"spec": spec, "sha256": sha, "vocab_size": vocab_size, "eot_id": 0},
                "dtype": "uint16",
                "shards": shards,
                "num_tokens": sum(s["tokens"] for s in shards),
                "num_documents": 1,
            }
        )
    )


def test_fresh_run_into_a_folder_with_checkpoints_is_refused(tmp_path):
    status, out = run(tmp_path, "--max-steps", 1, "--val-every", 0)
    assert status == 0
    with pytest.raises(UserError, match="ckpt_0000001.*--resume"):
        run(tmp_path, "--max-steps", 1, "--val-every", 0, data=tmp_path / "shards")


def test_manifest_mismatches_are_refused(tmp_path):
    data = make_shards(tmp_path / "shards")
    manifest_for(data, VOCAB, "0" * 64)
    with pytest.raises(ManifestError, match="is not the tokenizer the shards .* were made with"):
        run(tmp_path, "--tokenizer", "gpt2", data=data)
    with pytest.raises(ManifestError, match="changed since the shards were made"):
        run(tmp_path, data=data)  # the manifest's own tokenizer is checked too, never used unverified
    manifest_for(data, 50257, tokenizer_sha256("gpt2"))
    with pytest.raises(UserError, match="50257"):
        run(tmp_path, data=data)  # 64 embeddings cannot hold GPT-2's ids
    manifest_for(data, VOCAB, tokenizer_sha256("gpt2"))
    status, _ = run(tmp_path, "--max-steps", 1, data=data)
    assert status == 0


def test_manifest_sets_the_vocab_when_unset(tmp_path):
    data = make_shards(tmp_path / "shards", vocab=60)
    manifest_for(data, 60, tokenizer_sha256("gpt2"))
    status, out = run(tmp_path, "--max-steps", 1, "--vocab-size", "none", data=data)
    assert status == 0
    meta = json.loads((out / "ckpt_0000001" / "meta.json").read_text())
    assert meta["model_config"]["vocab_size"] == 64 and meta["model_config"]["real_vocab_size"] == 60
    assert meta["tokenizer"] == {"spec": "gpt2", "vocab_size": 60, "eot_id": 0}  # as the manifest says


def test_the_manifests_vocab_is_used_from_any_directory_and_never_replaced(tmp_path, monkeypatch):
    import warnings

    import bpe_fast

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = bpe_fast.train(["the cat sat on the mat " * 50], 300, special_tokens=["<|endoftext|>"])
    data = make_shards(tmp_path / "shards")
    tok.save(data / "vocab.json")
    manifest_for(data, tok.vocab_size, tokenizer_sha256(data / "vocab.json"), spec="vocab.json")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the manifest's relative path is not relative to here
    sampling = ["--vocab-size", "320", "--max-steps", "2", "--sample-every", "1", "--sample-count", "1"]
    status, out = run(tmp_path, *sampling, "--sample-tokens", "2", data=data)
    assert status == 0
    meta = json.loads((out / "ckpt_0000002" / "meta.json").read_text())
    assert meta["tokenizer"]["spec"] == str((data / "vocab.json").resolve())
    (data / "vocab.json").unlink()
    with pytest.raises(UserError, match="names the tokenizer .*vocab.json, which is missing"):
        train.main([*TINY, *sampling, "--data", str(data), "--out", str(tmp_path / "out2")])


# ------------------------------------------------------------------------------------------ config


def test_config_precedence_and_presets():
    cfg = parse_config(["--preset", "gpt2-124m", "--max-steps", "10", "--no-compile"])
    assert cfg.max_steps == 10 and not cfg.compile
    assert cfg.total_batch_size == 524288 and cfg.warmup_steps == 715 and cfg.batch_size == 64
    assert (
        cfg.max_lr == 6e-4
        and cfg.min_lr_ratio == 0.1
        and (cfg.beta1, cfg.beta2, cfg.eps) == (0.9, 0.95, 1e-8)
    )
    assert cfg.checkpoint_every == 5000 and cfg.val_every == cfg.hellaswag_every == cfg.sample_every == 250
    tiny = load_preset("tiny-cpu")
    assert tiny["hellaswag"] is None and tiny["log_every"] == 1 and not tiny["compile"]
    assert parse_config(["--stop-at-step", "none"]).stop_at_step is None
    assert parse_config([]) == TrainConfig()
    with pytest.raises(
        ConfigError,
        match="unknown preset 'gpt5': choose one of gpt2-124m, gpt2-1558m, gpt2-350m, gpt2-774m, tiny-cpu",
    ):
        parse_config(["--preset", "gpt5"])


CHECKED_FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["check"] is not None]
BOUNDED_ABOVE = {"dropout", "min_lr_ratio", "beta1", "beta2"}  # fractions and ratios: 1.5 is out of range


def test_every_numeric_field_is_checked():
    kinds = typing.get_type_hints(TrainConfig)
    numeric = [name for name, hint in kinds.items() if int in typing.get_args(hint) + (hint,) or
               float in typing.get_args(hint) + (hint,)]  # fmt: skip
    assert sorted(numeric) == sorted(CHECKED_FIELDS)


@pytest.mark.parametrize("name", CHECKED_FIELDS)
def test_numeric_flags_refuse_nonsense_before_any_work(name, capsys):
    flag = "--" + name.replace("_", "-")
    bad = ["nan", "inf", "-inf", "-1", "1e400", "twelve"] + (["1.5", "1"] if name in BOUNDED_ABOVE else [])
    if name in BOUNDED_ABOVE and name == "min_lr_ratio":
        bad.remove("1")  # a ratio of 1 (no decay) is allowed
    for value in bad:
        with pytest.raises(SystemExit) as exit_info:
            parse_config([flag, value])
        assert exit_info.value.code == 2, (flag, value)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"argument {flag}:" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "values, message",
    [
        ({"max_lr": -1}, "max_lr: -1 is out of range"),
        ({"beta2": 1.0}, "beta2: 1.0 is out of range"),
        ({"n_layer": 2.5}, "n_layer: expected an integer"),
        ({"n_layer": None}, "n_layer: must be set"),
        ({"compile": "yes"}, "compile: expected true or false"),
        ({"dtype": "fp8"}, "dtype: 'fp8' is not one of"),
        ({"n_heads": 4}, "unknown config keys \\['n_heads'\\]"),
    ],
)
def test_preset_files_are_checked_like_flags(tmp_path, values, message):
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps(values))
    with pytest.raises(ConfigError, match=message):
        parse_config(["--preset", str(preset)])
    preset.write_text('{"eps": NaN}')  # Python's json reads NaN; it is still refused
    with pytest.raises(ConfigError, match="eps: 'nan' is not a finite number"):
        parse_config(["--preset", str(preset)])


def test_config_relations_are_checked():
    with pytest.raises(ConfigError, match="--n-embd 100 must be a multiple of --n-head 3"):
        parse_config(["--n-embd", "100", "--n-head", "3"])


def test_lr_schedule_shape():
    cfg = TrainConfig(max_lr=1.0, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    assert train.lr_at(0, cfg) == pytest.approx(0.1)
    assert train.lr_at(9, cfg) == pytest.approx(1.0)
    assert train.lr_at(60, cfg) == pytest.approx(0.55)
    assert train.lr_at(110, cfg) == pytest.approx(0.1) and train.lr_at(500, cfg) == pytest.approx(0.1)


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text
