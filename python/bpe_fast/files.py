"""Safe file output, shared by every writer in bpe-fast: vocab files, shards, manifests, checkpoints,
adapters, exports, logs.

The rules this module enforces, so each writer does not re-invent them:

- **Atomic.** A file or folder is written under a temp name beside its destination, fsynced, then
  renamed over it: a reader (or a crash) sees the old complete output or the new complete one.
- **No litter.** Temp names say whose they are: ``.{target}.{host}-{pid}.{random}.bpefast-tmp``. When the
  same writer starts again it removes the temps of *its own target* whose process is gone (same host,
  dead pid), and never touches anything else: not another target's temps, not a live writer's, not a
  file it did not name.
- **Modes from the umask, without reading it.** Files are created with ``os.open(..., 0o666)`` and
  folders with ``os.mkdir(..., 0o777)``, so the OS applies the umask; nothing ever calls ``os.umask``
  (setting it to read it races with other threads creating files). Writers that open our temp name
  themselves (torch.save, safetensors, savefig) may change the mode; it is put back to the mode the OS
  gave our own create.
- **A full disk is one clear error.** ENOSPC/EFBIG/EDQUOT while writing becomes :class:`DiskFullError`,
  which names the file; the temp is removed and the previous output stays.
- **Replacing a folder keeps a complete copy at every instant** (:func:`atomic_dir`): the old folder is
  renamed aside, the new one renamed in, the old one removed; :func:`recover_dir` finishes or undoes an
  interrupted replacement, so a crash between the two renames never loses the only complete copy.
- **--overwrite replaces only what the same tool made** (:func:`check_overwrite`): an output folder
  carries a marker file naming the tool that wrote it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import socket
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

TEMP_SUFFIX = ".bpefast-tmp"
"""Every temp file and folder this module makes ends with this."""

MARKER_NAME = ".bpe-fast-output.json"
"""The file in an output folder that says which tool made it (see `check_overwrite`)."""

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
# Writers in other languages report a failed write without an errno: torch.save's C++ writer as a
# RuntimeError ("unexpected pos ..."), Rust writers such as safetensors with the OS error in the text
# ("I/O error: File too large (os error 27)").
_DISK_FULL_MESSAGES = (
    "unexpected pos",
    "file write failed",
    *sorted({os.strerror(code) for code in _DISK_FULL_ERRNOS}),
    *sorted({f"(os error {code})" for code in _DISK_FULL_ERRNOS}),
)


class DiskFullError(OSError):
    """Writing `filename` failed for lack of space (or a file size limit). Nothing partial was left."""

    def __init__(self, path: PathLike, cause: Optional[BaseException] = None):
        code = getattr(cause, "errno", None) or errno.ENOSPC
        super().__init__(
            code,
            f"disk full while writing {os.fspath(path)} (no space left, or over the file size limit); "
            "free some space and run again",
            os.fspath(path),
        )

    def __str__(self) -> str:
        return self.strerror or "disk full"


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or anything in its cause/context chain) is a failed write for lack of space."""
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        if not isinstance(current, OSError) and any(m in str(current) for m in _DISK_FULL_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


# ----------------------------------------------------------------------------------------------------
# temp names
# ----------------------------------------------------------------------------------------------------

_HOST = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"


def _temp_name(target: Path) -> Path:
    """A fresh temp name beside `target` that records its owner (host and pid)."""
    token = secrets.token_hex(4)
    return target.parent / f".{target.name}.{_HOST}-{os.getpid()}.{token}{TEMP_SUFFIX}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _stale_owner(name: str, target_name: str) -> bool:
    """True for a temp of `target_name` made on this host by a process that no longer exists."""
    prefix = f".{target_name}."
    if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
        return False
    middle = name[len(prefix) : -len(TEMP_SUFFIX)]  # "{host}-{pid}.{token}"
    owner, _, token = middle.rpartition(".")
    host, _, pid = owner.rpartition("-")
    if host != _HOST or not pid.isdigit() or not token:
        return False
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


def _stale_with_suffix(name: str, target_name: str) -> bool:
    # Temps made with a `suffix` end in it after TEMP_SUFFIX.
    cut = name.rfind(TEMP_SUFFIX)
    return cut > 0 and _stale_owner(name[: cut + len(TEMP_SUFFIX)], target_name)


def remove_stale_temps(target: PathLike) -> list[Path]:
    """Removes what killed writers of `target` left beside it (see the module notes); returns them."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if _stale_with_suffix(entry.name, target.name):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            removed.append(path)
    return removed


def temp_target(name: str) -> Optional[str]:
    """The target name a temp made by this module was for (".{target}.{host}-{pid}.{token}.bpefast-tmp",
    maybe followed by a suffix), or None when `name` is not such a temp."""
    cut = name.rfind(TEMP_SUFFIX)
    if not name.startswith(".") or cut < 0:
        return None
    parts = name[1:cut].rsplit(".", 2)  # host and pid have no dots (see _HOST), the token is hex
    return parts[0] if len(parts) == 3 and parts[0] else None


def remove_stale_temps_in(folder: PathLike, is_target: Callable[[str], bool]) -> list[Path]:
    """`remove_stale_temps` for every target in `folder` whose name `is_target` accepts: for a job that
    writes many files (numbered shards, say) and on restart may not write each name again."""
    removed: list[Path] = []
    try:
        names = {temp_target(entry.name) for entry in os.scandir(folder)}
    except OSError:
        return removed
    for target in sorted(n for n in names if n is not None and is_target(n)):
        removed += remove_stale_temps(Path(folder) / target)
    return removed


# ----------------------------------------------------------------------------------------------------
# fsync and modes
# ----------------------------------------------------------------------------------------------------


def fsync_dir(path: PathLike) -> None:
    """Makes a rename inside `path` durable (best effort: some file systems refuse directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_file(path: Path) -> int:
    """Creates `path` empty with mode 0o666 as filtered by the umask; returns that mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _restore_mode(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------------------------------
# atomic files
# ----------------------------------------------------------------------------------------------------


@contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temp file name beside `path` for the caller to write with any writer that takes a name
    (open, torch.save, safetensors, savefig...). On success it is fsynced and renamed over `path`, with
    the mode a plain ``open(path, "w")`` would give; on any error it is removed and a full disk becomes
    :class:`DiskFullError`. Stale temps of `path` left by killed writers are removed first. `suffix`
    is appended to the temp name, for writers that pick a format from it (savefig: ".png")."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{target}: is a directory, cannot write a file there")
    remove_stale_temps(target)
    temp = _temp_name(target)
    if suffix:
        temp = temp.with_name(temp.name + suffix)
    mode = _create_file(temp)
    try:
        yield str(temp)
        _restore_mode(temp, mode)
        _fsync_file(temp)
        os.replace(temp, target)
        fsync_dir(target.parent if str(target.parent) else ".")
    except BaseException as error:
        _remove(temp)
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            raise DiskFullError(target, error) from error
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically (see `atomic_path`); returns the path."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """UTF-8 `atomic_write_bytes` (newlines written as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, data: object, indent: Optional[int] = 1) -> Path:
    """Strict JSON (NaN and infinities refused: they are not JSON) written atomically, with a final newline."""
    return atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------------------------------
# atomic folders
# ----------------------------------------------------------------------------------------------------


def _old_name(final: Path) -> Path:
    """Where `atomic_dir` parks the folder it replaces: fixed, so `recover_dir` can find it."""
    return final.parent / f".{final.name}.old{TEMP_SUFFIX}"


def recover_dir(final: PathLike) -> None:
    """Finishes or undoes an interrupted `atomic_dir` replacement of `final`, and removes its own stale
    temps. If the old copy was parked and the new one never arrived, the old one is put back; if both
    exist, the new one is complete and the old one is removed."""
    final = Path(final)
    old = _old_name(final)
    if old.exists():
        if final.exists():
            _remove(old)
        else:
            os.replace(old, final)
    remove_stale_temps(final)


def _normalize_tree(folder: Path, file_mode: int, dir_mode: int) -> None:
    """fsyncs every file under `folder` and gives files and folders the umask's modes."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            _restore_mode(path, file_mode)
            _fsync_file(path)
        for name in dirs:
            _restore_mode(Path(root) / name, dir_mode)
        fsync_dir(root)


@contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yields an empty temp folder beside `path`; fill it. On success every file in it is fsynced and
    given the umask's mode, and it replaces `path` (an existing folder is parked first and removed
    after, so some complete copy exists at every instant; see `recover_dir`). On error it is removed
    and a full disk becomes :class:`DiskFullError`."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    temp = _temp_name(final)
    os.mkdir(temp, 0o777)
    dir_mode = stat.S_IMODE(temp.stat().st_mode)
    probe = temp / ".mode-probe"
    file_mode = _create_file(probe)
    probe.unlink()
    try:
        yield temp
        _normalize_tree(temp, file_mode, dir_mode)
        if final.exists():
            old = _old_name(final)
            os.replace(final, old)
            os.replace(temp, final)
            fsync_dir(final.parent)
            _remove(old)
        else:
            os.replace(temp, final)
        fsync_dir(final.parent)
    except BaseException as error:
        _remove(temp)
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            raise DiskFullError(final, error) from error
        raise


# ----------------------------------------------------------------------------------------------------
# output folders and --overwrite
# ----------------------------------------------------------------------------------------------------


class OverwriteRefused(ValueError):
    """--overwrite was asked for a folder that is an input, or that the tool did not make."""


def write_marker(folder: PathLike, tool: str) -> Path:
    """Records in `folder` that `tool` (e.g. "lora.finetune") made it."""
    return atomic_write_json(Path(folder) / MARKER_NAME, {"tool": tool})


def marker_tool(folder: PathLike) -> Optional[str]:
    """The tool named by `folder`'s marker, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tool = data.get("tool") if isinstance(data, dict) else None
    return tool if isinstance(tool, str) else None


def _same_or_inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents or path in other.parents


def check_overwrite(out: PathLike, tool: str, overwrite: bool, inputs: Iterable[PathLike] = ()) -> None:
    """Decides whether `tool` may write its output folder `out`.

    A missing or empty folder is always fine. Otherwise, without `overwrite` it is refused; with it,
    only a folder whose marker names the same `tool` may be replaced. Refused in every case: `out`
    being one of `inputs`, inside one, or holding one. Raises :class:`OverwriteRefused` with a one-line
    reason and fix."""
    out_path = Path(out).resolve()
    for given in inputs:
        input_path = Path(given).resolve()
        if _same_or_inside(out_path, input_path):
            raise OverwriteRefused(
                f"--out {out} overlaps the input {given}: choose an output folder apart from the inputs"
            )
    if not out_path.exists():
        return
    if not out_path.is_dir():
        raise OverwriteRefused(f"--out {out} is a file, not a folder: choose another --out")
    if not any(out_path.iterdir()):
        return
    made_by = marker_tool(out_path)
    if not overwrite:
        raise OverwriteRefused(
            f"--out {out} already exists and is not empty: pass --overwrite to replace it, or choose another --out"
        )
    if made_by != tool:
        what = f"was made by {made_by}" if made_by else f"has no {MARKER_NAME} marker"
        raise OverwriteRefused(
            f"--out {out} {what}, so --overwrite will not delete it: {tool} only replaces its own outputs; "
            "choose another --out"
        )


__all__ = [
    "MARKER_NAME",
    "TEMP_SUFFIX",
    "DiskFullError",
    "OverwriteRefused",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_overwrite",
    "fsync_dir",
    "is_disk_full",
    "marker_tool",
    "recover_dir",
    "remove_stale_temps",
    "remove_stale_temps_in",
    "temp_target",
    "write_marker",
]
