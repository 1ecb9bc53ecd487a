"""The `.pyi` stub of the Rust extension matches it: mypy's stubtest, with the allowlist in this folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import bpe_fast

pytest.importorskip("mypy", reason="mypy (for stubtest) is not installed")


@pytest.mark.slow
def test_stub_matches_the_extension(tmp_path):
    package_root = Path(bpe_fast.__file__).resolve().parents[1]  # the installed or the source tree's package
    allowlist = Path(__file__).with_name("stubtest_allowlist.txt")
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "bpe_fast._core", "--allowlist", str(allowlist)],
        env=env,
        cwd=tmp_path,  # mypy's cache goes there, not into the checkout
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
