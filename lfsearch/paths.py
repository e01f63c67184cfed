"""Folders and files on disk, with errors a person can read.

`make_folder` creates an output folder (--out, a journal's folder) or raises a one-line
ValueError that names the option, the path and the reason in words, e.g.

    cannot create --out file/sub: 'file' is not a folder
    cannot create --out /sys/x: permission denied ('/sys' does not allow it)

instead of an OSError's "[Errno 20] Not a directory: 'file/sub'". `remove_stale_temp_files`
removes the `.NAME.tmpPID` files that atomic writes (temp file + os.replace) leave behind
when their process was killed between the two steps (docs/faults.md). `folder_lock` keeps a
second process out of a run or compare folder; `check_output` refuses an output that is an
input or, without --force, one that exists.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

_TEMP = re.compile(r"^\..+\.tmp(\d+)(\..*)?$")
_WORDS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "too many symbolic links",
}


def nearest_existing(path: Path) -> Path:
    """The longest leading part of `path` that exists (at worst '.' or '/')."""
    path = Path(path)
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def describe_os_error(exc: OSError, path: str | os.PathLike) -> str:
    """An OSError in words, for a path being created or written."""
    path = Path(path)
    near = nearest_existing(path)
    if exc.errno == errno.ENOTDIR or (exc.errno == errno.EEXIST and near.is_file()):
        blocker = near if not near.is_dir() else path
        return f"{str(blocker)!r} is not a folder"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({str(near)!r} does not allow it)"
    words = _WORDS.get(exc.errno)
    if words is None:
        words = (exc.strerror or type(exc).__name__).lower()
    return words


def make_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create `path` (and its parents) if needed and check it can be written in.

    Raises ValueError("cannot create {what} {path}: {reason}") in one line otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot create {what} {path}: {str(path)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {what} {path}: {describe_os_error(exc, path)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write in {what} {path}: permission denied")
    return path


def check_creatable(path: str | os.PathLike, what: str = "--out") -> None:
    """Raise the one-line ValueError `make_folder` would, without creating anything.

    The nearest existing part of the path must be a folder this process may write in."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"cannot create {what} {path}: {str(path)!r} exists and is not a "
                             "folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write in {what} {path}: permission denied")
        return
    near = nearest_existing(path)
    if not near.is_dir():
        raise ValueError(f"cannot create {what} {path}: {str(near)!r} is not a folder")
    if not os.access(near, os.W_OK | os.X_OK):
        raise ValueError(f"cannot create {what} {path}: permission denied ({str(near)!r} does "
                         "not allow it)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove `.NAME.tmpPID[.ext]` files in `folder` whose process is not running; returns them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        match = _TEMP.match(p.name)
        if match is None or not p.is_file():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (links and `..` resolved)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(path: str | os.PathLike, what: str, *, inputs=(), force: bool = False) -> Path:
    """Refuse an output file that is one of `inputs` ((description, path) pairs) or, without
    `force`, one that exists; one-line ValueError naming the option and the file."""
    path = Path(path)
    for description, other in inputs:
        if same_file(path, other):
            raise ValueError(f"{what} {path} is {description}; write the output to another file")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise ValueError(f"{what} {path} already exists; pass --force to replace it")
    return path


LOCK_NAME = ".lock"
_HELD: dict[str, list] = {}  # real path of a locked folder -> [file descriptor, depth]


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run folder") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (fcntl.flock on FOLDER/.lock, which holds our PID)
    while the block runs; the kernel releases it when the process ends, however it ends.

    Another process that holds it: one-line ValueError naming its PID. Re-entrant within one
    process (a compare's run, a resumed run in the same interpreter)."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield folder / LOCK_NAME
        finally:
            _HELD[key][1] -= 1
        return
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ValueError(f"cannot lock {what} {folder}: {describe_os_error(exc, path)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ValueError(f"{what} {folder} is in use by process {holder} (it holds {path}); "
                         "wait for that process to end, or give another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = [fd, 1]
    try:
        yield path
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            del _HELD[key]
            os.close(fd)  # releases the lock; the file stays (removing it would race)
