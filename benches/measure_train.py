"""Measuring trainers: every trainer x vocab size x thread count, one fresh subprocess per run.

Runs are interleaved (run 1 of every trainer, then run 2, ...). Each trainer's learned tokens (first run)
are compared with rustbpe's, an independent implementation of the reference rule (most frequent pair,
ties to the smallest pair), whose list bpe_fast.reference reproduces; a list that differs is replayed over
the corpus's chunk counts (benches/merge_check.py) to tell "same up to ties" from "wrong merges".
Rows are plain dicts (JSON-able).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benches import corpus, merge_check, trainers, vocabs
from benches import measure as timing
from benches.measure_encode import log

REFERENCE_TRAINER = "rustbpe"
# Verdicts that count as exact (the merge list is the naive algorithm's on the trainer's documents).
EXACT = ("same up to ties", "exact with")


@dataclass(frozen=True)
class TrainConfig:
    runs: int
    corpus_mb: float
    vocab_sizes: Sequence[int]
    threads: Sequence[int]
    timeout_s: float
    trainers: Sequence[str] = trainers.TRAINERS
    # Replay differing merge lists to check them up to ties (pure Python: minutes on 50 MB).
    check_ties: bool = True


def _read_tokens(path: Path) -> Optional[List[bytes]]:
    try:
        return vocabs.read_tiktoken_file(path)
    except (OSError, ValueError):
        return None


def _ranks_file(peer: str, vocab: int, threads: int, corpus_path: Path) -> Path:
    return corpus.cache_dir() / "trained" / f"{peer}_{vocab}_{threads}thr_{corpus_path.stem}.tiktoken"


# How each trainer cuts a file into documents (no chunk crosses a document boundary): bpe_fast given the
# path reads the file as one document; gigabpe (like HF's file reader) pre-tokenizes each line on its own;
# the iterator-fed trainers get ~64 KB blocks of whole lines. Their merge lists are checked against the
# chunks of their own documents, so a trainer is judged on the work it was given.
DOCUMENTS = {"bpe_fast": "file", "gigabpe": "lines"}


def documents(corpus_path: Path, mode: str):
    if mode == "file":
        return [corpus.read_text(corpus_path)]
    if mode == "lines":
        text = corpus.read_text(corpus_path)
        lines = [line + "\n" for line in text.split("\n")]
        lines[-1] = lines[-1][:-1]
        return [line for line in lines if line]
    return corpus.iter_blocks(corpus_path)


def _chunk_counts(corpus_path: Path, mode: str) -> Dict[bytes, int]:
    from bpe_fast.reference import count_chunks

    return count_chunks(documents(corpus_path, mode), "gpt2")


def measure(cfg: TrainConfig) -> dict:
    """{"rows": [...], "corpus_bytes": n}: one row per vocab x threads x trainer."""
    path = corpus.corpus_file(cfg.corpus_mb)
    rows: List[dict] = []
    # Rows whose merges differ from the reference's, judged after all the timing (the replay is slow).
    pending: List[tuple] = []
    for vocab in cfg.vocab_sizes:
        for threads in cfg.threads:
            outcomes: Dict[str, List[dict]] = {peer: [] for peer in cfg.trainers}
            for run in range(cfg.runs):
                for peer in cfg.trainers:
                    if outcomes[peer] and (
                        "unavailable" in outcomes[peer][0] or "error" in outcomes[peer][-1]
                    ):
                        continue
                    log(f"train {peer} vocab={vocab} threads={threads} run {run + 1}/{cfg.runs}")
                    save = _ranks_file(peer, vocab, threads, path) if run == 0 else None
                    if save is not None:
                        save.parent.mkdir(parents=True, exist_ok=True)
                        save.unlink(missing_ok=True)
                    outcomes[peer].append(
                        timing.run_training(peer, path, vocab, threads, cfg.timeout_s, save)
                    )
            reference = _read_tokens(_ranks_file(REFERENCE_TRAINER, vocab, threads, path))
            for peer in cfg.trainers:
                runs = outcomes[peer]
                row = {
                    "vocab": vocab,
                    "threads": threads,
                    "peer": peer,
                    "seconds": [],
                    "bytes": path.stat().st_size,
                }
                if runs and "unavailable" in runs[0]:
                    row.update(status="not available: " + runs[0]["unavailable"])
                    rows.append(row)
                    continue
                errors = [r["error"] for r in runs if "error" in r]
                good = [r for r in runs if "error" not in r]
                row["seconds"] = [r["seconds"] for r in good]
                row["median_s"] = statistics.median(row["seconds"]) if good and not errors else None
                row["peak_rss_mb"] = max((r["peak_rss_mb"] for r in good), default=None)
                row["cores_used"] = max((r.get("cores_used", 0.0) for r in good), default=None)
                row["vocab_reached"] = good[0]["vocab_size"] if good else None
                if errors:
                    row["status"] = "failed: " + errors[0]
                    rows.append(row)
                    continue
                tokens = _read_tokens(_ranks_file(peer, vocab, threads, path))
                verdict = merge_check.compare_lists(tokens, reference)
                if peer == REFERENCE_TRAINER and reference is not None:
                    verdict = "reference"
                if row["vocab_reached"] is not None and row["vocab_reached"] != vocab:
                    verdict = f"wrong merges: stopped at {row['vocab_reached']} tokens; " + verdict
                row["merges"] = verdict
                rows.append(row)
                if verdict.startswith("first differs"):
                    pending.append((row, tokens))
    _judge_differing(pending, path, cfg.check_ties)
    for row in rows:
        if "merges" in row:
            verdict = row["merges"]
            exact = verdict in ("identical", "reference") or verdict.startswith(EXACT)
            row["status"] = "ok" if exact else verdict
    return {"rows": rows, "corpus_bytes": path.stat().st_size, "corpus": str(path)}


def _judge_differing(pending: List[tuple], path: Path, check_ties: bool) -> None:
    """Replays each differing list over its trainer's documents; longest first, so that a shorter list
    that is a prefix of one already found valid (a smaller vocab of the same greedy run) is not replayed."""
    chunk_counts: Dict[str, Dict[bytes, int]] = {}
    valid: Dict[str, List[List[bytes]]] = {}
    for row, tokens in sorted(pending, key=lambda item: -len(item[1] or [])):
        peer, first = row["peer"], row["merges"]
        if not check_ties or tokens is None:
            row["merges"] = "unchecked: " + first
            continue
        mode = DOCUMENTS.get(peer, "blocks")
        merged = [t for t in tokens if len(t) > 1]
        if any(longer[: len(merged)] == merged for longer in valid.get(peer, [])):
            ok, detail = True, "a prefix of its own longer list, valid at every step"
        else:
            if mode not in chunk_counts:
                log(f"counting the training corpus's chunks ({mode} as documents; pure Python)")
                chunk_counts[mode] = _chunk_counts(path, mode)
            log(f"replaying {peer}'s {len(merged)} merges (vocab {row['vocab']}) to check them up to ties")
            ok, detail = merge_check.valid_up_to_ties(chunk_counts[mode], tokens)
            if ok:
                valid.setdefault(peer, []).append(merged)
        if not ok:
            label = "wrong merges"
        elif mode == "blocks":
            label = "same up to ties"
        else:
            # Another document split is the difference, not a tie: name it.
            label = f"exact with the {'whole file' if mode == 'file' else 'lines'} as documents"
        row["merges"] = f"{label}: {first} ({detail})"


def measure_pathological(
    size: int, vocab: int, threads: int, timeout_s: float, peers: Sequence[str]
) -> List[dict]:
    """bpe_fast (and optionally peers) training on each one-chunk input vs mixed text of the same size."""
    files = {"normal_mixed": corpus.corpus_file(size / corpus.MB)}
    for kind, text in corpus.pathological_texts(size).items():
        target = corpus.cache_dir() / f"pathological_{kind}_{size}.txt"
        if not target.exists():
            corpus._atomic_write_bytes(target, text.encode("utf-8"))
        files[kind] = target
    rows = []
    for kind, path in files.items():
        for peer in peers:
            log(f"pathological train {peer} {kind}")
            outcome = timing.run_training(peer, path, vocab, threads, timeout_s)
            row = {"input": kind, "peer": peer, "bytes": path.stat().st_size, "seconds": []}
            if "unavailable" in outcome:
                row["status"] = "not available: " + outcome["unavailable"]
            elif "error" in outcome:
                row["status"] = "failed: " + outcome["error"]
            else:
                row.update(status="ok", seconds=[outcome["seconds"]], vocab_reached=outcome["vocab_size"])
            rows.append(row)
    return rows
