"""gpt.prepare: corpora -> shards. Round trips, the val split, determinism, restarts, bad records, workers,
merging and the manifest. Kills, command-line errors and the training side have their own files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bpe_fast
from bpe_fast.cliutil import UserError
from conftest import CHILD_PYTHONPATH, CORPORA
from gpt.prepare import main
from gpt.shards import read_header, read_shard
from gpt.shards import sources as shard_sources
from gpt.shards.encoder import BatchEncoder
from gpt.shards.job import prepare
from gpt.shards.manifest import (
    ManifestError,
    check_manifest,
    load_manifest,
    tokenizer_sha256,
    verify_shards,
    write_manifest,
)
from gpt.shards.merge import merge_manifests
from gpt.shards.sources import FileSource, HubSource, Position, expand_files
from gpt.shards.split import document_key
from gpt.shards.writer import PROGRESS_NAME
from gpt.tokenizer import EOT_TEXT as EOT

REPO = Path(__file__).resolve().parents[1]
GPT2_DIR = REPO / "python" / "bpe_fast" / "gpt2"


class Hooked:
    """A tokenizer calling hook() before each batch encode: an interruption at a chosen batch."""

    def __init__(self, tok, hook):
        self.tok, self.hook = tok, hook
        self.vocab_size, self.special_tokens = tok.vocab_size, tok.special_tokens

    def encode_batch_flat(self, texts, **kwargs):
        self.hook()
        return self.tok.encode_batch_flat(texts, **kwargs)


def crash_after(tokenizer, calls: int) -> Hooked:
    left = [calls]

    def hook():
        if left[0] == 0:
            raise KeyboardInterrupt("simulated kill")
        left[0] -= 1

    return Hooked(tokenizer, hook)


def gpt2_with_specials(specials: dict[str, int]):
    base = bpe_fast.Tokenizer.gpt2()
    return bpe_fast.Tokenizer.from_parts(base.tokens(), base.merges, specials, "gpt2")


@pytest.fixture(scope="module")
def gpt2():
    return bpe_fast.Tokenizer.gpt2()


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory) -> list[Path]:
    """Slices of the bundled corpora (en + zh), with blank-line-separated documents."""
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for name, chars in (("tinyshakespeare.txt", 60_000), ("sanguo_yanyi.txt", 25_000)):
        path = folder / name
        path.write_text((CORPORA / name).read_text(encoding="utf-8")[:chars], encoding="utf-8")
        paths.append(path)
    return paths


def expected_docs(paths, sep="\n\n") -> list[str]:
    docs = []
    for path in paths:
        docs += [d for d in Path(path).read_text(encoding="utf-8").split(sep) if d]
    return docs


def split_stream(out_dir: Path, manifest: dict, split: str) -> np.ndarray:
    parts = [read_shard(out_dir / s["file"]) for s in manifest["shards"] if s["split"] == split]
    return np.concatenate(parts) if parts else np.empty(0, np.uint16)


def all_stream(out_dir: Path, manifest: dict) -> np.ndarray:
    return np.concatenate([read_shard(out_dir / s["file"]) for s in manifest["shards"]])


def decoded_docs(tokenizer, ids: np.ndarray, eot_id: int) -> list[str]:
    """Splits a stream at the end-of-text ids (documents are ordinary text, so no other EOT exists)."""
    if not ids.size:
        return []
    assert ids[0] == eot_id, "the stream must start with end-of-text"
    bounds = list(np.flatnonzero(ids == eot_id)) + [ids.size]
    return [
        tokenizer.decode_bytes(ids[a + 1 : b].tolist()).decode("utf-8") for a, b in zip(bounds, bounds[1:])
    ]


def shard_bytes(out_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out_dir.glob("*.bin"))}


def run_prepare(source, tokenizer, out_dir, **kwargs) -> dict:
    kwargs.setdefault("tokenizer_spec", "gpt2")
    kwargs.setdefault("show_progress", False)
    return prepare(source, tokenizer, out_dir, **kwargs)


# ------------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------------


def test_gpt2_round_trip_gives_back_every_document_in_its_split(gpt2, corpus_files, tmp_path):
    source = FileSource(corpus_files, doc_sep="\n\n")
    manifest = run_prepare(source, gpt2, tmp_path, shard_size=5_000, batch_bytes=20_000, val_fraction=0.05)
    docs = expected_docs(corpus_files)
    threshold = manifest["source"]["val"]["threshold"]
    val_docs = [d for d in docs if document_key(d) <= threshold]
    train_docs = [d for d in docs if document_key(d) > threshold]
    assert len(val_docs) == round(0.05 * len(docs))
    # Each split's stream is its documents, in input order, each as <|endoftext|> + its ordinary encoding.
    for split, split_docs in (("val", val_docs), ("train", train_docs)):
        ids = split_stream(tmp_path, manifest, split)
        assert decoded_docs(gpt2, ids, 50256) == split_docs
        expected = []
        for doc in split_docs:
            expected += [50256] + gpt2.encode_ordinary(doc)
        assert ids.tolist() == expected
    assert manifest["num_documents"] == len(docs)
    assert manifest["num_tokens"] == all_stream(tmp_path, manifest).size
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 50257
    assert manifest["tokenizer"]["sha256"] == tokenizer_sha256("gpt2")
    # Shards are numbered 0.. in the order written; each split's shards are full but its last.
    names = [s["file"] for s in manifest["shards"]]
    assert names == [f"{s['split']}_{i:06d}.bin" for i, s in enumerate(manifest["shards"])]
    for split in ("val", "train"):
        sizes = [s["tokens"] for s in manifest["shards"] if s["split"] == split]
        assert sizes and all(n == 5_000 for n in sizes[:-1]) and 0 < sizes[-1] <= 5_000
    assert not (tmp_path / PROGRESS_NAME).exists()
    verify_shards(tmp_path, manifest)
    for shard in manifest["shards"]:
        import hashlib

        data = (tmp_path / shard["file"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()


def test_small_trained_vocab_round_trip_records_its_path_relative_to_the_manifest(tmp_path, corpus_files):
    tok = bpe_fast.train(list(corpus_files), 300, special_tokens=[EOT])
    vocab = tmp_path / "vocab.json"
    tok.save(vocab)
    out = tmp_path / "data" / "shards"
    assert main(["--files", str(corpus_files[0].parent / "*.txt"), "--doc-sep", "\\n\\n", "--tokenizer", str(vocab),
                 "--out", str(out), "--shard-size", "20000", "--no-progress", "-q"]) == 0  # fmt: skip
    manifest = load_manifest(out)
    assert manifest["tokenizer"] == {
        "spec": "../../vocab.json", "sha256": tokenizer_sha256(vocab), "vocab_size": 300, "eot_id": 299
    }  # fmt: skip
    docs = decoded_docs(tok, split_stream(out, manifest, "val"), 299)
    docs += decoded_docs(tok, split_stream(out, manifest, "train"), 299)
    assert sorted(docs) == sorted(expected_docs(corpus_files))


def test_special_token_text_inside_documents_is_ordinary_text(gpt2, tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(f"before {EOT} after", encoding="utf-8")
    manifest = run_prepare(FileSource([path]), gpt2, tmp_path / "out", shard_size=100, val_fraction=0)
    ids = all_stream(tmp_path / "out", manifest).tolist()
    assert ids == [50256] + gpt2.encode_ordinary(f"before {EOT} after")
    assert ids.count(50256) == 1


def test_ids_over_uint16_give_uint32_shards(tmp_path):
    """A vocab over 65536 ids (here: end-of-text at 70000) must never be wrapped into uint16."""
    big = gpt2_with_specials({EOT: 70_000})
    assert big.vocab_size == 70_001
    path = tmp_path / "a.txt"
    path.write_text("hello world", encoding="utf-8")
    vocab = tmp_path / "big.json"
    big.save(vocab)
    manifest = run_prepare(
        FileSource([path]), big, tmp_path / "out", shard_size=1000, val_fraction=0, tokenizer_spec=str(vocab)
    )
    assert manifest["dtype"] == "uint32"
    shard = tmp_path / "out" / manifest["shards"][0]["file"]
    assert read_header(shard)[0].itemsize == 4
    assert read_shard(shard).tolist() == [70_000] + big.encode_ordinary("hello world")


def test_tokenizer_without_end_of_text_is_refused_with_the_fix(tmp_path):
    bare = gpt2_with_specials({})
    path = tmp_path / "a.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match=r"bpe-fast train FILE --vocab N.*--eot-token") as info:
        run_prepare(FileSource([path]), bare, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_vocab_from_bpe_fast_train_with_end_of_text_feeds_prepare(tmp_path, corpus_files):
    """The default `bpe-fast train` vocab (with <|endoftext|>, however it got there) makes shards."""
    vocab = tmp_path / "vocab.json"
    result = subprocess.run(
        [sys.executable, "-m", "bpe_fast", "train", str(corpus_files[0]), "--vocab", "400", "--special", EOT,
         "--no-progress", "-o", str(vocab)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "shards"
    assert main(["--files", str(corpus_files[0]), "--doc-sep", "\\n\\n", "--tokenizer", str(vocab), "--out",
                 str(out), "--no-progress", "-q"]) == 0  # fmt: skip
    manifest = load_manifest(out)
    assert manifest["tokenizer"]["eot_id"] == bpe_fast.load(vocab).special_tokens[EOT]
    assert {s["split"] for s in manifest["shards"]} == {"val", "train"}


# ------------------------------------------------------------------------------------------------
# the validation split
# ------------------------------------------------------------------------------------------------


def _val_docs(gpt2, out: Path, manifest: dict) -> list[str]:
    return decoded_docs(gpt2, split_stream(out, manifest, "val"), 50256)


def test_val_split_is_a_small_hash_chosen_slice_whatever_the_file_order(gpt2, tmp_path):
    files = []
    for i in range(40):
        path = tmp_path / "in" / f"doc{i:02d}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"document {i}: " + "words " * (i + 3), encoding="utf-8")
        files.append(path)
    forward = run_prepare(FileSource(files), gpt2, tmp_path / "fwd", shard_size=10_000, val_fraction=0.1)
    backward = run_prepare(
        FileSource(files[::-1]), gpt2, tmp_path / "bwd", shard_size=10_000, val_fraction=0.1
    )
    val_fwd, val_bwd = _val_docs(gpt2, tmp_path / "fwd", forward), _val_docs(gpt2, tmp_path / "bwd", backward)
    assert len(val_fwd) == 4  # round(0.1 * 40)
    assert sorted(val_fwd) == sorted(val_bwd)  # chosen by content, not by position
    first_four = [p.read_text(encoding="utf-8") for p in files[:4]]
    assert sorted(val_fwd) != sorted(first_four)  # not simply the first files
    keys = sorted(document_key(p.read_text(encoding="utf-8")) for p in files)
    assert sorted(document_key(d) for d in val_fwd) == keys[:4]  # the four smallest keys


def test_a_few_files_still_give_one_val_and_some_train(gpt2, tmp_path):
    """The README's case: a folder of a few .txt files, each one document, default settings."""
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}.txt"
        path.write_text(f"file {i} " * 50, encoding="utf-8")
        files.append(path)
    manifest = run_prepare(FileSource(files), gpt2, tmp_path / "out")
    assert [s["split"] for s in manifest["shards"]] == ["val", "train"]
    assert [s["file"] for s in manifest["shards"]] == ["val_000000.bin", "train_000001.bin"]
    assert len(_val_docs(gpt2, tmp_path / "out", manifest)) == 1
    assert manifest["num_documents"] == 3


def test_one_file_split_by_doc_sep_gets_a_val_split(gpt2, corpus_files, tmp_path):
    manifest = run_prepare(FileSource(corpus_files[:1], doc_sep="\n\n"), gpt2, tmp_path, shard_size=100_000)
    docs = expected_docs(corpus_files[:1])
    val = _val_docs(gpt2, tmp_path, manifest)
    assert len(val) == round(0.01 * len(docs)) >= 1
    train = decoded_docs(gpt2, split_stream(tmp_path, manifest, "train"), 50256)
    assert sorted(val + train) == sorted(docs)


def test_one_document_or_identical_ones_cannot_be_split(gpt2, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("a single document", encoding="utf-8")
    with pytest.raises(UserError, match="--doc-sep"):
        run_prepare(FileSource([one]), gpt2, tmp_path / "out1")
    assert not (tmp_path / "out1").exists()
    run_prepare(FileSource([one]), gpt2, tmp_path / "ok", val_fraction=0)  # no val split: fine
    same = tmp_path / "same.txt"
    same.write_text("x\n\nx\n\nx", encoding="utf-8")
    with pytest.raises(UserError, match="identical"):
        run_prepare(FileSource([same], doc_sep="\n\n"), gpt2, tmp_path / "out2")


def test_val_fraction_zero_means_train_only(gpt2, corpus_files, tmp_path):
    manifest = run_prepare(FileSource(corpus_files[:1]), gpt2, tmp_path, shard_size=4_000, val_fraction=0)
    assert {s["split"] for s in manifest["shards"]} == {"train"}
    assert manifest["shards"][0]["file"] == "train_000000.bin"


def test_val_fraction_is_checked(gpt2, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x", encoding="utf-8")
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            run_prepare(FileSource([path]), gpt2, tmp_path / "out", val_fraction=bad)


# ------------------------------------------------------------------------------------------------
# nothing to train on
# ------------------------------------------------------------------------------------------------


def test_no_usable_record_fails_before_writing_anything(gpt2, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["alpha", "beta", "gamma"]}), tmp_path / "a.parquet")
    with pytest.raises(UserError, match=r"all skipped \(missing_field: 3\) \(check --text-field\)"):
        run_prepare(FileSource([tmp_path / "a.parquet"]), gpt2, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty: 1"):
        run_prepare(FileSource([empty]), gpt2, tmp_path / "out", val_fraction=0)


def test_a_dataset_that_gives_no_train_shard_leaves_nothing_behind(gpt2, tmp_path):
    """Streams are not read twice, so an empty one is found at the end: the job undoes its output."""
    pytest.importorskip("datasets")
    data = tmp_path / "ds"
    data.mkdir()
    (data / "part.jsonl").write_text(json.dumps({"body": "no text field"}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"no tokens at all.*missing_field: 1"):
        run_prepare(HubSource(str(data)), gpt2, out)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# determinism and restarts
# ------------------------------------------------------------------------------------------------


def test_same_shards_with_one_and_two_threads_and_any_batch_size(gpt2, corpus_files, tmp_path):
    outputs = []
    for i, (threads, batch_bytes) in enumerate(((1, 1 << 20), (2, 3_000), (2, 1 << 20))):
        out = tmp_path / f"run{i}"
        run_prepare(FileSource(corpus_files, doc_sep="\n\n"), gpt2, out, shard_size=1_500, val_fraction=0.1,
                    threads=threads, batch_bytes=batch_bytes)  # fmt: skip
        outputs.append(shard_bytes(out))
    names = list(outputs[0])
    assert len(names) > 5 and sum(n.startswith("val_") for n in names) >= 2  # val fills whole shards too
    assert outputs[0] == outputs[1] == outputs[2]


@pytest.mark.parametrize("crash_at", [0, 1, 3, 7, 15])
def test_restart_after_an_interruption_gives_identical_shards(gpt2, corpus_files, tmp_path, crash_at):
    settings = dict(shard_size=1_501, val_fraction=0.1)
    reference = tmp_path / "reference"
    run_prepare(FileSource(corpus_files, doc_sep="\n\n"), gpt2, reference, batch_bytes=4_000, **settings)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_prepare(FileSource(corpus_files, doc_sep="\n\n"), crash_after(gpt2, crash_at), out, batch_bytes=4_000,
                    **settings)  # fmt: skip
    assert not (out / "manifest.json").exists()
    # The restart uses another batch size: resuming must not depend on where batches were cut.
    manifest = run_prepare(FileSource(corpus_files, doc_sep="\n\n"), gpt2, out, batch_bytes=9_000, **settings)
    assert shard_bytes(out) == shard_bytes(reference)
    assert manifest == load_manifest(reference)


def test_finished_folder_is_kept_and_other_settings_are_refused(gpt2, corpus_files, tmp_path):
    source = FileSource(corpus_files[:1], doc_sep="\n\n")
    first = run_prepare(source, gpt2, tmp_path, shard_size=4_000)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert run_prepare(source, gpt2, tmp_path, shard_size=4_000) == first
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    with pytest.raises(UserError, match="another job.*--overwrite"):
        run_prepare(source, gpt2, tmp_path, shard_size=5_000)
    again = run_prepare(source, gpt2, tmp_path, shard_size=5_000, overwrite=True)
    assert max(s["tokens"] for s in again["shards"]) == 5_000
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == sorted(s["file"] for s in again["shards"])


def test_overwrite_never_deletes_shards_another_tool_made(gpt2, corpus_files, tmp_path):
    from gpt.shards import write_shard

    write_shard(tmp_path / "train_000000.bin", [1, 2, 3])  # e.g. llm.c's, no manifest or marker
    (tmp_path / "notes.txt").write_text("keep me")
    source = FileSource(corpus_files[:1], doc_sep="\n\n")
    with pytest.raises(UserError, match="already holds train_000000.bin"):
        run_prepare(source, gpt2, tmp_path)
    from bpe_fast.files import OverwriteRefused

    with pytest.raises(OverwriteRefused, match="did not write"):
        run_prepare(source, gpt2, tmp_path, overwrite=True)
    assert read_shard(tmp_path / "train_000000.bin").tolist() == [1, 2, 3]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_restart_refuses_changed_input_or_a_damaged_shard(gpt2, corpus_files, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text(corpus_files[0].read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_prepare(FileSource([path], doc_sep="\n\n"), crash_after(gpt2, 12), out, shard_size=2_000,
                    batch_bytes=3_000)  # fmt: skip
    progress = json.loads((out / PROGRESS_NAME).read_text())
    assert len(progress["shards"]) >= 2
    # a damaged completed shard: no silent resume on top of it
    first = out / progress["shards"][0]["file"]
    saved = first.read_bytes()
    first.write_bytes(saved[:-2])
    with pytest.raises(UserError, match="cannot resume.*--overwrite"):
        run_prepare(FileSource([path], doc_sep="\n\n"), gpt2, out, shard_size=2_000)
    first.write_bytes(saved)
    # the input changed since the interrupted run (size and mtime are part of the job)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n\nmore text")
    with pytest.raises(UserError, match="other settings or inputs"):
        run_prepare(FileSource([path], doc_sep="\n\n"), gpt2, out, shard_size=2_000)
    manifest = run_prepare(FileSource([path], doc_sep="\n\n"), gpt2, out, shard_size=2_000, overwrite=True)
    docs = _val_docs(gpt2, out, manifest) + decoded_docs(gpt2, split_stream(out, manifest, "train"), 50256)
    assert "more text" in docs


# ------------------------------------------------------------------------------------------------
# inputs and bad records
# ------------------------------------------------------------------------------------------------


def test_jsonl_bad_records_are_skipped_counted_and_never_stop_the_job(gpt2, tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"text": "first good document"}).encode(),
        b"",  # blank line -> empty
        json.dumps({"text": ""}).encode(),  # empty
        json.dumps({"text": "x" * 500}).encode(),  # too_large (max 100 bytes)
        b'{"text": "caf\xff"}',  # invalid_utf8
        json.dumps({"body": "no text"}).encode(),  # missing_field
        json.dumps({"text": None}).encode(),  # not_text
        json.dumps({"text": 12}).encode(),  # not_text
        b'{"text": "unterminated',  # json_error
        b'["a list"]',  # json_error (not an object)
        b'{"text": "lone \\ud800 surrogate"}',  # invalid_unicode
        b'"x' + b"y" * 2000 + b'"',  # a JSON string, not an object: json_error
        json.dumps({"text": "second good \u4e09\u56fd document"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    manifest = run_prepare(FileSource([path], max_doc_bytes=100), gpt2, tmp_path / "out", shard_size=50,
                           val_fraction=0)  # fmt: skip
    assert manifest["skipped"] == {
        "empty": 2, "too_large": 1, "invalid_utf8": 1, "missing_field": 1, "not_text": 2, "json_error": 3,
        "invalid_unicode": 1,
    }  # fmt: skip
    assert manifest["num_documents"] == 2
    ids = all_stream(tmp_path / "out", manifest)
    assert decoded_docs(gpt2, ids, 50256) == ["first good document", "second good \u4e09\u56fd document"]


def test_skips_are_counted_once_across_a_restart(gpt2, tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = []
    for i in range(200):
        rows.append(json.dumps({"text": f"document {i} " * 20} if i % 7 else {"other": i}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    reference = run_prepare(FileSource([path]), gpt2, tmp_path / "ref", shard_size=700, val_fraction=0.1)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(FileSource([path]), crash_after(gpt2, 5), tmp_path / "out", shard_size=700, val_fraction=0.1,
                    batch_bytes=2_000)  # fmt: skip
    manifest = run_prepare(FileSource([path]), gpt2, tmp_path / "out", shard_size=700, val_fraction=0.1)
    assert manifest["skipped"] == reference["skipped"] == {"missing_field": 29}
    assert manifest["num_documents"] == reference["num_documents"] == 171


def test_jsonl_line_longer_than_any_allowed_document_is_dropped_while_reading(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(
        json.dumps({"text": "y" * 10_000}).encode() + b"\n" + json.dumps({"text": "ok"}).encode()
    )
    records = list(FileSource([path], max_doc_bytes=10).records())
    assert [(r.text, r.skip) for r in records] == [(None, "too_large"), ("ok", None)]
    assert sum(r.nbytes for r in records) == path.stat().st_size


def test_parquet_input_with_text_field_and_missing_column(gpt2, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = ["alpha beta", None, "", "gamma \u5b8b\u8bcd", "delta"]
    pq.write_table(
        pa.table({"content": rows, "id": list(range(5))}), tmp_path / "a.parquet", row_group_size=2
    )
    pq.write_table(pa.table({"other": ["x", "y"]}), tmp_path / "b.parquet")
    source = FileSource(expand_files([str(tmp_path / "*.parquet")]), text_field="content")
    manifest = run_prepare(source, gpt2, tmp_path / "out", shard_size=1000, val_fraction=0)
    assert manifest["skipped"] == {"not_text": 1, "empty": 1, "missing_field": 2}
    assert decoded_docs(gpt2, all_stream(tmp_path / "out", manifest), 50256) == [
        "alpha beta",
        "gamma \u5b8b\u8bcd",
        "delta",
    ]
    # restarting inside the file skips whole row groups before the restart row
    tail = list(FileSource([tmp_path / "a.parquet"], text_field="content").records(Position(0, 3, 3, 3)))
    assert [r.text for r in tail] == ["gamma \u5b8b\u8bcd", "delta"]


@pytest.mark.parametrize("sep", ["\n\n", "<|endoftext|>", "\u3002"])
def test_separated_txt_is_streamed_exactly_like_str_split(tmp_path, monkeypatch, sep):
    monkeypatch.setattr(shard_sources, "_READ_BLOCK", 7)  # separators straddle read blocks
    text = (CORPORA / "sanguo_yanyi.txt").read_text(encoding="utf-8")[:3000]
    text = text.replace("\n\n", sep).replace("\u3002", sep) + sep + "tail" + sep
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    records = list(FileSource([path], doc_sep=sep).records())
    assert [r.text if r.text is not None else "" for r in records] == text.split(sep)
    assert sum(r.nbytes for r in records) == path.stat().st_size


def test_separated_txt_drops_oversized_blocks_without_holding_them(tmp_path, monkeypatch):
    monkeypatch.setattr(shard_sources, "_READ_BLOCK", 16)
    path = tmp_path / "t.txt"
    path.write_bytes(b"small\n\n" + b"z" * 5000 + b"\n\nafter\n\nbad \xff utf8")
    records = list(FileSource([path], doc_sep="\n\n", max_doc_bytes=100).records())
    assert [(r.text, r.skip) for r in records] == [
        ("small", None), (None, "too_large"), ("after", None), (None, "invalid_utf8"),
    ]  # fmt: skip


def test_whole_txt_file_over_the_limit_is_not_read(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * 1000)
    records = list(FileSource([path], max_doc_bytes=999).records())
    assert [(r.text, r.skip) for r in records] == [(None, "too_large")]


def test_expand_files_sorts_globs_and_names_missing_inputs(tmp_path):
    for name in ("b.txt", "a.txt", "c.jsonl"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in expand_files([str(tmp_path / "*.txt"), str(tmp_path / "a.txt")])] == [
        "a.txt",
        "b.txt",
    ]
    with pytest.raises(UserError, match="matches no file"):
        expand_files([str(tmp_path / "*.parquet")])
    with pytest.raises(UserError, match="nope.txt"):
        expand_files([str(tmp_path / "nope.txt")])
    (tmp_path / "d.csv").write_text("x")
    with pytest.raises(UserError, match="unknown input format"):
        FileSource([tmp_path / "d.csv"])


@pytest.mark.slow
def test_dataset_source_streams_a_local_dataset_folder(gpt2, tmp_path):
    """The --dataset path (datasets.load_dataset(streaming=True)) on a local folder: no network needed."""
    pytest.importorskip("datasets")
    data = tmp_path / "ds"
    data.mkdir()
    texts = [f"document number {i} " * (i + 1) for i in range(9)]
    (data / "part.jsonl").write_text(
        "\n".join(json.dumps({"text": t}) for t in texts) + "\n", encoding="utf-8"
    )
    manifest = run_prepare(HubSource(str(data)), gpt2, tmp_path / "out", shard_size=30, val_fraction=0)
    assert decoded_docs(gpt2, all_stream(tmp_path / "out", manifest), 50256) == texts
    # two workers split the rows modulo 2 and together hold everything
    parts = []
    for worker in range(2):
        out = tmp_path / f"w{worker}"
        m = run_prepare(
            HubSource(str(data), worker=worker, num_workers=2), gpt2, out, shard_size=30, val_fraction=0
        )
        parts.append(decoded_docs(gpt2, all_stream(out, m), 50256))
    assert parts == [texts[0::2], texts[1::2]]
    # with at least as many data files as workers, each worker streams only its own files
    for i in range(3):
        (data / f"more{i}.jsonl").write_text(json.dumps({"text": f"extra {i}"}) + "\n", encoding="utf-8")
    got = []
    for worker in range(2):
        source = HubSource(str(data), worker=worker, num_workers=2)
        assert source.describe()["split_by"] == "file"
        got += [r.text for r in source.records()]
    assert sorted(got) == sorted(texts + [f"extra {i}" for i in range(3)])


# ------------------------------------------------------------------------------------------------
# workers and merging
# ------------------------------------------------------------------------------------------------


def test_workers_by_file_then_merge_gives_one_folder(gpt2, tmp_path):
    files = []
    for i in range(3):  # three files for two workers: split by file
        path = tmp_path / f"in{i}.txt"
        path.write_text("\n\n".join(f"file {i} doc {j} " * 20 for j in range(30)), encoding="utf-8")
        files.append(path)
    vocab = tmp_path / "tok" / "vocab.json"
    vocab.parent.mkdir()
    gpt2.save(vocab)
    parts = []
    for worker in range(2):
        out = tmp_path / "job" / f"worker_{worker:04d}"
        source = FileSource(files, doc_sep="\n\n", worker=worker, num_workers=2)
        assert source.by_file
        parts.append(
            run_prepare(source, gpt2, out, shard_size=2_000, val_fraction=0.1, tokenizer_spec=str(vocab))
        )
    for part in parts:
        assert {s["split"] for s in part["shards"]} == {"val", "train"}  # every worker holds out its slice
    merged = merge_manifests(
        [tmp_path / "job" / "worker_0001", tmp_path / "job" / "worker_0000"], tmp_path / "job"
    )
    expected = [s["split"] for s in parts[0]["shards"]] + [s["split"] for s in parts[1]["shards"]]
    assert [s["split"] for s in merged["shards"]] == expected
    assert [s["file"] for s in merged["shards"]] == [f"{s}_{i:06d}.bin" for i, s in enumerate(expected)]
    assert merged["num_tokens"] == sum(p["num_tokens"] for p in parts)
    assert merged["tokenizer"]["spec"] == "../tok/vocab.json"  # re-based from worker_000i/ to job/
    assert load_manifest(tmp_path / "job") == merged
    docs = decoded_docs(gpt2, split_stream(tmp_path / "job", merged, "val"), 50256)
    docs += decoded_docs(gpt2, split_stream(tmp_path / "job", merged, "train"), 50256)
    assert sorted(docs) == sorted(expected_docs(files))
    with pytest.raises(ManifestError, match="expected each of 0..1"):
        merge_manifests([tmp_path / "job" / "worker_0000"], tmp_path / "other")
    with pytest.raises(ManifestError, match="empty folder"):
        merge_manifests(
            [tmp_path / "job" / "worker_0000", tmp_path / "job" / "worker_0001"], tmp_path / "job"
        )


def test_merge_refuses_a_part_whose_shard_changed(gpt2, corpus_files, tmp_path):
    part = tmp_path / "part"
    manifest = run_prepare(FileSource(corpus_files[:1], doc_sep="\n\n"), gpt2, part, shard_size=3_000)
    shard = part / manifest["shards"][-1]["file"]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 1  # same size, other content
    shard.write_bytes(bytes(raw))
    with pytest.raises(ManifestError, match="sha256 differs"):
        merge_manifests([part], tmp_path / "merged")


def test_workers_by_record_cover_a_single_file(gpt2, corpus_files, tmp_path):
    docs = expected_docs(corpus_files[:1])
    got = []
    for worker in range(3):
        source = FileSource(corpus_files[:1], doc_sep="\n\n", worker=worker, num_workers=3)
        assert not source.by_file
        m = run_prepare(source, gpt2, tmp_path / f"w{worker}", shard_size=3_000, val_fraction=0)
        got.append(decoded_docs(gpt2, all_stream(tmp_path / f"w{worker}", m), 50256))
    # record k goes to worker k % 3 (no empty blocks in this file, so records = documents)
    assert got == [docs[0::3], docs[1::3], docs[2::3]]


# ------------------------------------------------------------------------------------------------
# the manifest
# ------------------------------------------------------------------------------------------------


def test_check_manifest_refuses_a_mismatched_tokenizer(gpt2, corpus_files, tmp_path):
    manifest = run_prepare(FileSource(corpus_files[:1]), gpt2, tmp_path, shard_size=10_000, val_fraction=0)
    sha = tokenizer_sha256("gpt2")
    check_manifest(manifest, 50257, sha)  # matches
    check_manifest(manifest, 50257, model_vocab_size=50304)  # padded embedding holds every id
    check_manifest(None, 123)  # shards without a manifest: nothing to check
    with pytest.raises(ManifestError, match="vocab_size 50257.*vocab_size 300"):
        check_manifest(manifest, 300)
    with pytest.raises(ManifestError, match="different tokenizer"):
        check_manifest(manifest, 50257, "0" * 64)
    with pytest.raises(ManifestError, match="smaller"):
        check_manifest(manifest, 50257, model_vocab_size=50000)


def test_load_manifest_validates_and_names_the_file(tmp_path):
    assert load_manifest(tmp_path) is None
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(ManifestError, match="manifest.json.*format"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="missing keys"):
        write_manifest(tmp_path, {"format": "bpe-fast-shards", "version": 2})


@pytest.mark.parametrize("name", ["../train_000000.bin", "/etc/passwd", "sub/train_000000.bin", "..", ""])
def test_manifest_shard_names_stay_inside_their_folder(tmp_path, name):
    manifest = {
        "format": "bpe-fast-shards", "version": 2, "dtype": "uint16", "num_tokens": 3, "num_documents": 1,
        "tokenizer": {"spec": "gpt2", "sha256": "x", "vocab_size": 50257, "eot_id": 50256},
        "shards": [{"file": name, "split": "train", "tokens": 3}],
    }  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="not a plain file name"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="not a plain file name"):
        merge_manifests([tmp_path], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_tokenizer_sha256_of_gpt2_is_the_two_files_concatenated(tmp_path):
    import hashlib

    raw = (GPT2_DIR / "encoder.json").read_bytes() + (GPT2_DIR / "vocab.bpe").read_bytes()
    assert tokenizer_sha256("gpt2") == hashlib.sha256(raw).hexdigest()
    vocab = tmp_path / "v.json"
    vocab.write_bytes(b"{}")
    assert tokenizer_sha256(vocab) == hashlib.sha256(b"{}").hexdigest()


# ------------------------------------------------------------------------------------------------
# command line and the encoder
# ------------------------------------------------------------------------------------------------


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--files", "--dataset", "--name", "--text-field", "--doc-sep", "--tokenizer", "--out",
                 "--shard-size", "--val-fraction", "--worker", "--num-workers", "--max-doc-bytes", "--threads",
                 "--overwrite", "--eot-token", "--batch-bytes", "--input-format"):  # fmt: skip
        assert flag in text
    with pytest.raises(SystemExit):
        main(["merge-manifests", "--help"])


def test_cli_takes_several_files_per_flag(gpt2, corpus_files, tmp_path):
    out = tmp_path / "out"
    args = [
        "--files",
        *map(str, corpus_files),
        "--doc-sep",
        "\\n\\n",
        "--out",
        str(out),
        "--shard-size",
        "1e4",
    ]
    assert main([*args, "--no-progress", "-q"]) == 0
    manifest = load_manifest(out)
    assert [f["path"] for f in manifest["source"]["files"]] == [str(p) for p in corpus_files]
    assert manifest["shard_size"] == 10_000
    docs = _val_docs(gpt2, out, manifest) + decoded_docs(gpt2, split_stream(out, manifest, "train"), 50256)
    assert sorted(docs) == sorted(expected_docs(corpus_files))


def test_cli_end_to_end_with_workers_and_merge(tmp_path, corpus_files, gpt2):
    for worker in range(2):
        assert main(["--files", str(corpus_files[0].parent / "*.txt"), "--doc-sep", "\\n\\n", "--out",
                     str(tmp_path / "job"), "--shard-size", "4000", "--worker", str(worker), "--num-workers", "2",
                     "--no-progress", "-q"]) == 0  # fmt: skip
    parts = sorted(str(p) for p in (tmp_path / "job").glob("worker_*"))
    assert main(["merge-manifests", *parts, "--out", str(tmp_path / "job")]) == 0
    merged = load_manifest(tmp_path / "job")
    docs = _val_docs(gpt2, tmp_path / "job", merged)
    docs += decoded_docs(gpt2, split_stream(tmp_path / "job", merged, "train"), 50256)
    assert sorted(docs) == sorted(expected_docs(corpus_files))


def test_batch_encoder_contract(gpt2):
    encoder = BatchEncoder(gpt2, 50256, num_threads=2)
    ids, offsets = encoder(["ab", "", "\u4e09\u56fd", EOT])
    n_ab = len(gpt2.encode_ordinary("ab"))
    assert offsets.tolist()[:3] == [0, 1 + n_ab, 2 + n_ab] and offsets[-1] == ids.size
    assert ids.dtype == np.uint32 and ids[0] == 50256
    assert ids[offsets[3] :].tolist() == [50256] + gpt2.encode_ordinary(EOT)  # special text stays ordinary
    empty_ids, empty_offsets = encoder([])
    assert empty_ids.size == 0 and empty_offsets.tolist() == [0]
    with pytest.raises(TypeError, match="not a bpe_fast Tokenizer"):
        BatchEncoder(object(), 0)


def test_prepare_runs_from_another_working_directory(gpt2, corpus_files, tmp_path):
    """Relative --files/--out/--tokenizer are taken from the working directory the job starts in."""
    work = tmp_path / "work"
    (work / "corpus").mkdir(parents=True)
    for path in corpus_files:
        (work / "corpus" / path.name).write_bytes(path.read_bytes())
    gpt2.save(work / "vocab.json")
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    result = subprocess.run(
        [sys.executable, "-m", "gpt.prepare", "--files", "corpus/*.txt", "--doc-sep", "\\n\\n", "--tokenizer",
         "vocab.json", "--out", "shards", "--no-progress", "-q"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load_manifest(work / "shards")["tokenizer"]["spec"] == "../vocab.json"


def _leave_a_stale_temp(target: Path) -> None:
    """A writer of `target` that dies mid-write (its temp file stays, its pid is gone)."""
    from bpe_fast.files import atomic_path

    pid = os.fork()
    if pid == 0:  # the child: only pure-Python file code runs here
        with atomic_path(target) as temp:
            Path(temp).write_bytes(b"half a shard")
            os._exit(0)
    os.waitpid(pid, 0)
    assert [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]


def test_an_interrupted_merge_is_finished_by_running_it_again(gpt2, corpus_files, tmp_path):
    parts = []
    for worker in range(2):
        out = tmp_path / f"worker_{worker:04d}"
        source = FileSource(corpus_files, doc_sep="\n\n", worker=worker, num_workers=2)
        parts.append(run_prepare(source, gpt2, out, shard_size=4_000))
    merged_dir = tmp_path / "merged"
    reference = merge_manifests([tmp_path / "worker_0000", tmp_path / "worker_0001"], tmp_path / "reference")
    # A merge killed after its first links, with a temp file of a link in progress.
    merged_dir.mkdir()
    first = reference["shards"][0]["file"]
    (merged_dir / first).write_bytes((tmp_path / "reference" / first).read_bytes())
    _leave_a_stale_temp(merged_dir / reference["shards"][1]["file"])
    foreign = merged_dir / f".{reference['shards'][1]['file']}.otherhost-999999.abcd1234.bpefast-tmp"
    foreign.write_bytes(b"another machine's")
    assert merge_manifests([tmp_path / "worker_0000", tmp_path / "worker_0001"], merged_dir) == {
        **reference,
        "source": load_manifest(merged_dir)["source"],
    }
    assert shard_bytes(merged_dir) == shard_bytes(tmp_path / "reference")
    leftover = [p.name for p in merged_dir.iterdir() if p.name.endswith(".bpefast-tmp")]
    assert leftover == [foreign.name]  # ours removed; another host's is not ours to judge
    (merged_dir / "manifest.json").unlink()
    (merged_dir / first).write_bytes(b"something else")
    with pytest.raises(ManifestError, match="other contents"):
        merge_manifests([tmp_path / "worker_0000", tmp_path / "worker_0001"], merged_dir)


def test_a_run_killed_before_its_first_progress_file_starts_afresh(gpt2, corpus_files, tmp_path):
    from bpe_fast.files import write_marker

    write_marker(tmp_path, "gpt.prepare")  # all such a run leaves
    manifest = run_prepare(FileSource(corpus_files[:1], doc_sep="\n\n"), gpt2, tmp_path, shard_size=4_000)
    assert manifest["num_documents"] == len(expected_docs(corpus_files[:1]))
    other = tmp_path / "other"
    other.mkdir()
    write_marker(other, "lora.finetune")  # another tool's folder is still refused
    with pytest.raises(UserError, match="already holds .bpe-fast-output.json"):
        run_prepare(FileSource(corpus_files[:1], doc_sep="\n\n"), gpt2, other, shard_size=4_000)
