"""Which process drives a session: an exclusive `flock` on a file per session, beside the journal.

The operating system lets the lock go when its process dies, however it dies, so a session is
never left held by a dead process and the check needs no DuckDB. The file holds the holder's
description, for the error that refuses a second process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from . import _blobs, _log
from ._files import make_dirs, open_file
from .errors import SessionHeldError


def hold(journal: Path, session: str, holder: dict[str, object], describe: str) -> int:
    """Lock `session` for this process; returns the descriptor that keeps it (close it to let go).

    Raises SessionHeldError naming the process that holds it.
    """
    directory = _log.logs_dir(journal) / "sessions"
    make_dirs(directory)
    path = directory / (_blobs.digest(session.encode())[:32] + ".lock")
    fd = open_file(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = path.read_text() if path.exists() else ""
        os.close(fd)
        raise SessionHeldError(session, _description(text)) from None
    except BaseException:
        os.close(fd)
        raise
    data = json.dumps({**holder, "describe": describe}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    return fd


def _description(text: str) -> str:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return json.loads(text)["describe"]
    return "another process"
