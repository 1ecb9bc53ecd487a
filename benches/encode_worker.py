"""One peer, one vocabulary, one thread setting, in this fresh process: ``python -m benches.encode_worker JOB``.

The parent (benches/measure_encode.py) writes a JSON job and sets the environment (thread variables) before
starting this process; the job may also pin it to one CPU, which is done here before any peer is imported
(peers size their thread pools from the CPUs they may use, once per process). Then:

1. the peer is loaded (the construction call is timed: ``load_seconds``; the import is not);
2. for each task: one untimed warm-up call on other text of the same kind, then each timed slice is
   encoded (or decoded) once: the first call on text this process has not seen;
3. each output is compared with tiktoken's ids for the same slice (read from the reference folder, after
   the timing), or, when this peer is the reference, saved there.

Prints one JSON object on its last stdout line. A peer that cannot be loaded prints
``{"unavailable": reason}``; an exception in one call is recorded as that slice's error.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _pin(cpu: Optional[int]) -> List[int]:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def reference_path(ref_dir: Path, vocab: str, slice_path: str) -> Path:
    return Path(ref_dir) / vocab / (Path(slice_path).stem + ".npz")


def _flatten(output) -> tuple:
    """(ids, lengths) arrays of one output: list[int] (lengths = [n]) or list[list[int]]."""
    import numpy as np

    if output and isinstance(output[0], (list, tuple)) or (isinstance(output, list) and not output):
        lengths = np.array([len(item) for item in output], dtype=np.int64)
        ids = np.fromiter((i for item in output for i in item), dtype=np.int64, count=int(lengths.sum()))
    else:
        ids = np.asarray(output, dtype=np.int64)
        lengths = np.array([len(ids)], dtype=np.int64)
    return ids, lengths


def compare_with_reference(output, reference_file: Path) -> str:
    """ "ok", "wrong ids: ..." or "unchecked: ..." for one timed output."""
    import numpy as np

    if not reference_file.exists():
        return "unchecked: no tiktoken ids for this slice"
    with np.load(reference_file) as saved:
        ref_ids, ref_lengths = saved["ids"], saved["lengths"]
    ids, lengths = _flatten(output)
    if len(lengths) != len(ref_lengths):
        return f"wrong ids: {len(lengths)} outputs for {len(ref_lengths)} texts"
    if np.array_equal(ids, ref_ids) and np.array_equal(lengths, ref_lengths):
        return "ok"
    text = int(np.argmax(lengths != ref_lengths)) if not np.array_equal(lengths, ref_lengths) else None
    shared = min(len(ids), len(ref_ids))
    mismatch = np.nonzero(ids[:shared] != ref_ids[:shared])[0]
    first = int(mismatch[0]) if len(mismatch) else shared
    where = f"token {first}" + ("" if text is None else f", first text of other length: {text}")
    return f"wrong ids: differ from tiktoken at {where} ({len(ids)} vs {len(ref_ids)} tokens)"


def save_reference(output, reference_file: Path) -> None:
    import numpy as np

    ids, lengths = _flatten(output)
    reference_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = reference_file.with_name(reference_file.stem + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=ids, lengths=lengths)
    os.replace(tmp, reference_file)


def timed(function):
    """(wall, process CPU, result) of one call, garbage collector paused (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        result = function()
        wall = time.perf_counter() - start
        return wall, time.process_time() - cpu, result
    finally:
        gc.enable()


def _error(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {str(exc)[:160]}"


def run_task(encoder, task: dict, vocab: str, ref_dir: Path, is_reference: bool) -> dict:
    from benches import texts

    section = task["section"]
    slices: Sequence[str] = task["slices"]
    out = {"section": section, "kind": task["kind"], "slices": []}
    if section == "threads":
        counts = task["threads"]
        try:
            encoder.encode_with_threads(texts.read_slice(task["warmup"]), counts[-1])
        except Exception as exc:  # NotSupported or a failure: one status for the task
            out["error"] = f"not supported: {exc}" if type(exc).__name__ == "NotSupported" else _error(exc)
            return out
    elif task.get("warmup"):
        warm = texts.read_slice(task["warmup"])
        try:
            if section == "batch":
                encoder.encode_batch(warm)
            elif section == "decode":
                encoder.decode_bytes(encoder.encode(warm[:20000]))
            else:
                encoder.encode(warm)
        except Exception as exc:  # the timed calls will show the same failure per slice
            out["warmup_error"] = _error(exc)
    for index, path in enumerate(slices):
        content = texts.read_slice(path)
        record = {"slice": Path(path).name, "bytes": texts.slice_bytes(content)}
        reference_file = reference_path(ref_dir, vocab, path)
        try:
            if section == "batch":
                wall, cpu, output = timed(lambda c=content: encoder.encode_batch(c))
            elif section == "decode":
                import numpy as np

                if not reference_file.exists():
                    raise FileNotFoundError("no tiktoken ids to decode for this slice")
                with np.load(reference_file) as saved:
                    ids = saved["ids"].tolist()
                record["tokens"] = len(ids)
                wall, cpu, output = timed(lambda i=ids: encoder.decode_bytes(i))
            elif section == "threads":
                count = task["threads"][index % len(task["threads"])]
                record["threads"] = count
                wall, cpu, output = timed(lambda c=content, n=count: encoder.encode_with_threads(c, n))
            else:
                wall, cpu, output = timed(lambda c=content: encoder.encode(c))
        except Exception as exc:  # recorded per slice: e.g. bpe-openai's limit on long texts
            record["status"] = _error(exc)
            out["slices"].append(record)
            continue
        record.update(seconds=wall, cpu_seconds=cpu)
        if section == "decode":
            record["status"] = (
                "ok" if output == content.encode("utf-8") else "wrong bytes: decode differs from the text"
            )
        elif is_reference:
            save_reference(output, reference_file)
            record["status"] = "ok"
        else:
            record["status"] = compare_with_reference(output, reference_file)
        if section != "decode":
            record["tokens"] = sum(len(item) for item in output) if section == "batch" else len(output)
        del output
        out["slices"].append(record)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.encode_worker", description="Time one encoder on one vocab (see module doc)."
    )
    parser.add_argument("job", type=Path, help="JSON job written by benches/measure_encode.py")
    args = parser.parse_args(argv)
    job = json.loads(args.job.read_text(encoding="utf-8"))
    affinity = _pin(job.get("pin_cpu"))

    from benches import peers, vocabs

    spec = vocabs.VocabSpec.from_dict(job["vocab"])
    result = {
        "peer": job["peer"],
        "vocab": spec.name,
        "threads": job["threads"],
        "affinity": affinity,
        "env": {name: os.environ.get(name) for name in (*peers.THREAD_ENV_VARS, "TOKENIZERS_PARALLELISM")},
    }
    try:
        peers.import_peer(job["peer"])
        start = time.perf_counter()
        encoder = peers.load_encoder(job["peer"], spec, job["threads"])
        result["load_seconds"] = time.perf_counter() - start
        # Some peers build their tables lazily, on the first call: time that call (a few words) too.
        start = time.perf_counter()
        encoder.encode("Hello, world! 你好")
        result["first_call_seconds"] = time.perf_counter() - start
    except (peers.PeerUnavailable, vocabs.VocabUnavailable) as exc:
        result["unavailable"] = str(exc)
        print(json.dumps(result))
        return 0
    ref_dir = Path(job["ref_dir"])
    result["tasks"] = [
        run_task(encoder, task, spec.name, ref_dir, job.get("is_reference", False)) for task in job["tasks"]
    ]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
