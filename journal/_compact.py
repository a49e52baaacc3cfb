"""Rewriting a small journal file whole when DuckDB has left it bigger than its rows need.

A checkpoint writes the columns it changed into new blocks and frees the old ones, so a small
journal ends up with free blocks, tables whose columns are spread over the blocks of several
checkpoints and half-empty metadata blocks: the 200-turn chat's journal took 28 blocks where a
copy made with COPY FROM DATABASE takes 19. Copying costs about 20 ms for a megabyte, so only
files up to `_MAX_BYTES` are copied, and the copy replaces the file only where it saves blocks.

The copy replaces the file by an atomic rename made while this process still holds DuckDB's lock
on the old one, and only when no other connection of this process uses it (they would go on
writing into the old file). A process that opened the old file in that moment sees that the path
now names another file and connects again (`Journal._connect`). A kill at any point leaves the
journal whole: before the rename it is the old file, after it the new one.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from ._files import private_umask

_MAX_BYTES = 8 << 20
_SAVES = 2  # blocks a copy must save to replace the file
_NAME = "durable_compact"

# Held while this process makes a connection, and from a compaction to the close of the connection that made
# it; opened, closed and compact are called with it held.
lock = threading.Lock()
_open: Counter[Path] = Counter()  # connections of this process to each journal file


def opened(path: Path) -> None:
    _open[path.resolve()] += 1


def closed(path: Path) -> None:
    _open[path.resolve()] -= 1


def identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def compact(con: Any, path: Path) -> bool:
    """Replace the file of `con` (checkpointed) by a tight copy if that saves blocks; True if it did.

    The caller holds `lock` until it has closed `con`.
    """
    if _open[path.resolve()] != 1 or path.stat().st_size > _MAX_BYTES:
        return False
    name, block, total = con.execute(
        "SELECT database_name, block_size, total_blocks FROM pragma_database_size() "
        "WHERE database_name = current_database()").fetchone()
    copy = path.with_name(path.name + ".compact")
    for stale in (copy, copy.with_name(copy.name + ".wal")):  # left by a process killed while copying
        stale.unlink(missing_ok=True)
    quoted = str(copy).replace("'", "''")
    with private_umask():  # the copy and its WAL are DuckDB's to create
        con.execute(f"ATTACH '{quoted}' AS {_NAME} (BLOCK_SIZE {block})")
        try:
            con.execute(f'COPY FROM DATABASE "{name}" TO {_NAME}')
            con.execute(f"CHECKPOINT {_NAME}")
            (after,) = con.execute("SELECT total_blocks FROM pragma_database_size() WHERE database_name = ?",
                                   [_NAME]).fetchone()
        finally:
            con.execute(f"DETACH {_NAME}")
    if after + _SAVES > total:
        copy.unlink(missing_ok=True)
        return False
    os.chmod(copy, stat.S_IMODE(path.stat().st_mode))  # the same file to its user: a mode set on purpose stays
    _fsync(copy)
    os.replace(copy, path)
    _fsync(path.parent)
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
