"""The shard loader: DDP slicing, determinism, resume state, shuffling, validation of bad shards and manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gpt.data import (
    ManifestError,
    ShardError,
    ShardLoader,
    check_manifest,
    list_shards,
    read_manifest,
    write_shard,
)
from gpt.shards import HEADER_BYTES

EOT = 0


def make_stream(n_tokens: int, vocab: int = 500, seed: int = 0, doc_len: int = 37) -> np.ndarray:
    """Token stream whose documents start with EOT every `doc_len` tokens, other ids in [1, vocab)."""
    tokens = np.random.default_rng(seed).integers(1, vocab, n_tokens)
    tokens[::doc_len] = EOT
    return tokens


def write_split(folder, split: str, shards: list[np.ndarray], first_index: int = 0, vocab: int = 500):
    for i, tokens in enumerate(shards):
        write_shard(folder / f"{split}_{first_index + i:06d}.bin", tokens, vocab_size=vocab)


@pytest.fixture
def shard_dir(tmp_path):
    write_split(tmp_path, "val", [make_stream(3000, seed=1)])
    write_split(tmp_path, "train", [make_stream(2000, seed=2), make_stream(2500, seed=3)], first_index=1)
    return tmp_path


def test_list_shards_in_index_order_and_refuses_empty(tmp_path):
    write_split(tmp_path, "train", [make_stream(10)] * 3, first_index=8)  # 8, 9, 10: numeric order
    (tmp_path / "train_notes.txt").write_text("x")
    assert [p.name for p in list_shards(tmp_path, "train")] == [
        "train_000008.bin",
        "train_000009.bin",
        "train_000010.bin",
    ]
    with pytest.raises(FileNotFoundError, match="val_"):
        list_shards(tmp_path, "val")


def test_reexports_roundtrip(tmp_path):
    from gpt.data import read_shard

    write_shard(tmp_path / "a.bin", [1, 2, 70000])
    assert read_shard(tmp_path / "a.bin").tolist() == [1, 2, 70000]


def test_batches_follow_the_stream_and_ranks_split_each_global_batch(shard_dir):
    B, T, world = 2, 8, 3
    stream = np.concatenate(
        [np.fromfile(p, dtype="<u2", offset=HEADER_BYTES) for p in list_shards(shard_dir, "train")]
    )
    single = ShardLoader(shard_dir, "train", B * world, T)
    ranks = [ShardLoader(shard_dir, "train", B, T, rank=r, world_size=world) for r in range(world)]
    x0, y0 = single.next_batch()
    parts = [loader.next_batch() for loader in ranks]
    assert torch.equal(torch.cat([p[0] for p in parts]), x0)
    assert x0.dtype == torch.int64 and x0.shape == (B * world, T)
    assert x0.flatten().tolist() == stream[: B * world * T].tolist()
    assert torch.equal(y0.flatten(), torch.from_numpy(stream[1 : B * world * T + 1].astype(np.int64)))
    for _ in range(40):  # crosses the shard boundary
        x, y = single.next_batch()
        parts = [loader.next_batch() for loader in ranks]
        # Rank r's rows are rows [r*B, (r+1)*B) of the single-process batch of B*world rows.
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert single.state_dict() == ranks[0].state_dict() == ranks[2].state_dict()


def test_epoch_wraps_to_first_shard(shard_dir):
    loader = ShardLoader(shard_dir, "train", 4, 16)
    first, _ = loader.next_batch()
    per_shard = [(2000 - 1) // 64, (2500 - 1) // 64]
    for _ in range(sum(per_shard) - 1):
        loader.next_batch()
    assert loader.state_dict()["epoch"] == 1
    again, _ = loader.next_batch()
    assert torch.equal(first, again)


def test_state_dict_resumes_exactly(shard_dir):
    a = ShardLoader(shard_dir, "train", 2, 16, rank=1, world_size=2, shuffle=True, seed=7, eot_id=EOT)
    for _ in range(50):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # survives meta.json
    expected = [a.next_batch() for _ in range(60)]
    b = ShardLoader(shard_dir, "train", 2, 16, rank=1, world_size=2, shuffle=True, seed=7, eot_id=EOT)
    b.load_state_dict(state)
    for x, y in expected:
        bx, by = b.next_batch()
        assert torch.equal(bx, x) and torch.equal(by, y)


def test_shuffle_is_seeded_and_permutes_whole_documents(tmp_path):
    docs = [np.array([EOT] + [100 + d] * (5 + d % 4)) for d in range(200)]
    stream = np.concatenate(docs)
    write_split(tmp_path, "train", [stream])
    B, T = 1, 8
    n = (stream.size - 1) // (B * T)

    def epoch_tokens(seed):
        loader = ShardLoader(tmp_path, "train", B, T, shuffle=True, seed=seed, eot_id=EOT)
        return torch.cat([loader.next_batch()[0].flatten() for _ in range(n)]).numpy()

    first, again, other = epoch_tokens(3), epoch_tokens(3), epoch_tokens(4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, stream[: first.size])
    # Every document arrives whole: each EOT is followed by that document's own tokens.
    starts = np.flatnonzero(first == EOT)
    for s, e in zip(starts[:-1], starts[1:]):
        body = first[s + 1 : e]
        assert body.size >= 5 and np.all(body == body[0])
    # The unshuffled loader reads the stream as written.
    plain = ShardLoader(tmp_path, "train", B, T)
    assert np.array_equal(plain.next_batch()[0].flatten().numpy(), stream[:T])


def test_new_epoch_reshuffles(tmp_path):
    write_split(tmp_path, "train", [make_stream(400, seed=s) for s in range(4)])
    loader = ShardLoader(tmp_path, "train", 1, 32, shuffle=True, seed=0, eot_id=EOT)
    per_epoch = 4 * ((400 - 1) // 32)
    epoch0 = torch.cat([loader.next_batch()[0] for _ in range(per_epoch)])
    assert loader.state_dict()["epoch"] == 1
    epoch1 = torch.cat([loader.next_batch()[0] for _ in range(per_epoch)])
    assert not torch.equal(epoch0, epoch1)
    assert sorted(epoch0.flatten().tolist()) != []


def test_shuffle_needs_eot(shard_dir):
    with pytest.raises(ValueError, match="eot_id"):
        ShardLoader(shard_dir, "train", 2, 8, shuffle=True)


def test_too_small_shards_are_skipped_or_refused(tmp_path):
    write_split(tmp_path, "train", [make_stream(50), make_stream(1000)])
    loader = ShardLoader(tmp_path, "train", 2, 16)  # needs 33 tokens: both fit
    assert loader.usable == [0, 1]
    loader = ShardLoader(tmp_path, "train", 4, 16)  # needs 65: shard 0 skipped
    assert loader.usable == [1]
    with pytest.raises(ValueError, match="tokens one step needs"):
        ShardLoader(tmp_path, "train", 64, 16)


def test_loader_state_from_other_shards_is_refused(shard_dir):
    state = ShardLoader(shard_dir, "train", 2, 8).state_dict()
    state["shard"] = "train_000099.bin"
    with pytest.raises(ValueError, match="shard set changed"):
        ShardLoader(shard_dir, "train", 2, 8).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        ShardLoader(shard_dir, "train", 2, 8, seed=5).load_state_dict(
            ShardLoader(shard_dir, "train", 2, 8).state_dict()
        )


# ----------------------------------------------------------------------------------------- bad shards


def test_wrong_magic_fails_at_start_naming_the_shard(shard_dir):
    bad = shard_dir / "train_000002.bin"
    raw = bytearray(bad.read_bytes())
    raw[0:4] = (12345).to_bytes(4, "little")
    bad.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="train_000002.bin.*magic"):
        ShardLoader(shard_dir, "train", 2, 8)


def test_truncated_shard_fails_at_start_naming_it(shard_dir):
    bad = shard_dir / "train_000002.bin"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(ShardError, match="train_000002.bin.*truncated"):
        ShardLoader(shard_dir, "train", 2, 8)


def test_ids_beyond_vocab_fail_when_the_shard_is_loaded_naming_it(shard_dir):
    tokens = make_stream(2500, seed=3)
    tokens[1234] = 600
    write_shard(shard_dir / "train_000002.bin", tokens, vocab_size=1000)
    loader = ShardLoader(shard_dir, "train", 2, 8, vocab_size=500)  # headers only at start
    with pytest.raises(ShardError, match="train_000002.bin.*600.*vocab size 500"):
        for _ in range(400):  # shard 1 (clean) is read first, then shard 2
            loader.next_batch()
    loader = ShardLoader(shard_dir, "train", 2, 8, vocab_size=601)  # in range: accepted
    for _ in range(400):
        loader.next_batch()


# -------------------------------------------------------------------------------------------- manifest


def write_manifest(folder, vocab_size=500, sha="ab" * 32, tokens=None):
    shards = [
        {
            "file": p.name,
            "split": p.name.split("_")[0],
            "tokens": tokens or int((p.stat().st_size - HEADER_BYTES) // 2),
        }
        for p in sorted(folder.glob("*.bin"))
    ]
    manifest = {
        "format": "bpe-fast-shards",
        "version": 1,
        "tokenizer": {"spec": "some/vocab.json", "sha256": sha, "vocab_size": vocab_size, "eot_id": EOT},
        "dtype": "uint16",
        "shards": shards,
        "num_tokens": sum(s["tokens"] for s in shards),
        "num_documents": 1,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_manifest_absent_is_none(shard_dir):
    assert read_manifest(shard_dir) is None


def test_matching_manifest_passes(shard_dir):
    write_manifest(shard_dir)
    manifest = read_manifest(shard_dir)
    check_manifest(
        manifest, shard_dir, model_vocab_size=512, tokenizer_vocab_size=500, tokenizer_sha256="ab" * 32
    )


def test_manifest_tokenizer_mismatch_is_refused(shard_dir):
    write_manifest(shard_dir)
    manifest = read_manifest(shard_dir)
    with pytest.raises(ManifestError, match="manifest.json.*vocab_size 500"):
        check_manifest(manifest, shard_dir, model_vocab_size=50304, tokenizer_vocab_size=50257)
    with pytest.raises(ManifestError, match="manifest.json.*sha256"):
        check_manifest(
            manifest, shard_dir, model_vocab_size=512, tokenizer_vocab_size=500, tokenizer_sha256="cd" * 32
        )
    with pytest.raises(ManifestError, match="manifest.json.*smaller"):
        check_manifest(manifest, shard_dir, model_vocab_size=256)


def test_manifest_token_count_mismatch_is_refused(shard_dir):
    write_manifest(shard_dir, tokens=7)
    with pytest.raises(ManifestError, match=r"\.bin.*7"):
        check_manifest(read_manifest(shard_dir), shard_dir, model_vocab_size=512)
