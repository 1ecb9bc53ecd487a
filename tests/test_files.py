"""bpe_fast.files: stale temps of killed writers, folder replacement that always keeps a complete copy,
umask modes without touching the umask, full disks, and --overwrite markers."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import textwrap

import pytest

from bpe_fast import files
from bpe_fast.files import (
    DiskFullError,
    OverwriteRefused,
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    check_overwrite,
    recover_dir,
    remove_stale_temps,
    write_marker,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def temp_of(target, pid: int, token: str = "abcd1234") -> str:
    return f".{target}.{files._HOST}-{pid}.{token}{files.TEMP_SUFFIX}"


def test_stale_temps_of_the_same_target_are_removed_and_nothing_else(tmp_path):
    pid = dead_pid()
    stale = tmp_path / temp_of("out.bin", pid)
    stale_dir = tmp_path / temp_of("out.bin", pid, "feedbeef")
    live = tmp_path / temp_of("out.bin", os.getppid())
    other_target = tmp_path / temp_of("other.bin", pid)
    lookalike = tmp_path / ".out.bin.precious"
    stale.write_bytes(b"half")
    stale_dir.mkdir()
    (stale_dir / "x").write_bytes(b"x")
    for keep in (live, other_target, lookalike):
        keep.write_bytes(b"keep")
    removed = remove_stale_temps(tmp_path / "out.bin")
    assert sorted(removed) == sorted([stale, stale_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other_target.name, lookalike.name]
    )


def test_atomic_write_gives_the_umask_mode_and_cleans_its_own_litter(tmp_path):
    old = os.umask(0o027)
    try:
        (tmp_path / temp_of("v.json", dead_pid())).write_bytes(b"{")
        atomic_write_json(tmp_path / "v.json", {"a": [1, 2]})
    finally:
        os.umask(old)
    assert mode(tmp_path / "v.json") == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["v.json"]


def test_writers_that_chmod_their_file_get_the_umask_mode_back(tmp_path):
    target = tmp_path / "w.safetensors"
    with atomic_path(target) as temp:
        with open(temp, "wb") as handle:
            handle.write(b"x")
        os.chmod(temp, 0o600)
    assert mode(target) == 0o666 & ~current_umask()


def current_umask() -> int:
    # Read in a child process, so this test never changes its own umask.
    out = subprocess.run(
        [sys.executable, "-c", "import os; m = os.umask(0); print(m)"], capture_output=True, text=True
    )
    return int(out.stdout)


def test_json_refuses_non_finite_numbers(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_a_folder_and_keeps_a_copy_at_every_instant(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_dir(final) as temp:
        (temp / "a").write_text("one")
    with atomic_dir(final) as temp:
        (temp / "a").write_text("two")
    assert (final / "a").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]

    # A crash right after the old copy was parked: recover_dir puts it back.
    os.replace(final, files._old_name(final))
    recover_dir(final)
    assert (final / "a").read_text() == "two"
    # A crash after the new copy arrived but before the old one was removed: the new one stays.
    old = files._old_name(final)
    old.mkdir()
    (old / "a").write_text("stale")
    recover_dir(final)
    assert (final / "a").read_text() == "two" and not old.exists()


def test_atomic_dir_failure_leaves_the_old_folder(tmp_path):
    final = tmp_path / "adapter"
    with atomic_dir(final) as temp:
        (temp / "w").write_bytes(b"ok")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as temp:
            (temp / "w").write_bytes(b"half")
            raise RuntimeError("killed")
    assert (final / "w").read_bytes() == b"ok"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_full_disk_is_one_error_naming_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "big.bin"
    atomic_write_bytes(target, b"previous")
    script = textwrap.dedent(
        f"""
        import resource, sys
        sys.path[:0] = {sys.path!r}
        from bpe_fast.files import atomic_write_bytes, DiskFullError
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            atomic_write_bytes({str(target)!r}, b"x" * 100000)
        except DiskFullError as error:
            print("DISKFULL", error)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "DISKFULL disk full while writing" in out.stdout and str(target) in out.stdout, out.stderr
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] != 4096  # the limit stayed in the child


def test_disk_full_error_is_an_oserror_with_errno():
    error = DiskFullError("/x/y", OSError(28, "No space left on device"))
    assert isinstance(error, OSError) and error.errno == 28 and error.filename == "/x/y"
    assert files.is_disk_full(
        RuntimeError("[enforce fail at inline_container.cc:671] . unexpected pos 1 vs 2")
    )
    assert not files.is_disk_full(RuntimeError("shape mismatch"))
    # Rust writers (safetensors) put the OS error in the text of their own exception class.
    safetensors_error = type("SafetensorError", (Exception,), {})
    assert files.is_disk_full(
        safetensors_error("Error while serializing: I/O error: File too large (os error 27)")
    )
    assert files.is_disk_full(safetensors_error("I/O error: No space left on device (os error 28)"))
    assert not files.is_disk_full(safetensors_error("Error while serializing: invalid header"))


def test_overwrite_only_replaces_the_same_tools_output(tmp_path):
    out = tmp_path / "run"
    check_overwrite(out, "lora.finetune", overwrite=False)  # missing: fine
    out.mkdir()
    check_overwrite(out, "lora.finetune", overwrite=False)  # empty: fine
    (out / "precious_thesis.tex").write_text("years of work")
    with pytest.raises(OverwriteRefused, match="--overwrite to replace"):
        check_overwrite(out, "lora.finetune", overwrite=False)
    with pytest.raises(OverwriteRefused, match="no .* marker"):
        check_overwrite(out, "lora.finetune", overwrite=True)
    write_marker(out, "lora.merge")
    with pytest.raises(OverwriteRefused, match="made by lora.merge"):
        check_overwrite(out, "lora.finetune", overwrite=True)
    write_marker(out, "lora.finetune")
    check_overwrite(out, "lora.finetune", overwrite=True)
    with pytest.raises(OverwriteRefused, match="overlaps the input"):
        check_overwrite(out, "lora.finetune", overwrite=True, inputs=[out])
    with pytest.raises(OverwriteRefused, match="overlaps the input"):
        check_overwrite(out / "sub", "lora.finetune", overwrite=True, inputs=[out])
