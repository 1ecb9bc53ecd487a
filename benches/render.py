"""Writing: the markdown report, its plots, and README's speed table (between markers).

Cells: MB/s (median of the timed slices) when the peer's every timed output equals tiktoken's ids;
otherwise a short status ("wrong ids", "failed", "not available", "unchecked") whose full text is listed
under the table. Only rows whose target holds say "fastest" in the README table.
"""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from benches import peers, texts, trainers, vocabs
from benches.peers import US

README_START = "<!-- speed-table:start -->"
README_END = "<!-- speed-table:end -->"
CLAIM_START = "<!-- speed-claim:start -->"
CLAIM_END = "<!-- speed-claim:end -->"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def short_status(status: str) -> str:
    """The word a table cell shows for a non-ok status."""
    for prefix, word in (
        ("wrong", "wrong ids"),
        ("not available", "not available"),
        ("not supported", "not supported"),
        ("not comparable", "n/c"),
        ("unchecked", "unchecked"),
        ("failed", "failed"),
    ):
        if status.startswith(prefix):
            return word
    return status[:20]


def fmt_speed(row: Optional[dict]) -> str:
    if row is None:
        return "-"
    if row.get("status") == "ok" and row.get("mb_per_s") is not None:
        return f"{row['mb_per_s']:.1f}"
    return short_status(row.get("status", "?"))


def fmt_ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def verdict(met: Optional[bool]) -> str:
    return {True: "PASS", False: "**MISS**", None: "n/a"}[met]


class Notes:
    """Collects the full text of every non-ok cell, printed once under its table (same peer and status:
    one line naming every cell)."""

    def __init__(self):
        self.cells: Dict[tuple, List[str]] = {}

    def add(self, where: str, row: dict) -> None:
        status = row.get("status", "")
        if status and status != "ok":
            self.cells.setdefault((row["peer"], status), []).append(where)

    def flush(self) -> List[str]:
        lines = []
        for (peer, status), where in self.cells.items():
            place = where[0] if len(where) == 1 else f"{len(where)} cells ({where[0]}, ...)"
            lines.append(f"- {peer}, {place}: {status}")
        self.cells = {}
        return (lines + [""]) if lines else []


def _peers_in(rows: Sequence[dict], order: Sequence[str]) -> List[str]:
    present = {r["peer"] for r in rows}
    return [p for p in order if p in present]


def _ratio_vs_best(rows: Sequence[dict]) -> Optional[float]:
    from benches.targets import fastest_exact

    ours = next((r for r in rows if r["peer"] == US and r.get("status") == "ok"), None)
    best = fastest_exact(rows)
    if ours is None or best is None:
        return None
    return ours["mb_per_s"] / best["mb_per_s"]


def encode_tables(encode: dict) -> List[str]:
    rows = encode.get("rows", [])
    out: List[str] = []
    order = peers.ENCODERS
    notes = Notes()
    for section, title, kinds, note in (
        (
            "single",
            "Encode, one call, one core",
            texts.SINGLE_KINDS,
            "MB/s of one encode call on ~1 MB of text no tokenizer in the process has seen (median of the timed "
            "slices), process pinned to one CPU, every thread variable at 1.",
        ),
        (
            "batch",
            "Batch encode, all cores",
            texts.BATCH_KINDS,
            f"MB/s of one batch call over {encode.get('all_threads', '?')} threads (each peer's batch API and "
            "thread setting), on batches no tokenizer has seen.",
        ),
        (
            "decode",
            "Decode, one core",
            texts.SINGLE_KINDS,
            "MB/s of decoded bytes: one decode call on tiktoken's ids of each timed slice.",
        ),
    ):
        section_rows = [r for r in rows if r["section"] == section]
        if not section_rows:
            continue
        names = _peers_in(section_rows, order)
        out += [f"## {title}", "", note, ""]
        body = []
        for vocab in vocabs.VOCABS:
            for kind in kinds:
                cell = [r for r in section_rows if r["vocab"] == vocab and r["kind"] == kind]
                if not cell:
                    continue
                by_peer = {r["peer"]: r for r in cell}
                for r in cell:
                    notes.add(f"{vocabs.VOCAB_TITLES[vocab]} {texts.KIND_TITLES.get(kind, kind)}", r)
                body.append(
                    [vocabs.VOCAB_TITLES[vocab], texts.KIND_TITLES.get(kind, kind)]
                    + [fmt_speed(by_peer.get(name)) for name in names]
                    + [fmt_ratio(_ratio_vs_best(cell))]
                )
        out += table(["vocab", "text"] + names + ["bpe_fast / fastest exact peer"], body)
        out += notes.flush()
    return out


def load_table(encode: dict) -> List[str]:
    loads = encode.get("load", [])
    if not loads:
        return []
    names = _peers_in(loads, peers.ENCODERS)
    out = [
        "## Loading",
        "",
        "Seconds until the tokenizer has encoded its first short text, in a fresh process: construction "
        "from its files + that first call (shown as c + f; some peers build tables on the first call). "
        "Import excluded; the files are in the page cache.",
        "",
    ]
    notes = Notes()
    body = []
    for vocab in vocabs.VOCABS:
        cell = {r["peer"]: r for r in loads if r["vocab"] == vocab}
        if not cell:
            continue
        row = [vocabs.VOCAB_TITLES[vocab]]
        for name in names:
            r = cell.get(name)
            if r is None:
                row.append("-")
            elif r.get("seconds") is not None:
                first = r.get("first_call_seconds")
                split = "" if first is None else f" ({r['construction_seconds']:.3f} + {first:.3f})"
                row.append(f"{r['seconds']:.3f}{split}")
            else:
                row.append(short_status(r["status"]))
                notes.add(vocabs.VOCAB_TITLES[vocab], r)
        body.append(row)
    return out + table(["vocab"] + names, body) + notes.flush()


def threads_table(encode: dict) -> List[str]:
    row = next((r for r in encode.get("rows", []) if r["section"] == "threads"), None)
    if row is None:
        return []
    out = ["## One encode call, 1 vs 2 threads (bpe_fast, GPT-2, English prose, >= 1 MB slices)", ""]
    if "by_threads" not in row:
        return out + [f"{row['status']}", ""]
    body = []
    for count, cell in sorted(row["by_threads"].items()):
        cores = "-" if cell.get("cores_used") is None else f"{cell['cores_used']:.2f}"
        body.append([count, fmt_speed(cell), cores, cell["status"]])
    return out + table(["threads", "MB/s", "cores used", "ids"], body)


def pathological_table(encode: dict) -> List[str]:
    rows = [r for r in encode.get("rows", []) if r["section"] == "pathological"]
    if not rows:
        return []
    names = _peers_in(rows, peers.ENCODERS)
    out = [
        "## Pathological inputs (GPT-2, one encode call, one core)",
        "",
        "Each input is one pre-tokenizer chunk (a letter repeated, spaces, `^` repeated, one random-letter "
        "word); normal_en is English text of the same size.",
        "",
    ]
    notes = Notes()
    body = []
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for kind in kinds:
        by_peer = {r["peer"]: r for r in rows if r["kind"] == kind}
        for r in by_peer.values():
            notes.add(kind, r)
        body.append([kind] + [fmt_speed(by_peer.get(name)) for name in names])
    return out + table(["input"] + names, body) + notes.flush()


def training_table(train: dict) -> List[str]:
    rows = train.get("rows", [])
    if not rows:
        return []
    names = _peers_in(rows, trainers.TRAINERS)
    size = train.get("corpus_bytes", 0) / 1e6
    out = [
        "## Training",
        "",
        f"Median seconds of the train call in a fresh process ({size:.1f} MB corpus; reading included, imports "
        "excluded). Merges are compared with rustbpe's (the reference rule); a list that differs is replayed "
        "over the corpus to check it is the same up to count ties.",
        "",
    ]
    notes = Notes()
    body = []
    for vocab in sorted({r["vocab"] for r in rows}):
        for count in sorted({r["threads"] for r in rows}):
            cell = {r["peer"]: r for r in rows if r["vocab"] == vocab and r["threads"] == count}
            line = [str(vocab), str(count)]
            for name in names:
                r = cell.get(name)
                if r is None:
                    line.append("-")
                elif r.get("status") == "ok" and r.get("median_s"):
                    line.append(f"{r['median_s']:.2f}")
                else:
                    line.append(short_status(r.get("status", "?")))
                if r is not None:
                    notes.add(f"vocab {vocab}, {count} thr", r)
            body.append(line)
    out += table(["vocab", "threads"] + names, body)
    merges = []
    for r in rows:
        if r.get("merges") and r.get("status") == "ok" and r["merges"] not in ("identical", "reference"):
            merges.append(f"- vocab {r['vocab']}, {r['threads']} thr, {r['peer']}: {r['merges']}")
    return out + notes.flush() + (sorted(set(merges)) + [""] if merges else [])


def pathological_train_table(rows: Sequence[dict]) -> List[str]:
    if not rows:
        return []
    names = _peers_in(rows, trainers.TRAINERS)
    body = []
    for kind in dict.fromkeys(r["input"] for r in rows):
        by_peer = {r["peer"]: r for r in rows if r["input"] == kind}
        body.append(
            [kind]
            + [
                (f"{min(r['seconds']):.2f} s" if r.get("status") == "ok" else short_status(r["status"]))
                if r
                else "-"
                for r in (by_peer.get(n) for n in names)
            ]
        )
    return ["## Pathological inputs: training", ""] + table(["input"] + names, body)


def scaling_table(rows: Sequence[dict]) -> List[str]:
    if not rows:
        return []
    body = [[r["task"], f"{r['size_mb']:g}", r["peer"], fmt_speed(r)] for r in rows]
    return ["## Time vs size", "", "One run per point; plot: throughput_vs_size.png.", ""] + table(
        ["task", "MB", "peer", "MB/s"], body
    )


def targets_table(found: Sequence[dict]) -> List[str]:
    body = []
    for t in found:
        value = "-" if t["value"] is None else f"{t['value']:.2f}{t['unit']}"
        body.append([t["target"], value, t["goal"], verdict(t["met"]), t.get("detail", "")])
    return table(["target", "measured", "goal", "verdict", "detail"], body)


def calls_table() -> List[str]:
    body = []
    for name in peers.ENCODERS:
        calls = peers.CALLS[name]
        body.append([name, calls["encode"], calls["batch"], calls["decode"], calls["load"]])
    out = ["## What each call is", ""] + table(["peer", "encode", "batch", "decode", "load"], body)
    out += table(["trainer", "call"], [[name, trainers.CALLS[name]] for name in trainers.TRAINERS])
    return out


def busy_warning(encode: dict) -> List[str]:
    cores = [
        r["cores_used"] for r in encode.get("rows", []) if r["section"] == "single" and r.get("cores_used")
    ]
    if cores and statistics.median(cores) < 0.8:
        return [
            f"**The machine was busy: single-core calls got a median of {statistics.median(cores):.2f} of a "
            "core** (1.00 when idle). Every peer is slowed alike; ratios are noisier.",
            "",
        ]
    return []


def markdown(results: dict, found: Sequence[dict], command: str, info: Dict[str, str]) -> str:
    out = ["# bpe_fast benchmark results", ""]
    out += [
        f"Generated {results.get('generated_utc', '?')} UTC by `{command}` ({results.get('mode', '?')} mode). "
        "Method: docs/BENCHMARKS.md.",
        "",
    ]
    out += table(["machine", ""], [[k, v] for k, v in info.items()])
    out += table(["package", "version"], [[k, v] for k, v in results.get("versions", {}).items()])
    if results.get("config"):
        out += ["Configuration: " + ", ".join(f"{k}={v}" for k, v in results["config"].items()), ""]
    encode = results.get("encode", {})
    out += busy_warning(encode)
    if not results.get("bpe_fast_available", True):
        out += ["**bpe_fast was not importable: only peers were measured; targets are n/a.**", ""]
    if encode:
        out += [
            "Texts: "
            + "; ".join(f"{texts.KIND_TITLES[k]} = {texts.SOURCES_NOTE[k]}" for k in texts.SOURCES_NOTE)
            + ". Hindi is not in the shared data, so the multilingual mix has none.",
            "",
        ]
    for kind, reason in encode.get("unavailable_texts", {}).items():
        out += [f"- text `{kind}` not available: {reason}"]
    out += ["## Targets", ""] + targets_table(found)
    out += ["## Claims", "", "README speed table (written between its markers by `--update-readme`):", ""]
    out += readme_table(results, found).splitlines() + [""]
    out += [f"Package description: {description_claim(found)}", ""]
    out += encode_tables(encode) + load_table(encode) + threads_table(encode) + pathological_table(encode)
    out += training_table(results.get("train", {}))
    out += pathological_train_table(results.get("pathological_train", []))
    out += scaling_table(results.get("scaling", []))
    out += calls_table()
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- README


def _group_rows(found: Sequence[dict]) -> List[tuple]:
    """(label, targets) per README row: one per section x vocab, then training, loading, threads."""
    groups: Dict[str, List[dict]] = {}
    for t in found:
        if t["group"] in ("single", "batch", "decode"):
            vocab_title = t["target"].split(": ", 1)[1].split(",")[0]
            label = f"{t['target'].split(':')[0]}, {vocab_title}"
        elif t["group"] == "train":
            label = "training, vocab 8192 and 32768"
        elif t["group"] in ("load", "threads"):
            label = t["target"]
        else:
            continue
        groups.setdefault(label, []).append(t)
    return list(groups.items())


def _amount(value: Optional[float], group: str) -> str:
    if value is None:
        return "-"
    if group in ("train", "load"):
        return f"{value:.2f} s"
    return f"{value:.1f} MB/s"


def readme_table(results: dict, found: Sequence[dict]) -> str:
    """README's speed table: one row per workload; "fastest" only where every target of the row holds.

    bpe_fast's column is its range over the row's cells; the peer column is the fastest exact peer of the
    row's worst cell (where bpe_fast's lead is smallest), with its own figure.
    """
    body = []
    for label, group in _group_rows(found):
        kind = group[0]["group"]
        measured = [t for t in group if t["value"] is not None]
        ours = [t["us"] for t in group if t.get("us") is not None]
        if ours:
            low, high = min(ours), max(ours)
            mine = (
                _amount(low, kind)
                if low == high
                else f"{_amount(low, kind).split()[0]}-{_amount(high, kind)}"
            )
        else:
            mine = "-"
        worst = min(measured, key=lambda t: t["value"]) if measured else None
        peer = (
            f"{worst['best']} {_amount(worst.get('best_value'), kind)}"
            if worst and worst.get("best")
            else "-"
        )
        if all(t["met"] is True for t in group):
            claim = {"load": "no slower than any peer", "threads": "target met"}.get(kind, "fastest")
        elif any(t["met"] is False for t in group):
            claim = "not fastest" if kind not in ("load", "threads") else "target missed"
        else:
            claim = "not measured"
        ratio = fmt_ratio(worst["value"]) if worst else "-"
        body.append([label, mine, peer, ratio, group[0]["goal"], claim])
    lines = table(
        ["workload", "bpe_fast", "fastest exact peer (worst cell)", "ratio", "target", "claim"], body
    )
    return "\n".join(lines).rstrip("\n")


def description_claim(found: Sequence[dict]) -> str:
    """The package description's speed claim, saying "fastest" only for what the report shows."""
    holds = [label for label, group in _group_rows(found) if all(t["met"] is True for t in group)]
    encode_rows = [
        label for label, group in _group_rows(found) if group[0]["group"] in ("single", "batch", "decode")
    ]
    train_ok = any(label.startswith("training") for label in holds)
    encode_ok = encode_rows and all(label in holds for label in encode_rows)
    if encode_ok and train_ok:
        return "Exact byte-level BPE: the fastest exact encoder and trainer in its benchmark report."
    if encode_ok:
        return "Exact byte-level BPE: the fastest exact encoder in its benchmark report."
    if train_ok:
        return (
            "Exact byte-level BPE: the fastest exact trainer in its benchmark report; fast, exact encoding."
        )
    return "Exact byte-level BPE tokenizer and trainer (Rust core, Python API)."


class MarkersMissing(ValueError):
    pass


def replace_between(text: str, start: str, end: str, body: str) -> str:
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise MarkersMissing(f"markers {start} ... {end} not found")
    return pattern.sub(lambda _m: f"{start}\n{body}\n{end}", text, count=1)


def update_readme(path: Path, results: dict, found: Sequence[dict]) -> List[str]:
    """Writes the speed table (and the claim line, when its markers exist) into README; what was updated."""
    from bpe_fast.files import atomic_write_text

    text = Path(path).read_text(encoding="utf-8")
    text = replace_between(text, README_START, README_END, readme_table(results, found))
    updated = ["speed table"]
    if CLAIM_START in text and CLAIM_END in text:
        text = replace_between(text, CLAIM_START, CLAIM_END, description_claim(found))
        updated.append("claim")
    atomic_write_text(path, text)
    return updated


# ---------------------------------------------------------------------------------------------- plots


def plot_single(encode: dict, path: Path) -> Optional[Path]:
    """Grouped bars: single-call MB/s of every exact peer, per vocab x text."""
    rows = [r for r in encode.get("rows", []) if r["section"] == "single" and r.get("status") == "ok"]
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cells = [
        (v, k)
        for v in vocabs.VOCABS
        for k in texts.SINGLE_KINDS
        if any(r["vocab"] == v and r["kind"] == k for r in rows)
    ]
    names = _peers_in(rows, peers.ENCODERS)
    figure, axis = plt.subplots(figsize=(max(8, len(cells) * 0.9), 4.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        heights = [
            next((r["mb_per_s"] for r in rows if r["vocab"] == v and r["kind"] == k and r["peer"] == name), 0)
            for v, k in cells
        ]
        axis.bar(
            [c + i * width for c in range(len(cells))],
            heights,
            width,
            label=name,
            edgecolor="black" if name == US else None,
        )
    axis.set_xticks([c + 0.4 - width / 2 for c in range(len(cells))])
    axis.set_xticklabels([f"{vocabs.VOCAB_TITLES[v]}\n{k}" for v, k in cells], fontsize=7)
    axis.set_ylabel("MB/s (one call, one core; exact peers only)")
    axis.legend(fontsize=7, ncol=2)
    axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    os.replace(tmp, path)
    return path


def plot_scaling(rows: Sequence[dict], path: Path) -> Optional[Path]:
    """Throughput vs input size, one line per peer, encode and train side by side."""
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, task in zip(axes, ("encode", "train")):
        for name in sorted({r["peer"] for r in rows if r["task"] == task}):
            points = sorted(
                (r["size_mb"], r["mb_per_s"])
                for r in rows
                if r["task"] == task and r["peer"] == name and r.get("mb_per_s")
            )
            if points:
                sizes, speeds = zip(*points)
                axis.plot(sizes, speeds, marker="o", label=name, linewidth=2.5 if name == US else 1.2)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("input size (MB)")
        axis.set_ylabel("MB/s")
        axis.set_title(task)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    os.replace(tmp, path)
    return path
