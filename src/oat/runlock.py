"""One writer per run folder: an OS file lock held for the life of train / evaluate / report.

The lock is ``fcntl.flock`` on ``RUN/.oat.lock``, so the OS releases it when the process
dies (no stale locks after a crash or ``kill -9``). The file holds the holder's pid and
command, so a refused second writer can say who holds the folder. The file is removed on
release, so a command leaves the folder as it found it; a racing acquirer that locked a
file just unlinked notices (its inode no longer matches the path) and tries again.

Shared by ``oat.train`` and ``oat.evaluate`` (neither imports the other). Re-entrant within
one process: ``train`` holds the lock while it calls ``evaluate_run``, which takes it again.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from pathlib import Path

from oat.errors import RunFolderError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None

LOCK_NAME = ".oat.lock"

# realpath of the folder -> [fd, depth, what]: the locks this process holds.
_HELD: dict[str, list] = {}


class RunLockedError(RunFolderError):
    """Another process holds the run folder's lock."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text()[:200].strip()
    except OSError:
        return "another process"
    pid, _, what = text.partition(" ")
    return f"pid {pid} ({what})" if pid.isdigit() and what else f"pid {pid}" if pid.isdigit() else "another process"


def _acquire(folder: Path, what: str) -> int:
    path = folder / LOCK_NAME
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(f"{folder} is in use by {_holder(path)}; wait for it to finish "
                                 "(one writer per run folder)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the previous holder unlinked it between our open and flock: retry
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {what}\n".encode())
            return fd
        os.close(fd)
    raise RunLockedError(f"{folder}: could not take the run lock (its lock file keeps being replaced)")


def _release(folder: Path, fd: int) -> None:
    # Unlink while still holding the lock, so no one else can be holding this inode.
    try:
        if os.fstat(fd).st_ino == os.stat(folder / LOCK_NAME).st_ino:
            os.unlink(folder / LOCK_NAME)
    except OSError:
        pass
    os.close(fd)


@contextmanager
def run_lock(folder, what: str = "oat"):
    """Hold ``folder``'s lock for the ``with`` block; refuse with one line if another process holds it.

    A folder that does not exist (yet) is not locked: there is nothing to protect.

    Raises:
        RunLockedError: another process holds the lock (its pid is named).
    """
    folder = Path(folder)
    if fcntl is None or not folder.is_dir():
        yield
        return
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        _HELD[key] = [_acquire(folder, what), 1, what]
    try:
        yield
    finally:
        entry = _HELD[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[key]
            _release(folder, entry[0])


def swap_lock(folder, old_location) -> None:
    """Hold ``folder``'s lock afresh after the folder this process locked there was renamed to
    ``old_location`` (or deleted): ``--overwrite`` moves the old run aside and creates a new one."""
    if fcntl is None:
        return
    entry = _HELD[os.path.realpath(folder)]
    fd = _acquire(Path(folder), entry[2])
    _release(Path(old_location), entry[0])
    entry[0] = fd


def lock_held(folder) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return os.path.realpath(folder) in _HELD


def locked(folder_of, what: str):
    """Decorator: run the function holding the lock of ``folder_of(*args, **kwargs)``."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with run_lock(folder_of(*args, **kwargs), what):
                return fn(*args, **kwargs)

        return wrapper

    return deco
