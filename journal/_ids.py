"""Call ids, handed out in blocks from a small counter file beside the journal.

A step that makes more calls than its first block needs more ids while it runs; taking them
from DuckDB would open the file (and absorb the logs) in the middle of the step. The counter
is a file of one number under an exclusive `flock`, synced when it moves, so that an id in a
synced log record is never handed out again after a power cut. DuckDB keeps the floor
(`journal_state`): a counter file that is missing is started from it, never from zero.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from . import _log
from ._files import make_dirs, open_file


def _counter(journal: Path) -> Path:
    return _log.logs_dir(journal) / "next-call-id"


def reserve(journal: Path, count: int, *, floor: int | None = None) -> list[int] | None:
    """`count` ids no other writer gets; None when there is no counter yet and no `floor` to start from."""
    path = _counter(journal)
    if floor is None and not path.exists():
        return None
    make_dirs(path.parent)
    fd = open_file(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = os.pread(fd, 32, 0).strip()
        current = int(text) if text.isdigit() else 0
        if current == 0 and floor is None:
            return None
        first = max(current, floor or 0)
        data = str(first + count).encode().ljust(20)
        os.pwrite(fd, data, 0)
        os.fdatasync(fd)
        return list(range(first, first + count))
    finally:
        os.close(fd)
