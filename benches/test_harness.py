"""Checks of the benchmark harness itself (no shared data, no timing): `pytest benches/test_harness.py`.

A harness that silently drops text, mislabels a ratio or hides a failing peer would make every number in
RESULTS.md meaningless, so its plumbing is tested like product code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benches import corpus, measure, peers, report
from benches.measure import Timing


def test_trim_to_line_cuts_after_a_newline_and_keeps_utf8_whole():
    data = "一二三\n四五六\n".encode()
    trimmed = corpus._trim_to_line(data, 12)
    assert trimmed == "一二三\n".encode()
    # No newline before the cut: back off to a character boundary, never split a character.
    no_newline = "αβγδ".encode()
    assert corpus._trim_to_line(no_newline, 5).decode("utf-8") == "αβ"


def test_split_blocks_and_iter_blocks_lose_nothing(tmp_path: Path):
    text = "".join(f"line {i} 中文\n" for i in range(5000)) + "tail without newline"
    blocks = corpus.split_blocks(text, block_chars=1000)
    assert "".join(blocks) == text
    assert all(block.endswith("\n") for block in blocks[:-1])
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    assert "".join(corpus.iter_blocks(path, block_bytes=1000)) == text


def test_corpus_file_is_sized_and_cached(tmp_path: Path, monkeypatch):
    for lang in ("en", "zh"):
        (tmp_path / "data" / lang).mkdir(parents=True)
    (tmp_path / "data" / "en" / "a.txt").write_text("hello world\n" * 10, encoding="utf-8")
    (tmp_path / "data" / "zh" / "b.txt").write_text("你好世界\n" * 10, encoding="utf-8")
    monkeypatch.setenv("BPE_FAST_BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BPE_FAST_BENCH_CACHE", str(tmp_path / "cache"))
    path = corpus.corpus_file(0.0005)  # 500 bytes: the 250-byte source repeated, cut at a line end
    data = path.read_bytes()
    assert 480 <= len(data) <= 500 and data.endswith(b"\n")
    assert data.startswith(b"hello world\n") and "你好世界".encode() in data
    assert corpus.corpus_file(0.0005) == path
    # Smaller than the sources: a share of each file, so every size has the same mix.
    small = corpus.corpus_file(0.0001).read_bytes()
    assert small == b"hello world\n" * 4 + "你好世界\n".encode() * 4


def test_data_dir_is_none_without_corpora(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BPE_FAST_BENCH_DATA", str(tmp_path))
    assert corpus.data_dir() is None


def test_pathological_texts_have_the_requested_size():
    for name, text in corpus.pathological_texts(1000).items():
        assert len(text.encode("utf-8")) == 1000, name


def test_bytes_to_unicode_is_a_bijection_onto_printable_characters():
    mapping = peers.bytes_to_unicode()
    assert sorted(mapping) == list(range(256))
    assert len(set(mapping.values())) == 256
    assert all(char.isprintable() and not char.isspace() for char in mapping.values())


def test_recover_merges_finds_the_merge_of_each_token():
    tokens = [bytes([i]) for i in range(256)] + [b"ab", b"abc", b"bc", b"abcabc"]
    merges = peers.recover_merges(tokens)
    assert merges == [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c"), (b"abc", b"abc")]


def test_recover_merges_rejects_an_unreachable_token():
    tokens = [bytes([i]) for i in range(256)] + [b"abc"]
    with pytest.raises(ValueError, match="abc"):
        peers.recover_merges(tokens)


def test_tiktoken_file_round_trip(tmp_path: Path):
    tokens = [bytes([i]) for i in range(256)] + [b"\xe4\xb8", b" the"]
    path = peers.write_tiktoken_file(tokens, tmp_path / "v.tiktoken")
    assert peers.read_tiktoken_file(path) == tokens


class _FakeEncoder(peers.Encoder):
    def __init__(self, name, shift=0):
        self.name = name
        self.shift = shift

    def encode(self, text):
        return [b + self.shift for b in text.encode("utf-8")]

    def encode_batch(self, texts, threads):
        return [self.encode(t) for t in texts]

    def decode_bytes(self, ids):
        return bytes(i - self.shift for i in ids)


def test_check_identical_flags_a_peer_with_other_ids():
    encoders = {
        "tiktoken": _FakeEncoder("tiktoken"),
        "good": _FakeEncoder("good"),
        "bad": _FakeEncoder("bad", 1),
    }
    problems = peers.check_identical(encoders, ["abc", "def"])
    assert set(problems) == {"bad"} and "token 0" in problems["bad"]


def test_time_interleaved_records_errors_instead_of_raising():
    def broken():
        raise RuntimeError("boom")

    results = measure.time_interleaved({"ok": lambda: sum(range(10)), "broken": broken}, runs=2, nbytes=10)
    assert results["ok"].ok and len(results["ok"].seconds) == 2
    assert not results["broken"].ok and "boom" in results["broken"].error


def test_thread_env_pins_all_rayon_peers():
    assert peers.thread_env(1) == {
        "RAYON_NUM_THREADS": "1",
        "RAYON_RS_NUM_CPUS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    assert peers.thread_env(2)["TOKENIZERS_PARALLELISM"] == "true"


def test_compare_vocabs_reports_the_first_difference():
    base = [bytes([i]) for i in range(256)]
    assert report._compare_vocabs(base + [b"ab", b"cd"], base + [b"ab", b"cd"]) == "identical"
    assert report._compare_vocabs(base + [b"ab", b"xy"], base + [b"ab", b"cd"]).startswith(
        "first differs at merge 1"
    )
    assert report._compare_vocabs(None, base) == "n/a"


def _row(peer, seconds, **where):
    return {"peer": peer, "timing": Timing(seconds=[seconds], nbytes=1_000_000), **where}


def test_targets_use_peer_time_over_ours_and_fail_honestly():
    cfg = report.QUICK
    results = {
        "encode_gpt2": [
            _row("bpe_fast", 1.0, corpus="en", mode="single"),
            _row("tiktoken", 2.0, corpus="en", mode="single"),
            _row("bpe_fast", 0.5, corpus="en", mode="batch"),
        ],
        "short_gpt2": [_row("bpe_fast", 1.0, mode="batch"), _row("tiktoken", 6.0, mode="batch")],
    }
    targets = {t["target"]: t for t in report.evaluate_targets(results, cfg)}
    single = targets["encode GPT-2 en, 1 thr: speed vs tiktoken"]
    assert single["value"] == pytest.approx(2.0) and single["met"] is False
    assert targets["encode GPT-2 en: batch 2 thr vs our 1 thr"]["value"] == pytest.approx(2.0)
    assert targets["short strings (batch call): speed vs tiktoken batch"]["met"] is True
    # Nothing measured: n/a, never a pass.
    assert targets["decode GPT-2 en: speed vs tiktoken"]["met"] is None


def test_render_markdown_shows_errors_and_unavailable_bpe_fast():
    cfg = report.QUICK
    failing = Timing(nbytes=10, error="RuntimeError: boom")
    results = {
        "generated_utc": "2026-01-01 00:00",
        "mode": "quick",
        "versions": {"tiktoken": "0"},
        "bpe_fast_available": False,
        "decode_gpt2": [{"corpus": "en", "peer": "tiktoken", "timing": failing, "ids": "identical"}],
    }
    text = report.render_markdown(results, cfg, "python benches/report.py --quick", {"cpu": "x"}, [])
    assert "bpe_fast was not importable" in text
    assert "error: RuntimeError: boom" in text


def test_compare_outputs_flags_the_peer_whose_timed_output_differs():
    timings = {
        "tiktoken": Timing(seconds=[1.0], output=[[1, 2], [3]]),
        "same": Timing(seconds=[1.0], output=[[1, 2], [3]]),
        "other": Timing(seconds=[1.0], output=[[1, 2], [4]]),
    }
    problems = {}
    report._compare_outputs(timings, problems, "batch")
    assert problems == {"other": "batch: ids differ from tiktoken in text 1"}
    assert all(t.output is None for t in timings.values())


def test_render_markdown_warns_when_the_machine_was_busy():
    busy = Timing(seconds=[1.0], nbytes=10, cpu_seconds=[0.3])
    results = {
        "generated_utc": "2026-01-01 00:00",
        "mode": "quick",
        "versions": {},
        "bpe_fast_available": True,
        "encode_gpt2": [
            {
                "corpus": "en",
                "mode": "single",
                "threads": 1,
                "peer": "tiktoken",
                "timing": busy,
                "ids": "identical",
            }
        ],
    }
    text = report.render_markdown(results, report.QUICK, "cmd", {}, [])
    assert "The machine was busy" in text and "0.30 of a core" in text
