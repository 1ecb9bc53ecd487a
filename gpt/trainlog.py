"""gpt.train's record of a run: OUT/log.jsonl (one JSON object per logged step, DESIGN.md section 6) and,
when installed, TensorBoard events under OUT/tb.

log.jsonl is always valid JSON: a NaN or infinite number is written as null and its key listed under
"nonfinite" (e.g. {"step": 6, "loss": null, "nonfinite": ["loss"], ...}).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from bpe_fast.files import atomic_write_text

LOG_NAME = "log.jsonl"


def json_record(record: dict) -> dict:
    """`record` with non-finite floats replaced by None and named under "nonfinite"."""
    clean, bad = {}, []
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            clean[key] = None
            bad.append(key)
        else:
            clean[key] = value
    if bad:
        clean["nonfinite"] = bad
    return clean


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class LogWriter:
    """log.jsonl (+ TensorBoard) on rank 0. On resume, entries from the checkpoint's step on are dropped
    so the file tells one continuous run."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_step: Optional[int]):
        self.enabled = enabled
        self.path = out_dir / LOG_NAME
        self.tb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.exists():
            atomic_write_text(self.path, "".join(line + "\n" for line in self._lines_before(resume_step)))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(out_dir / "tb"), purge_step=resume_step)
            except ImportError:
                print("tensorboard is not installed: TensorBoard logging skipped", flush=True)

    def _lines_before(self, step: int) -> list[str]:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] < step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill, or not ours
        return kept

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = json_record(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
