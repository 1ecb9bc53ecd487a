"""gpt.prepare: corpora -> shards. Round trips, determinism, kill + restart, bad records, workers, manifest.

Tokenizer: bpe_fast's GPT-2 when its Rust core is built; until then tiktoken built from the bundled
GPT-2 files (the same ids, DESIGN.md section 3) so the pipeline is still tested end to end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gpt import prepare_sources
from gpt.manifest import (
    ManifestError,
    check_manifest,
    load_manifest,
    merge_manifests,
    tokenizer_sha256,
    verify_shards,
    write_manifest,
)
from gpt.prepare import main, prepare
from gpt.prepare_encoder import BatchEncoder
from gpt.prepare_sources import FileSource, HubSource, expand_files
from gpt.prepare_writer import PROGRESS_NAME
from gpt.shards import read_header, read_shard

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO / "data" / "corpora"
GPT2_DIR = REPO / "python" / "bpe_fast" / "gpt2"
EOT = "<|endoftext|>"
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Builds the GPT-2 tokenizer in this process and in the subprocesses of the kill/restart test.
TOKENIZER_CODE = textwrap.dedent(
    f"""
    def gpt2_tokenizer():
        try:
            import bpe_fast
            from bpe_fast import _core  # noqa: F401  (the Rust core must be built)
            return bpe_fast.Tokenizer.gpt2()
        except (ImportError, AttributeError):
            import tiktoken
            from tiktoken.load import data_gym_to_mergeable_bpe_ranks

            ranks = data_gym_to_mergeable_bpe_ranks(
                vocab_bpe_file={str(GPT2_DIR / "vocab.bpe")!r}, encoder_json_file={str(GPT2_DIR / "encoder.json")!r}
            )
            return tiktoken.Encoding("gpt2", pat_str={GPT2_PATTERN!r}, mergeable_ranks=ranks,
                                     special_tokens={{{EOT!r}: 50256}})


    class HookedCore:
        def __init__(self, core, hook):
            self.core, self.hook = core, hook

        def encode_batch_to_buffer(self, *args):
            self.hook()
            return self.core.encode_batch_to_buffer(*args)


    class Hooked:  # GPT-2 calling hook() before each batch; keeps bpe_fast's fast core path when built
        def __init__(self, tok, hook):
            self.vocab_size, self.special_tokens = 50257, {{{EOT!r}: 50256}}
            if hasattr(tok, "_core"):
                self._core = HookedCore(tok._core, hook)
            else:
                self.encode_ordinary_batch = lambda texts, **kw: (hook(), tok.encode_ordinary_batch(texts, **kw))[1]
    """
)
_namespace: dict = {}
exec(TOKENIZER_CODE, _namespace)
gpt2_tokenizer = _namespace["gpt2_tokenizer"]


def gpt2_with_specials(specials: dict[str, int]):
    """GPT-2's merges with other special tokens: bpe_fast when built, else tiktoken."""
    base = gpt2_tokenizer()
    if hasattr(base, "_core"):
        import bpe_fast

        return bpe_fast.Tokenizer.from_parts(base.tokens(), base.merges, specials, "gpt2")
    import tiktoken

    return tiktoken.Encoding(
        "x", pat_str=GPT2_PATTERN, mergeable_ranks=base._mergeable_ranks, special_tokens=specials
    )


def bpe_fast_core_built() -> bool:
    try:
        import bpe_fast
        from bpe_fast import _core  # noqa: F401

        return hasattr(bpe_fast, "train") and hasattr(bpe_fast, "Tokenizer")
    except ImportError:
        return False


needs_bpe_fast = pytest.mark.skipif(not bpe_fast_core_built(), reason="bpe_fast's Rust core is not built")


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory) -> list[Path]:
    """Slices of the bundled corpora (en + zh), with blank-line-separated documents."""
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for name, chars in (("tinyshakespeare.txt", 60_000), ("sanguo_yanyi.txt", 25_000)):
        text = (CORPORA / name).read_text(encoding="utf-8")[:chars]
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def expected_docs(paths, sep="\n\n") -> list[str]:
    docs = []
    for path in paths:
        docs += [d for d in Path(path).read_text(encoding="utf-8").split(sep) if d]
    return docs


def stream(out_dir: Path, manifest: dict) -> np.ndarray:
    return np.concatenate([read_shard(out_dir / s["file"]) for s in manifest["shards"]])


def decoded_docs(tokenizer, ids: np.ndarray, eot_id: int) -> list[str]:
    """Splits the stream at the end-of-text ids (documents are ordinary text, so no other EOT exists)."""
    assert ids.size and ids[0] == eot_id, "the stream must start with end-of-text"
    cuts = np.flatnonzero(ids == eot_id)
    bounds = list(cuts) + [ids.size]
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


def test_gpt2_round_trip_gives_back_every_document(gpt2, corpus_files, tmp_path):
    source = FileSource(corpus_files, doc_sep="\n\n")
    manifest = run_prepare(source, gpt2, tmp_path, shard_size=5_000, batch_bytes=20_000)
    ids = stream(tmp_path, manifest)
    docs = expected_docs(corpus_files)
    assert decoded_docs(gpt2, ids, 50256) == docs
    assert manifest["num_documents"] == len(docs)
    assert manifest["num_tokens"] == ids.size == sum(s["tokens"] for s in manifest["shards"])
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 50257
    assert manifest["tokenizer"]["sha256"] == tokenizer_sha256("gpt2")
    # shard 0 is val, all others train, all full but the last, named by stream index
    names = [s["file"] for s in manifest["shards"]]
    assert names[0] == "val_000000.bin" and names[1:] == [f"train_{i:06d}.bin" for i in range(1, len(names))]
    assert all(s["tokens"] == 5_000 for s in manifest["shards"][:-1])
    assert not (tmp_path / PROGRESS_NAME).exists()
    verify_shards(tmp_path, manifest)
    # the tokens are exactly each document's ordinary encoding after an end-of-text
    expected = []
    for doc in docs:
        expected += [50256] + gpt2.encode_ordinary(doc)
    assert ids.tolist() == expected


@needs_bpe_fast
def test_small_trained_vocab_round_trip(tmp_path, corpus_files):
    import bpe_fast

    tok = bpe_fast.train(list(corpus_files), 300, special_tokens=[EOT])
    vocab = tmp_path / "vocab.json"
    tok.save(vocab)
    out = tmp_path / "shards"
    assert main(["--files", str(corpus_files[0].parent / "*.txt"), "--doc-sep", "\\n\\n", "--tokenizer", str(vocab),
                 "--out", str(out), "--shard-size", "20000", "--no-progress", "-q"]) == 0  # fmt: skip
    manifest = load_manifest(out)
    assert manifest["tokenizer"] == {
        "spec": str(vocab), "sha256": tokenizer_sha256(vocab), "vocab_size": 300, "eot_id": 299
    }  # fmt: skip
    docs = expected_docs(sorted(corpus_files))
    assert decoded_docs(tok, stream(out, manifest), tok.special_tokens[EOT]) == docs


def test_special_token_text_inside_documents_is_ordinary_text(gpt2, tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(f"before {EOT} after", encoding="utf-8")
    manifest = run_prepare(FileSource([path]), gpt2, tmp_path / "out", shard_size=100)
    ids = stream(tmp_path / "out", manifest).tolist()
    assert ids == [50256] + gpt2.encode_ordinary(f"before {EOT} after")
    assert ids.count(50256) == 1


def test_ids_over_uint16_give_uint32_shards(tmp_path):
    """A vocab over 65536 ids (here: end-of-text at 70000) must never be wrapped into uint16."""
    from gpt.prepare_encoder import tokenizer_vocab_size

    big = gpt2_with_specials({EOT: 70_000})
    assert tokenizer_vocab_size(big) == 70_001
    path = tmp_path / "a.txt"
    path.write_text("hello world", encoding="utf-8")
    manifest = run_prepare(
        FileSource([path]), big, tmp_path / "out", shard_size=1000, tokenizer_sha256_hex="x"
    )
    assert manifest["dtype"] == "uint32"
    shard = tmp_path / "out" / manifest["shards"][0]["file"]
    assert read_header(shard)[0].itemsize == 4
    assert read_shard(shard).tolist() == [70_000] + big.encode_ordinary("hello world")


def test_tokenizer_without_end_of_text_is_refused_with_a_hint(tmp_path):
    bare = gpt2_with_specials({})
    path = tmp_path / "a.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r'--special "<\|endoftext\|>"'):
        run_prepare(FileSource([path]), bare, tmp_path / "out", tokenizer_sha256_hex="x")


# ------------------------------------------------------------------------------------------------
# determinism and restarts
# ------------------------------------------------------------------------------------------------


def test_same_shards_with_one_and_two_threads_and_any_batch_size(gpt2, corpus_files, tmp_path):
    outputs = []
    for i, (threads, batch_bytes) in enumerate(((1, 1 << 20), (2, 3_000), (2, 1 << 20))):
        out = tmp_path / f"run{i}"
        run_prepare(FileSource(corpus_files, doc_sep="\n\n"), gpt2, out, shard_size=7_000,
                    threads=threads, batch_bytes=batch_bytes)  # fmt: skip
        outputs.append(shard_bytes(out))
    assert len(outputs[0]) > 3
    assert outputs[0] == outputs[1] == outputs[2]


def _CrashAfter(tokenizer, calls: int):
    """The tokenizer, failing after `calls` batch encodes: an interruption at a chosen batch."""
    left = [calls]

    def hook():
        if left[0] == 0:
            raise KeyboardInterrupt("simulated kill")
        left[0] -= 1

    return _namespace["Hooked"](tokenizer, hook)


@pytest.mark.parametrize("crash_after", [0, 1, 3, 7])
def test_restart_after_an_interruption_gives_identical_shards(gpt2, corpus_files, tmp_path, crash_after):
    source_args = dict(doc_sep="\n\n")
    reference = tmp_path / "reference"
    run_prepare(FileSource(corpus_files, **source_args), gpt2, reference, shard_size=3_001, batch_bytes=4_000)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_prepare(FileSource(corpus_files, **source_args), _CrashAfter(gpt2, crash_after), out,
                    shard_size=3_001, batch_bytes=4_000)  # fmt: skip
    assert not (out / "manifest.json").exists()
    # The restart uses another batch size: resuming must not depend on where batches were cut.
    manifest = run_prepare(
        FileSource(corpus_files, **source_args), gpt2, out, shard_size=3_001, batch_bytes=9_000
    )
    assert shard_bytes(out) == shard_bytes(reference)
    assert manifest == load_manifest(reference)


KILL_SCRIPT = TOKENIZER_CODE + textwrap.dedent(
    """
    import sys, time
    from gpt.prepare import prepare
    from gpt.prepare_sources import FileSource

    out, delay, files = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    tokenizer = Hooked(gpt2_tokenizer(), lambda: time.sleep(delay))  # slow, so the parent can kill mid-run
    prepare(FileSource(files, doc_sep="\\n\\n"), tokenizer, out, tokenizer_spec="gpt2",
            shard_size=2_000, batch_bytes=2_000, show_progress=False)
    """
)


def _python_env() -> dict:
    env = dict(os.environ)
    paths = [str(REPO)]
    if importlib.util.find_spec("bpe_fast") is None or "python" in str(
        importlib.util.find_spec("bpe_fast").origin
    ):
        paths.append(str(REPO / "python"))
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_kill_and_restart_subprocess_gives_identical_shards(corpus_files, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT, encoding="utf-8")
    files = [str(p) for p in corpus_files]
    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run([sys.executable, str(script), str(reference), "0", *files], env=_python_env(), check=True)

    job = subprocess.Popen([sys.executable, str(script), str(out), "0.05", *files], env=_python_env())
    deadline = time.monotonic() + 60
    shards_at_kill = 0
    while time.monotonic() < deadline and job.poll() is None:
        try:
            shards_at_kill = len(json.loads((out / PROGRESS_NAME).read_text())["shards"])
        except (OSError, ValueError):
            shards_at_kill = 0
        if shards_at_kill >= 3:
            job.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    assert not (out / "manifest.json").exists()
    assert len(shard_bytes(out)) >= shards_at_kill

    subprocess.run([sys.executable, str(script), str(out), "0", *files], env=_python_env(), check=True)
    assert shard_bytes(out) == shard_bytes(reference)
    assert load_manifest(out) == load_manifest(reference)


def test_finished_folder_is_kept_and_other_settings_are_refused(gpt2, corpus_files, tmp_path):
    source = FileSource(corpus_files[:1], doc_sep="\n\n")
    first = run_prepare(source, gpt2, tmp_path, shard_size=4_000)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert run_prepare(source, gpt2, tmp_path, shard_size=4_000) == first
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    with pytest.raises(RuntimeError, match="another job"):
        run_prepare(source, gpt2, tmp_path, shard_size=5_000)
    again = run_prepare(source, gpt2, tmp_path, shard_size=5_000, overwrite=True)
    assert all(s["tokens"] == 5_000 for s in again["shards"][:-1])
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == sorted(s["file"] for s in again["shards"])


def test_restart_refuses_changed_input_or_a_damaged_shard(gpt2, corpus_files, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text(corpus_files[0].read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_prepare(
            FileSource([path], doc_sep="\n\n"),
            _CrashAfter(gpt2, 12),
            out,
            shard_size=2_000,
            batch_bytes=3_000,
        )
    progress = json.loads((out / PROGRESS_NAME).read_text())
    assert len(progress["shards"]) >= 2
    # a damaged completed shard: no silent resume on top of it
    first = out / progress["shards"][0]["file"]
    saved = first.read_bytes()
    first.write_bytes(saved[:-2])
    with pytest.raises(RuntimeError, match="cannot resume.*--overwrite"):
        run_prepare(FileSource([path], doc_sep="\n\n"), gpt2, out, shard_size=2_000)
    first.write_bytes(saved)
    # the input changed since the interrupted run (size and mtime are part of the job)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n\nmore text")
    with pytest.raises(RuntimeError, match="other settings or inputs"):
        run_prepare(FileSource([path], doc_sep="\n\n"), gpt2, out, shard_size=2_000)
    manifest = run_prepare(FileSource([path], doc_sep="\n\n"), gpt2, out, shard_size=2_000, overwrite=True)
    assert decoded_docs(gpt2, stream(out, manifest), 50256)[-1] == "more text"


# ------------------------------------------------------------------------------------------------
# validation split
# ------------------------------------------------------------------------------------------------


def test_val_fraction_takes_the_first_records_and_ends_with_a_short_shard(gpt2, corpus_files, tmp_path):
    manifest = run_prepare(FileSource(corpus_files, doc_sep="\n\n"), gpt2, tmp_path, shard_size=4_000,
                           val_fraction=0.25)  # fmt: skip
    docs = expected_docs(corpus_files)
    splits = [s["split"] for s in manifest["shards"]]
    assert splits == sorted(splits, key=lambda s: s != "val") and "train" in splits and "val" in splits
    val = np.concatenate(
        [read_shard(tmp_path / s["file"]) for s in manifest["shards"] if s["split"] == "val"]
    )
    val_docs = decoded_docs(gpt2, val, 50256)
    # records = docs + the empty blocks (none here), so val is the first quarter of the documents
    assert val_docs == docs[: round(0.25 * len(docs))]
    assert decoded_docs(gpt2, stream(tmp_path, manifest), 50256) == docs
    assert manifest["source"]["val"]["records"] == round(0.25 * len(docs))


def test_val_fraction_zero_means_train_only(gpt2, corpus_files, tmp_path):
    manifest = run_prepare(FileSource(corpus_files[:1]), gpt2, tmp_path, shard_size=4_000, val_fraction=0)
    assert {s["split"] for s in manifest["shards"]} == {"train"}
    assert manifest["shards"][0]["file"] == "train_000000.bin"


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
    manifest = run_prepare(FileSource([path], max_doc_bytes=100), gpt2, tmp_path / "out", shard_size=50)
    assert manifest["skipped"] == {
        "empty": 2, "too_large": 1, "invalid_utf8": 1, "missing_field": 1, "not_text": 2, "json_error": 3,
        "invalid_unicode": 1,
    }  # fmt: skip
    assert manifest["num_documents"] == 2
    ids = stream(tmp_path / "out", manifest)
    assert decoded_docs(gpt2, ids, 50256) == ["first good document", "second good \u4e09\u56fd document"]


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
    manifest = run_prepare(source, gpt2, tmp_path / "out", shard_size=1000)
    assert manifest["skipped"] == {"not_text": 1, "empty": 1, "missing_field": 2}
    assert decoded_docs(gpt2, stream(tmp_path / "out", manifest), 50256) == [
        "alpha beta",
        "gamma \u5b8b\u8bcd",
        "delta",
    ]
    # restarting inside the file skips whole row groups before the restart row
    tail = list(
        FileSource([tmp_path / "a.parquet"], text_field="content").records(
            prepare_sources.Position(0, 3, 3, 3)
        )
    )
    assert [r.text for r in tail] == ["gamma \u5b8b\u8bcd", "delta"]


@pytest.mark.parametrize("sep", ["\n\n", "<|endoftext|>", "\u3002"])
def test_separated_txt_is_streamed_exactly_like_str_split(tmp_path, monkeypatch, sep):
    monkeypatch.setattr(prepare_sources, "_READ_BLOCK", 7)  # separators straddle read blocks
    text = (CORPORA / "sanguo_yanyi.txt").read_text(encoding="utf-8")[:3000]
    text = text.replace("\n\n", sep).replace("\u3002", sep) + sep + "tail" + sep
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    records = list(FileSource([path], doc_sep=sep).records())
    assert [r.text if r.text is not None else "" for r in records] == text.split(sep)
    assert sum(r.nbytes for r in records) == path.stat().st_size


def test_separated_txt_drops_oversized_blocks_without_holding_them(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_sources, "_READ_BLOCK", 16)
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
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_files([str(tmp_path / "*.parquet")])
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        expand_files([str(tmp_path / "nope.txt")])
    (tmp_path / "d.csv").write_text("x")
    with pytest.raises(ValueError, match="unknown input format"):
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
    manifest = run_prepare(HubSource(str(data)), gpt2, tmp_path / "out", shard_size=30)
    assert decoded_docs(gpt2, stream(tmp_path / "out", manifest), 50256) == texts
    # two workers split the rows modulo 2 and together hold everything
    parts = []
    for worker in range(2):
        out = tmp_path / f"w{worker}"
        m = run_prepare(HubSource(str(data), worker=worker, num_workers=2), gpt2, out, shard_size=30)
        parts.append(decoded_docs(gpt2, stream(out, m), 50256))
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


@pytest.mark.slow
def test_unreachable_hub_dataset_fails_with_a_clear_message(tmp_path):
    """Offline (HF_HUB_OFFLINE, as on this machine without network) the CLI stops with a hint."""
    pytest.importorskip("datasets")
    env = {**_python_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "gpt.prepare", "--dataset", "HuggingFaceFW/fineweb-edu", "--name", "sample-10BT",
         "--out", str(tmp_path / "out"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs network access" in result.stderr and "--files" in result.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# workers and merging
# ------------------------------------------------------------------------------------------------


def test_workers_by_file_then_merge_gives_one_stream(gpt2, corpus_files, tmp_path):
    files = []
    for i in range(3):  # three files for two workers: split by file
        path = tmp_path / f"in{i}.txt"
        path.write_text("\n\n".join(f"file {i} doc {j} " * 20 for j in range(30)), encoding="utf-8")
        files.append(path)
    parts = []
    for worker in range(2):
        out = tmp_path / "job" / f"worker_{worker:04d}"
        source = FileSource(files, doc_sep="\n\n", worker=worker, num_workers=2)
        assert source.by_file
        parts.append(run_prepare(source, gpt2, out, shard_size=2_000))
    assert parts[0]["shards"][0]["split"] == "val"
    assert {s["split"] for s in parts[1]["shards"]} == {"train"}  # only worker 0 holds out shard 0
    merged = merge_manifests(
        [tmp_path / "job" / "worker_0001", tmp_path / "job" / "worker_0000"], tmp_path / "job"
    )
    assert [s["file"] for s in merged["shards"]][:2] == ["val_000000.bin", "train_000001.bin"]
    assert merged["num_tokens"] == sum(p["num_tokens"] for p in parts)
    assert load_manifest(tmp_path / "job") == merged
    docs = decoded_docs(gpt2, stream(tmp_path / "job", merged), 50256)
    assert docs == expected_docs([files[0], files[2]]) + expected_docs([files[1]])
    with pytest.raises(ManifestError, match="expected each of 0..1"):
        merge_manifests([tmp_path / "job" / "worker_0000"], tmp_path / "other")
    with pytest.raises(ManifestError, match="empty folder"):
        merge_manifests(
            [tmp_path / "job" / "worker_0000", tmp_path / "job" / "worker_0001"], tmp_path / "job"
        )


def test_workers_by_record_cover_a_single_file(gpt2, corpus_files, tmp_path):
    docs = expected_docs(corpus_files[:1])
    got = []
    for worker in range(3):
        source = FileSource(corpus_files[:1], doc_sep="\n\n", worker=worker, num_workers=3)
        assert not source.by_file
        m = run_prepare(source, gpt2, tmp_path / f"w{worker}", shard_size=3_000, val_fraction=0)
        got.append(decoded_docs(gpt2, stream(tmp_path / f"w{worker}", m), 50256))
    # record k goes to worker k % 3 (no empty blocks in this file, so records = documents)
    assert got == [docs[0::3], docs[1::3], docs[2::3]]


# ------------------------------------------------------------------------------------------------
# manifest checks (the trainer refuses shards from another tokenizer)
# ------------------------------------------------------------------------------------------------


def test_check_manifest_refuses_a_mismatched_tokenizer(gpt2, corpus_files, tmp_path):
    manifest = run_prepare(FileSource(corpus_files[:1]), gpt2, tmp_path, shard_size=10_000)
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
        write_manifest(tmp_path, {"format": "bpe-fast-shards", "version": 1})


def test_tokenizer_sha256_of_gpt2_is_the_two_files_concatenated(tmp_path):
    import hashlib

    raw = (GPT2_DIR / "encoder.json").read_bytes() + (GPT2_DIR / "vocab.bpe").read_bytes()
    assert tokenizer_sha256("gpt2") == hashlib.sha256(raw).hexdigest()
    vocab = tmp_path / "v.json"
    vocab.write_bytes(b"{}")
    assert tokenizer_sha256(vocab) == hashlib.sha256(b"{}").hexdigest()


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--files", "--dataset", "--name", "--text-field", "--doc-sep", "--tokenizer", "--out",
                 "--shard-size", "--val-fraction", "--worker", "--num-workers", "--max-doc-bytes", "--threads"):  # fmt: skip
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
    if not bpe_fast_core_built():
        pytest.skip("the CLI loads bpe_fast")
    assert main([*args, "--no-progress", "-q"]) == 0
    manifest = load_manifest(out)
    assert [f["path"] for f in manifest["source"]["files"]] == [str(p) for p in corpus_files]
    assert decoded_docs(gpt2, stream(out, manifest), 50256) == expected_docs(corpus_files)


def test_cli_rejects_conflicting_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit, match="exactly one"):
        main(["--out", str(tmp_path)])


@needs_bpe_fast
def test_cli_end_to_end_with_workers_and_merge(tmp_path, corpus_files):
    import bpe_fast

    tok = bpe_fast.Tokenizer.gpt2()
    for worker in range(2):
        assert main(["--files", str(corpus_files[0].parent / "*.txt"), "--doc-sep", "\\n\\n", "--out",
                     str(tmp_path / "job"), "--shard-size", "4000", "--worker", str(worker), "--num-workers", "2",
                     "--no-progress", "-q"]) == 0  # fmt: skip
    parts = sorted(str(p) for p in (tmp_path / "job").glob("worker_*"))
    assert main(["merge-manifests", *parts, "--out", str(tmp_path / "job")]) == 0
    merged = load_manifest(tmp_path / "job")
    docs = decoded_docs(tok, stream(tmp_path / "job", merged), 50256)
    assert sorted(docs) == sorted(expected_docs(corpus_files))


def test_batch_encoder_contract(gpt2):
    encoder = BatchEncoder(gpt2, 50256, num_threads=2)
    assert encoder.fast == bpe_fast_core_built()
    assert BatchEncoder(_CrashAfter(gpt2, 5), 50256).fast == bpe_fast_core_built()
    ids, ends = encoder(["ab", "", "\u4e09\u56fd"])
    assert ends.tolist() == [
        1 + len(gpt2.encode_ordinary("ab")),
        2 + len(gpt2.encode_ordinary("ab")),
        ids.size,
    ]
    assert ids.dtype == np.uint32 and ids[0] == 50256
    empty_ids, empty_ends = encoder([])
    assert empty_ids.size == 0 and empty_ends.size == 0
