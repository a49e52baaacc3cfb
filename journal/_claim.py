"""Which process drives a session: an exclusive `flock` on a file per session, beside the journal.

The operating system lets the lock go when its process dies, however it dies, so a session is
never left held by a dead process and the check needs no DuckDB. The file holds the holder's
description, for the error that refuses a second process.

A lock file nobody holds is removed (by the process that held it, when it exits, and by `durable gc`)
so that they do not pile up, one per session ever run. It is removed only by whoever holds its lock
at that moment, and a process that locks a file checks that it is still the one at the path: a
process that opened the file just before it was removed tries again with a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from . import _blobs, _log
from ._files import make_dirs, open_file
from .errors import SessionHeldError

# The locks this process took: descriptor -> (the file's path, its inode), let go of at exit.
_held: dict[int, tuple[Path, int]] = {}
_pid = os.getpid()  # a forked child must not remove the files of the locks it inherited
_PATIENCE = 0.1  # seconds a lock found held is tried again before the session counts as driven


def locks_dir(journal: Path) -> Path:
    return _log.logs_dir(journal) / "sessions"


def lock_path(journal: Path, session: str) -> Path:
    return locks_dir(journal) / (_blobs.digest(session.encode())[:32] + ".lock")


def hold(journal: Path, session: str, holder: dict[str, object], describe: str) -> int:
    """Lock `session` for this process; returns the descriptor that keeps it (close it to let go).

    Raises SessionHeldError naming the process that holds it.
    """
    global _pid
    path = lock_path(journal, session)
    make_dirs(path.parent)
    deadline = time.monotonic() + _PATIENCE
    while True:
        try:
            fd = take(path)
        except LockHeld as held:
            if time.monotonic() < deadline:  # `durable gc` looking whether it is free holds it for a moment
                time.sleep(0.01)
                continue
            raise SessionHeldError(session, held.describe) from None
        if fd is not None:
            break
    data = json.dumps({**holder, "describe": describe}).encode()
    os.ftruncate(fd, 0)
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, without saying whose it is
        os.pwrite(fd, data, 0)
    if _pid != os.getpid():
        _pid = os.getpid()
        _held.clear()
    _held[fd] = (path, os.fstat(fd).st_ino)
    return fd


class LockHeld(Exception):
    """Another process holds the lock; `describe` names it as its lock file does."""

    def __init__(self, describe: str) -> None:
        super().__init__(describe)
        self.describe = describe


def take(path: Path, *, create: bool = True) -> int | None:
    """The descriptor of `path` locked by this process; None if it was removed meanwhile (try again).

    Raises LockHeld if another process holds it, FileNotFoundError if it is missing and not `create`.
    """
    fd = open_file(path, os.O_RDWR) if create else os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
        finally:
            os.close(fd)
        raise LockHeld(_description(text)) from None
    except BaseException:
        os.close(fd)
        raise
    if not _is_at(fd, path):
        os.close(fd)
        return None
    return fd


def remove(path: Path, fd: int) -> int:
    """Remove the lock file `path` whose lock `fd` holds, and let go; returns the bytes it took."""
    try:
        size = os.fstat(fd).st_size
        if _is_at(fd, path):
            path.unlink()
            return size
        return 0
    finally:
        release(fd)


def let_go(journal: Path, session: str, fd: int) -> None:
    """Stop holding `session` (a process that switched to another one): its lock file goes too."""
    remove(lock_path(journal, session), fd)


def release(fd: int) -> None:
    """Let go of a lock taken with `take`, leaving its file."""
    _held.pop(fd, None)
    os.close(fd)


def remove_if_free(path: Path) -> bool | None:
    """Remove the lock file `path` if no process holds it: True if removed, False if it was gone, None if held."""
    try:
        fd = take(path, create=False)
    except FileNotFoundError:
        return False
    except LockHeld:
        return None
    if fd is None:
        return False
    remove(path, fd)
    return True


def _is_at(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _description(text: str) -> str:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return json.loads(text)["describe"]
    return "another process"


@atexit.register
def _let_go() -> None:
    """The lock files of the sessions this process held go with it (registered before the runtime's
    own exit handler, so it runs after that one has let the sessions go)."""
    if _pid != os.getpid():
        return
    for fd, (path, inode) in list(_held.items()):
        try:
            still = os.fstat(fd).st_ino == inode
        except OSError:
            still = False
        with contextlib.suppress(OSError):
            if still:
                remove(path, fd)
            else:  # let go of already: removed if no other process took it since
                _held.pop(fd, None)
                remove_if_free(path)
