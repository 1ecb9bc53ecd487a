"""The built wheel, installed into a fresh venv and run from a temp folder: the bundled samples are found
and gpt.pipeline runs without a checkout (issue 13.5).

torch and the other heavy dependencies come from the test's own environment through a .pth file, so the
venv holds only the wheel; PYTHONPATH is cleared, and the test checks that bpe_fast, gpt and the samples
are the installed copies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(venv python, environment) with the freshly built wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    build_env = {
        **os.environ,
        # A test build: thin LTO off and parallel codegen (minutes less; the release profile is for users).
        "CARGO_PROFILE_RELEASE_LTO": "false",
        "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16",
    }
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(root / "dist")], cwd=REPO, env=build_env,
        timeout=1800)  # fmt: skip
    (wheel,) = (root / "dist").glob("bpe_fast-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    python = venv / "bin" / "python"
    site = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], timeout=600)
    # After the install: pip must not see the test environment's own bpe-fast as already installed.
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return python, env


@pytest.mark.slow  # builds the Rust extension
def test_installed_wheel_finds_its_samples_and_runs_the_pipeline(installed, tmp_path):
    python, env = installed
    venv = python.parent.parent
    where = run(
        [str(python), "-c", "import bpe_fast, gpt.pipeline, lora; from bpe_fast import samples; "
         "print(bpe_fast.__file__); print(gpt.pipeline.__file__); print(lora.__file__); "
         "print(samples.path('tinyshakespeare.txt')); print(samples.path('chatterbot_instructions.jsonl')); "
         "print(gpt.pipeline.parse_config([]).corpus); print(samples.gpt2_dir())"],
        cwd=tmp_path, env=env,
    ).stdout.split()  # fmt: skip
    for path in where:
        assert Path(path).exists() and Path(path).resolve().is_relative_to(venv.resolve()), path
    assert str(REPO) not in " ".join(where)
    help_text = run([str(python), "-m", "gpt.pipeline", "--help"], cwd=tmp_path, env=env).stdout
    assert "--threads" in help_text and "--corpus" in help_text
    corpus = tmp_path / "small.txt"
    corpus.write_text(Path(where[3]).read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    result = run(
        [str(python), "-m", "gpt.pipeline", "--corpus", "small.txt", "--vocab", "300", "--max-steps", "2",
         "--val-every", "1", "--val-steps", "1", "--shard-size", "4000"],
        cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip
    assert "rebuilt: tokenizer, check, shards, train, sample, plot" in result.stdout
    assert (tmp_path / "out" / "pipeline" / "loss.png").is_file()
