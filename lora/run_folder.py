"""lora.finetune's folders: the output OUT, and OUT.partial where an unfinished run keeps its resume
state (and, by default, its tensorboard logs) until the adapter is written.

Decided before anything slow starts: whether OUT may be written (bpe_fast.files.check_overwrite: only
an earlier lora.finetune output is ever replaced, never an input), and what to do with an OUT.partial
left by an interrupted run: continue it (--resume), start again (--overwrite), or stop and say which.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bpe_fast.cliutil import UserError
from bpe_fast.files import OverwriteRefused, check_overwrite, marker_tool, recover_dir, write_marker
from lora.config import TOOL, FinetuneConfig, computed_settings, flag
from lora.data import check_data_spec
from lora.sources import local_path

PARTIAL_SUFFIX = ".partial"
RESUME_DIR = "resume"
STATE_FILE = "state.json"


class TrainingInterrupted(Exception):
    """SIGTERM arrived: the resume state was saved in OUT.partial and the run stopped; --resume continues it."""


class TrainingDiverged(UserError):
    """The weights or the losses stopped being finite: nothing is saved as complete."""


@dataclass
class RunFolder:
    out: Path
    work: Path
    resume_step: Optional[int]  # the step the resume state in `work` was saved at, if one is used

    @property
    def resume_dir(self) -> Path:
        return self.work / RESUME_DIR

    def tensorboard_dir(self, config: FinetuneConfig) -> Path:
        return Path(config.logdir) if config.logdir else self.work / "tensorboard"

    def create(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        write_marker(self.work, TOOL)

    def finish(self) -> None:
        """Removes OUT.partial once OUT is complete."""
        shutil.rmtree(self.work, ignore_errors=True)


def saved_state(work: Path) -> Optional[dict]:
    """The resume record in `work` (step, settings, ...), or None when it holds none (or an unreadable one)."""
    recover_dir(work / RESUME_DIR)  # a state replacement cut short by a crash: keep the complete copy
    try:
        record = json.loads((work / RESUME_DIR / STATE_FILE).read_text(encoding="utf-8"))
        int(record["step"])
        return record if isinstance(record.get("settings"), dict) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def check_same_settings(work: Path, recorded: dict, config: FinetuneConfig) -> None:
    """A run resumes only with the settings it was started with (the schedule and data depend on them)."""
    wanted = computed_settings(config.to_dict())
    differing = sorted(key for key in set(recorded) | set(wanted) if recorded.get(key) != wanted.get(key))
    if differing:
        raise UserError(
            f"{work} was started with different settings ({', '.join(differing)}): use the same flags to "
            f"--resume, or {flag('overwrite')} to start again"
        )


def inputs_of(config: FinetuneConfig):
    """The local paths a run reads (its output must not overlap any of them)."""
    paths = [local_path(config.model), local_path(config.tokenizer)]
    data_file = check_data_spec(config.data)
    if data_file is not None:
        paths.append(data_file)
    return [path for path in paths if path is not None]


def prepare_run_folder(
    config: FinetuneConfig, log: Callable[[str], None] = print, say_fresh_start: bool = True
) -> RunFolder:
    """The run's folders after the checks in the module notes; nothing is created or removed unless
    the run may go ahead. `say_fresh_start`: tell a --resume that finds nothing to resume (a sweep,
    which always resumes what it can, does not)."""
    if config.out is None:
        raise UserError("--out is required")
    out = Path(config.out).expanduser()
    work = out.with_name(out.name + PARTIAL_SUFFIX)
    check_overwrite(out, TOOL, config.overwrite, inputs_of(config))
    if not work.exists():
        if config.resume and say_fresh_start:
            log(f"notice: --resume: {work} does not exist, so the run starts from the beginning")
        return RunFolder(out, work, None)
    if not work.is_dir() or (any(work.iterdir()) and marker_tool(work) != TOOL):
        raise OverwriteRefused(
            f"{work} exists and was not made by {TOOL}, which keeps unfinished runs there: move it away"
        )
    state = saved_state(work)
    step = None if state is None else int(state["step"])
    if step is not None and config.resume:
        check_same_settings(work, state["settings"], config)
        return RunFolder(out, work, step)
    if step is not None and not config.overwrite:
        raise UserError(
            f"{work} holds an interrupted run saved at step {step}: pass --resume to continue it, or "
            f"{flag('overwrite')} to start again"
        )
    if config.resume and say_fresh_start:
        log(f"notice: --resume: {work} holds no saved state, so the run starts from the beginning")
    shutil.rmtree(work)
    return RunFolder(out, work, None)
