"""benches/gpu_scale.sh, the prepared GPU check of issue 15, in its CPU dry run (DRY_RUN=1: the same
launches, flags and summary with the tiny-cpu shape), and its summary's verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benches.gpu_scale import main as scale_main  # noqa: E402


def dry_run(tmp_path: Path, modes: str) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "MODES": modes,
        "WORK": str(tmp_path / "work"),
        "OUT": str(out),
        "PYTHON": sys.executable,
    }
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    result = subprocess.run(
        ["bash", str(REPO / "benches" / "gpu_scale.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads((out / "gpu_scale.json").read_text()) if (out / "gpu_scale.json").is_file() else {}
    return result, report, out


def check_mode(report: dict, mode: str) -> dict:
    summary = report["modes"][mode]
    assert summary["status"] == 0 and summary["steps"] == 6 and summary["errors"] == 0, summary
    assert summary["tokens_per_sec"] > 0 and summary["step_ms"] > 0
    assert summary["device"] == "cpu" and summary["peak_rss_gib"] > 0.1  # torch alone is ~0.3 GiB
    assert summary["loss_last"] < summary["loss_first"] - 0.5
    return summary


@pytest.mark.slow
def test_dry_run_of_the_plain_mode(tmp_path):
    result, report, out = dry_run(tmp_path, "plain")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu scale check: OK" in result.stdout
    check_mode(report, "plain")
    assert report["problems"] == []
    table = (out / "gpu_scale.md").read_text()
    assert table.startswith("| mode | status |") and "| plain | 0 | 6 |" in table
    assert (out / "gpu_scale_logs" / "plain" / "log.jsonl").is_file()
    assert not list((tmp_path / "work" / "plain" / "out").glob("ckpt_*"))  # removed after the run


@pytest.mark.slow
def test_dry_run_of_the_fsdp_modes(tmp_path):
    result, report, _ = dry_run(tmp_path, "plain fsdp fsdp-ac")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    plain = check_mode(report, "plain")
    for mode in ("fsdp", "fsdp-ac"):
        summary = check_mode(report, mode)
        # fp32 on CPU, same data and seed: the sharded run follows the same curve.
        assert summary["loss_max_abs_diff_vs_plain"] <= 1e-4, (plain["losses"], summary["losses"])


def write_mode(work: Path, mode: str, status: int, losses: list[float], error: bool = False) -> None:
    folder = work / mode
    (folder / "peak").mkdir(parents=True)
    (folder / "status").write_text(f"{status}\n")
    records = [
        {"step": i, "loss": loss, "tokens_per_sec": 1000.0 + i, "dt_ms": 500.0, "mfu": 0.4}
        for i, loss in enumerate(losses)
    ]
    if error:
        records.append({"step": len(losses), "loss": float("nan"), "error": "non-finite"})
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    peak = {"rank": 0, "status": status, "device": "GPU", "max_allocated_bytes": 3 * 2**30}
    (folder / "peak" / "rank0.json").write_text(json.dumps(peak))


def test_summary_passes_good_runs_and_names_each_problem(tmp_path, capsys):
    write_mode(tmp_path, "plain", 0, [10.0, 9.0, 8.0])
    write_mode(tmp_path, "fsdp", 0, [10.0, 9.1, 8.1])
    assert scale_main(["summary", str(tmp_path), "--modes", "plain", "fsdp", "--skip", "1"]) == 0
    out = capsys.readouterr().out
    assert "| fsdp | 0 | 3 | 1,002 | 500 | 40.0% | 3.00 |" in out and "gpu scale check: OK" in out
    assert "fsdp: largest loss difference from plain, step by step: 0.1000" in out

    write_mode(tmp_path, "crashed", 1, [10.0])
    write_mode(tmp_path, "nan", 0, [10.0, 9.0], error=True)
    (tmp_path / "missing").mkdir()
    modes = ["plain", "crashed", "nan", "missing"]
    assert scale_main(["summary", str(tmp_path), "--modes", *modes, "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    for problem in (
        "crashed: exit status 1",
        "nan: non-finite loss",
        "missing: exit status None",
        "missing: no training steps",
    ):
        assert f"FAIL: {problem}" in out
    report = json.loads((tmp_path / "o" / "gpu_scale.json").read_text())
    assert len(report["problems"]) == 4 and report["modes"]["plain"]["max_allocated_gib"] == 3.0


def test_summary_fails_when_no_loss_falls(tmp_path, capsys):
    write_mode(tmp_path, "plain", 0, [10.0, 9.9, 9.8])
    assert scale_main(["summary", str(tmp_path), "--modes", "plain"]) == 1
    assert "FAIL: no mode's loss fell" in capsys.readouterr().out
