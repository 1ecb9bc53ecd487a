"""Checks of the benchmark harness's measuring side, on tiny synthetic data (no shared data, no timing
claims): `python -m pytest -q benches/test_harness.py benches/test_report.py`.

A harness that drops text, hides a wrong or missing peer, or lets a peer reach the network would make every
number in RESULTS.md meaningless, so its plumbing is tested like product code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benches import (
    corpus,
    encode_worker,
    measure,
    measure_encode,
    merge_check,
    peers,
    texts,
    trainers,
    vocabs,
)
from benches.measure import Timing

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------- texts


def test_cut_slices_are_disjoint_equal_shares_of_every_source():
    first = "".join(f"alpha line {i}\n" for i in range(400)).encode()
    second = "".join(f"第{i}行\n" for i in range(400)).encode()
    slices = texts.cut_slices([first, second], 4, 600)
    assert len(slices) == 4
    for piece in slices:
        text = piece.decode("utf-8")  # never cut inside a character
        assert "alpha" in text and "行" in text
        assert text.endswith("\n") and len(piece) <= 600
    lines = [set(piece.decode().splitlines()) for piece in slices]
    assert all(not (lines[i] & lines[j]) for i in range(4) for j in range(i + 1, 4))


def test_cut_slices_refuses_a_source_too_small():
    with pytest.raises(ValueError, match="disjoint"):
        texts.cut_slices([b"short\n"], 3, 100)


def test_split_pieces_keeps_all_text_and_cuts_near_the_size():
    text = " ".join(f"word{i}" for i in range(3000)) + "\n"
    pieces = texts.split_pieces(text, 100, at_lines=False)
    assert "".join(pieces) == text
    assert all(len(p.encode()) < 220 for p in pieces)
    chinese = "中文字符" * 500
    assert "".join(texts.split_pieces(chinese, 100, at_lines=False)) == chinese


def test_single_and_batch_slices_are_written_once(tmp_path, monkeypatch):
    monkeypatch.setattr(
        texts, "_sources", lambda kind: ["".join(f"{kind} {i} text\n" for i in range(2000)).encode()]
    )
    found = texts.single_slices("prose", 3, 2000, folder=tmp_path)
    assert len(found.timed) == 3 and all(p.exists() for p in (found.warmup, *found.timed))
    assert len({texts.read_slice(p) for p in (found.warmup, *found.timed)}) == 4
    stamp = found.timed[0].stat().st_mtime_ns
    assert texts.single_slices("prose", 3, 2000, folder=tmp_path).timed[0].stat().st_mtime_ns == stamp
    batches = texts.batch_slices("chat", 3, 1500, folder=tmp_path)
    items = [texts.read_slice(p) for p in (batches.warmup, *batches.timed)]
    assert all(isinstance(batch, list) and texts.slice_bytes(batch) >= 1500 for batch in items)
    seen = [item for batch in items for item in batch]
    assert len(seen) == len(set(seen))  # no string in two batches: every timed batch is unseen


def test_trim_to_line_cuts_after_a_newline_and_keeps_utf8_whole():
    assert corpus._trim_to_line("一二三\n四五六\n".encode(), 12) == "一二三\n".encode()
    assert corpus._trim_to_line("αβγδ".encode(), 5).decode("utf-8") == "αβ"


def test_pathological_texts_have_the_requested_size():
    for name, text in corpus.pathological_texts(1000).items():
        assert len(text.encode("utf-8")) == 1000, name


# ---------------------------------------------------------------------------------------------- vocabs


def test_tiktoken_file_round_trip_and_recover_merges(tmp_path):
    tokens = [bytes([i]) for i in range(256)] + [b"ab", b"abc", b"bc", b"abcabc"]
    path = vocabs.write_tiktoken_file(tokens, tmp_path / "v.tiktoken")
    assert vocabs.read_tiktoken_file(path) == tokens
    assert vocabs.recover_merges(tokens) == [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c"), (b"abc", b"abc")]


def test_openai_loader_refuses_a_wrong_local_file_without_the_network(tmp_path):
    pytest.importorskip("tiktoken")
    fake = tmp_path / "cl100k_base.tiktoken"
    vocabs.write_tiktoken_file([bytes([i]) for i in range(256)], fake)
    with pytest.raises(vocabs.VocabUnavailable, match="sha256"):
        vocabs.openai_constructor_args("cl100k_base", fake)


def test_bytes_to_unicode_is_a_bijection_onto_printable_characters():
    mapping = vocabs.bytes_to_unicode()
    assert sorted(mapping) == list(range(256)) and len(set(mapping.values())) == 256
    assert all(char.isprintable() and not char.isspace() for char in mapping.values())


# ---------------------------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
    """A 400-token vocab bpe_fast trains on the bundled Shakespeare sample, in every peer format."""
    bpe_fast = pytest.importorskip("bpe_fast")
    from bpe_fast import samples
    from bpe_fast.export import save_hf

    folder = tmp_path_factory.mktemp("vocab")
    text = samples.path("tinyshakespeare.txt").read_text(encoding="utf-8")[:100_000]
    tok = bpe_fast.train([text], 400, pattern="gpt2")
    ranks = vocabs.write_tiktoken_file(trainers.bpe_fast_token_list(tok), folder / "small.tiktoken")
    save_hf(tok, folder / "small.json")
    spec = vocabs.VocabSpec(
        name="trained32k",
        tiktoken_file=str(ranks),
        hf_json=str(folder / "small.json"),
        openai_name=None,
        bpe_fast_pattern="gpt2",
        vocab_size=400,
    )
    return spec, text


@pytest.mark.parametrize("peer", ["bpe_fast", "tiktoken", "hf_tokenizers"])
def test_adapters_give_tiktokens_ids_lists_and_bytes(small_vocab, peer):
    pytest.importorskip("tiktoken")
    pytest.importorskip("tokenizers")
    spec, text = small_vocab
    reference = peers.load_encoder("tiktoken", spec)
    encoder = peers.load_encoder(peer, spec, threads=2)
    sample = text[:5000] + "\n中文 ünïcödé 🙂\n"
    ids = encoder.encode(sample)
    assert isinstance(ids, list) and all(type(i) is int for i in ids)
    assert ids == reference.encode(sample)
    assert encoder.encode_batch([sample, "x y"]) == [ids, reference.encode("x y")]
    assert encoder.decode_bytes(ids) == sample.encode("utf-8")


def test_a_missing_peer_is_unavailable_with_one_line(monkeypatch):
    monkeypatch.setitem(peers.MODULES, "tiktoken", "no_such_module_for_the_bench")
    with pytest.raises(peers.PeerUnavailable, match="not installed") as caught:
        peers.load_encoder("tiktoken", vocabs.VocabSpec("x", "", "", None, "gpt2"))
    assert "\n" not in str(caught.value)


def test_a_peer_that_fails_to_load_is_unavailable_not_a_crash(monkeypatch):
    def broken(spec, threads):
        raise RuntimeError("corrupt file")

    monkeypatch.setitem(peers.LOADERS, "tokie", broken)
    with pytest.raises(peers.PeerUnavailable, match="RuntimeError: corrupt file"):
        peers.load_encoder("tokie", vocabs.VocabSpec("x", "", "", None, "gpt2"))


def test_peers_without_the_vocab_say_why():
    spec = vocabs.VocabSpec("gpt2", "", "", "r50k_base", "gpt2")
    for peer in ("rustbpe", "bpe_openai", "rs_bpe"):
        with pytest.raises(peers.PeerUnavailable):
            peers.load_encoder(peer, spec)


def test_thread_env_pins_every_peer():
    env = peers.thread_env(1)
    assert env["RAYON_NUM_THREADS"] == env["RAYON_RS_NUM_CPUS"] == env["FASTOKENS_BPE_THREADS"] == "1"
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert peers.thread_env(4)["TOKENIZERS_PARALLELISM"] == "true"


# ---------------------------------------------------------------------------------------------- worker


class _Fake(peers.Encoder):
    """Byte ids (+ shift: a wrong peer); ``fail`` raises like bpe-openai on long texts."""

    def __init__(self, shift=0, fail=False):
        super().__init__(1)
        self.shift, self.fail = shift, fail
        self.name = "fake"

    def encode(self, text):
        if self.fail:
            raise ValueError("Input too long to encode safely")
        return [b + self.shift for b in text.encode("utf-8")]

    def encode_batch(self, texts_, threads=None):
        return [self.encode(t) for t in texts_]

    def decode_bytes(self, ids):
        return bytes(i - self.shift for i in ids)


def _write_slices(folder: Path):
    paths = []
    for index, text in enumerate(["warm up text\n", "first slice ü\n", "second slice 中\n", "third\n"]):
        path = folder / f"kind_{index}.txt"
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def test_worker_tasks_mark_ok_wrong_and_failed_per_slice(tmp_path):
    slices = _write_slices(tmp_path)
    task = {"section": "single", "kind": "prose", "warmup": slices[0], "slices": slices[1:]}
    ref_dir = tmp_path / "ref"
    reference = encode_worker.run_task(_Fake(), task, "v", ref_dir, is_reference=True)
    assert [s["status"] for s in reference["slices"]] == ["ok"] * 3
    good = encode_worker.run_task(_Fake(), task, "v", ref_dir, is_reference=False)
    wrong = encode_worker.run_task(_Fake(shift=1), task, "v", ref_dir, is_reference=False)
    failing = encode_worker.run_task(_Fake(fail=True), task, "v", ref_dir, is_reference=False)
    assert [s["status"] for s in good["slices"]] == ["ok"] * 3
    assert all(s["status"].startswith("wrong ids: differ from tiktoken at token 0") for s in wrong["slices"])
    assert all(s["status"] == "error: ValueError: Input too long to encode safely" for s in failing["slices"])
    decode = encode_worker.run_task(_Fake(), {**task, "section": "decode"}, "v", ref_dir, is_reference=False)
    assert [s["status"] for s in decode["slices"]] == ["ok"] * 3
    cells = [measure_encode.summarize(x["slices"]) for x in (good, wrong, failing)]
    assert cells[0]["status"] == "ok" and cells[0]["mb_per_s"] > 0
    assert cells[1]["status"].startswith("wrong ids") and cells[2]["status"].startswith("failed: ValueError")
    assert cells[2]["mb_per_s"] is None


def test_worker_batch_output_is_checked_text_by_text(tmp_path):
    batch = tmp_path / "b_0.json"
    batch.write_text(json.dumps(["one", "two", "three"]), encoding="utf-8")
    task = {"section": "batch", "kind": "chat", "warmup": None, "slices": [str(batch)]}
    encode_worker.run_task(_Fake(), task, "v", tmp_path, is_reference=True)

    class Merged(_Fake):
        def encode_batch(self, texts_, threads=None):
            return [self.encode("".join(texts_))]  # same ids, wrong split into texts

    result = encode_worker.run_task(Merged(), task, "v", tmp_path, is_reference=False)
    assert result["slices"][0]["status"].startswith("wrong ids: 1 outputs for 3 texts")


def test_worker_process_reports_an_unavailable_peer_without_traceback(tmp_path):
    job = {
        "peer": "rs_bpe",
        "vocab": vocabs.VocabSpec("gpt2", "", "", "r50k_base", "gpt2").as_dict(),
        "threads": 1,
        "pin_cpu": None,
        "ref_dir": str(tmp_path),
        "tasks": [],
    }
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "benches.encode_worker", str(job_file)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert "unavailable" in json.loads(done.stdout.strip().splitlines()[-1])


def test_measure_turns_worker_outcomes_into_rows(tmp_path):
    slices = _write_slices(tmp_path)
    found = {"prose": texts.SliceSet("prose", Path(slices[0]), tuple(Path(p) for p in slices[1:]))}
    spec = vocabs.VocabSpec("gpt2", "", "", "r50k_base", "gpt2")
    cfg = measure_encode.EncodeConfig(
        runs=3,
        slice_bytes=10,
        batch_bytes=10,
        pathological_bytes=0,
        all_threads=2,
        worker_timeout_s=10,
        encoders=("bpe_fast", "tiktoken", "fastokens", "tokie"),
        vocabs=("gpt2",),
    )
    ok_slices = [{"bytes": 1000, "seconds": 0.001, "cpu_seconds": 0.001, "status": "ok"}] * 3

    def runner(command, env, timeout):
        job = json.loads(Path(command[-1]).read_text())
        assert env["RAYON_NUM_THREADS"] == str(job["threads"])
        if job["peer"] == "tokie":
            return {"unavailable": "not installed"}
        if job["peer"] == "fastokens":
            return {"failed": "timed out after 10 s"}
        return {
            "load_seconds": 0.1,
            "tasks": [
                {"section": t["section"], "kind": t["kind"], "slices": ok_slices} for t in job["tasks"]
            ],
        }

    out = measure_encode.measure(cfg, {"gpt2": spec}, found, runner=runner)
    by_peer = {(r["peer"], r["section"]): r for r in out["rows"]}
    assert by_peer[("tokie", "single")]["status"] == "not available: not installed"
    assert by_peer[("fastokens", "decode")]["status"] == "failed: timed out after 10 s"
    assert by_peer[("bpe_fast", "single")]["mb_per_s"] == pytest.approx(1.0)
    assert {r["peer"]: r["status"] for r in out["load"]}["tokie"].startswith("not available")
    order = [call for call in out["rows"] if call["section"] == "single"]
    assert order[0]["peer"] == "tiktoken"  # the reference runs first


# ---------------------------------------------------------------------------------------------- training


def test_merge_check_accepts_other_tie_orders_and_rejects_a_wrong_merge():
    base = [bytes([i]) for i in range(256)]
    counts = {b"ab": 3, b"cd": 3}
    assert merge_check.compare_lists(base + [b"ab", b"cd"], base + [b"ab", b"cd"]) == "identical"
    assert merge_check.valid_up_to_ties(counts, base + [b"cd", b"ab"])[0]
    ok, detail = merge_check.valid_up_to_ties({b"ab": 3, b"cd": 1}, base + [b"cd", b"ab"])
    assert not ok and "merge 0 has count 1" in detail
    assert merge_check.compare_lists(base + [b"cd"], base + [b"ab"]).startswith("first differs at merge 0")


def test_merge_check_agrees_with_the_reference_trainer():
    reference = pytest.importorskip("bpe_fast.reference")
    docs = ["the cat sat on the mat, the hat; that is that\n" * 3, "abab abab baba\n"]
    counts = reference.count_chunks(docs, "gpt2")
    tok = reference.train(docs, 290, pattern="gpt2")
    tokens = [token for _id, token in tok.tokens()]
    assert merge_check.valid_up_to_ties(counts, tokens)[0]


def test_training_rows_show_unavailable_and_wrong_trainers(monkeypatch, tmp_path):
    monkeypatch.setenv("BPE_FAST_BENCH_CACHE", str(tmp_path))
    source = tmp_path / "c.txt"
    source.write_text("ab cd\n" * 50, encoding="utf-8")
    monkeypatch.setattr(corpus, "corpus_file", lambda size_mb, language="mixed": source)
    base = [bytes([i]) for i in range(256)]

    def fake_run(peer, path, vocab, threads, timeout_s, save_ranks=None):
        if peer == "bpeasy":
            return {
                "peer": peer,
                "unavailable": "not installed (ModuleNotFoundError: No module named 'bpeasy')",
            }
        # ffbpe's first merge joins a pair that never occurs: a wrong list, not another tie order.
        tokens = base + ([b"d\n", b"ab"] if peer == "ffbpe" else [b"ab", b" c"])
        if save_ranks:
            vocabs.write_tiktoken_file(tokens, save_ranks)
        return {"seconds": 1.0, "peak_rss_mb": 10, "baseline_rss_mb": 5, "vocab_size": 258, "cores_used": 1.0}

    from benches import measure_train

    monkeypatch.setattr(measure_train.timing, "run_training", fake_run)
    cfg = measure_train.TrainConfig(
        runs=1,
        corpus_mb=1,
        vocab_sizes=(258,),
        threads=(1,),
        timeout_s=5,
        trainers=("bpe_fast", "rustbpe", "bpeasy", "ffbpe"),
    )
    rows = {r["peer"]: r for r in measure_train.measure(cfg)["rows"]}
    assert rows["bpe_fast"]["status"] == "ok" and rows["bpe_fast"]["merges"] == "identical"
    assert rows["bpeasy"]["status"].startswith("not available: not installed")
    assert rows["ffbpe"]["status"].startswith("wrong merges")


def test_distinct_bytes(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"abcabc\n\xff")
    assert trainers.distinct_bytes(path) == sorted(b"abc\n\xff")


def test_time_interleaved_records_errors_instead_of_raising():
    def broken():
        raise RuntimeError("boom")

    results = measure.time_interleaved({"ok": lambda: sum(range(10)), "broken": broken}, runs=2, nbytes=10)
    assert results["ok"].ok and len(results["ok"].seconds) == 2
    assert not results["broken"].ok and "boom" in results["broken"].error
    assert isinstance(results["ok"], Timing)
