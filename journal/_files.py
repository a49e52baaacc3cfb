"""Files and folders of a journal are its user's alone: 0600 and 0700, whatever the umask.

A journal holds prompts, answers, tool results and variables, so, like Postgres with its data
directory, whatever the journal creates (its folder, the DuckDB file and WAL, the logs, packs,
locks, compacted copies, exported scripts) is readable by its owner only. A file or folder that
exists already keeps its mode: a mode set on purpose (say 0640 for a group that reads it) stays.

DuckDB creates its files itself with the umask's mode, and makes the WAL anew after every
checkpoint, so around what may create one the umask is 077. The umask is the process's: other
threads creating files in that moment get owner-only files too, so the window is kept to the
statements that may create a file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700

_umask_lock = threading.Lock()
_umask_users = 0  # threads inside private_umask: the umask goes back when the last one leaves
_umask_saved = 0


@contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created meanwhile, by this process, are owner-only (0600/0700 at most)."""
    global _umask_users, _umask_saved
    with _umask_lock:
        if _umask_users == 0:
            _umask_saved = os.umask(0o077)
        _umask_users += 1
    try:
        yield
    finally:
        with _umask_lock:
            _umask_users -= 1
            if _umask_users == 0:
                os.umask(_umask_saved)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


@contextmanager
def private_wal(database: str) -> Iterator[None]:
    """Around a DuckDB statement on `database` that may write: a WAL it makes is 0600."""
    wal = database + ".wal"
    before = _inode(wal)
    if before is None:
        with private_umask():
            yield
        return
    try:
        yield
    finally:
        # Another connection of this process checkpointed (deleting the WAL) and this statement made it again.
        if _inode(wal) not in (before, None):
            os.chmod(wal, FILE_MODE)


def make_dirs(path: Path) -> None:
    """`path` and its missing parents as folders; those created are 0700, existing ones are left as they are."""
    try:
        os.mkdir(path, FOLDER_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    except FileNotFoundError:
        make_dirs(path.parent)
        make_dirs(path)
        return
    os.chmod(path, FOLDER_MODE)  # exactly, whatever the umask took away


def open_file(path: Path, flags: int, *, new: bool = False) -> int:
    """A descriptor of `path`, created 0600 if missing (`new`: it must not exist yet)."""
    while True:
        if not new:
            try:
                return os.open(path, flags)  # most opens find the file: one system call
            except FileNotFoundError:
                pass
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            if new:
                raise
            continue  # another process created it in between
        os.fchmod(fd, FILE_MODE)  # exactly, whatever the umask took away
        return fd


def write_file(path: Path, data: bytes) -> None:
    """Write `path` whole: a new file is 0600, an existing one is overwritten and keeps its mode."""
    fd = open_file(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def replace_file(path: Path, data: bytes) -> None:
    """Write `path` as a new 0600 file, atomically (a reader sees the old content or the new)."""
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)  # left by a process killed while writing
    write_file(temporary, data)
    os.replace(temporary, path)
