"""The README's GPT-2 block, run as written on a folder of .txt files (only a step cap added to training)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHILD_PYTHONPATH, CORPORA

REPO = Path(__file__).resolve().parents[1]


def readme_gpt2_lines() -> list[str]:
    """The command lines of the first ```bash block under "## GPT-2" in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## GPT-2", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("python -m gpt.")]


def pick(lines: list[str], start: str) -> list[str]:
    found = [line for line in lines if line.startswith(start)]
    assert found, f"README's GPT-2 block has no line starting with {start!r}"
    return shlex.split(found[0])


@pytest.mark.slow  # trains two steps of a GPT-2-vocab model on CPU
def test_readme_gpt2_block_runs_as_written(tmp_path):
    lines = readme_gpt2_lines()
    prepare = pick(lines, "python -m gpt.prepare --files")
    train = pick(lines, "python -m gpt.train --preset tiny-cpu")
    plot = pick(lines, "python -m gpt.plot")
    sample = pick(lines, "python -m gpt.sample")
    # A folder of .txt files, each one document: the README's 'corpus/*.txt'.
    text = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    (tmp_path / "corpus").mkdir()
    for i in range(6):
        (tmp_path / "corpus" / f"part{i}.txt").write_text(text[i * 8_000 : (i + 1) * 8_000], encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}

    def run(argv: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
        assert argv[0] == "python"
        result = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    run(prepare)
    shards = tmp_path / prepare[prepare.index("--out") + 1]
    manifest = json.loads((shards / "manifest.json").read_text())
    assert {s["split"] for s in manifest["shards"]} == {"val", "train"}
    assert manifest["num_documents"] == 6
    run([*train, "--max-steps", "2"])
    out = tmp_path / train[train.index("--out") + 1]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][-1] == 1 and any(r.get("val_loss") for r in log)
    run(plot)
    assert (tmp_path / plot[plot.index("-o") + 1]).read_bytes()[:4] == b"\x89PNG"
    assert "ROMEO:" in run(sample).stdout
