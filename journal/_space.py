"""A full disk: telling it from other failures, and keeping room for what must not be lost to it.

A tool that is not idempotent is journaled twice: its start before it runs, its outcome after. If
the disk fills in between, the effect happened and its outcome cannot be journaled: the call stays
in doubt until someone settles it. So before such a start is appended, the log reserves room past
its end (`fallocate` keeping the file's size): the outcome is then written into blocks the file
holds already, and a disk that is full makes the start fail, before the tool runs. Where the file
system cannot reserve (not Linux, or no support), the log goes on without it.
"""

from __future__ import annotations

import ctypes
import errno
import os

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# DuckDB reports a failed write in its own exception types, with the operating system's words.
_FULL_WORDS = ("No space left on device", "Disk quota exceeded")
_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE: reserve blocks past the end without changing the file's size

_fallocate: list[object] = []  # the libc function, or None where there is none; looked up once


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says that the disk (or the user's quota) is full."""
    from .errors import JournalFullError

    if isinstance(exc, JournalFullError) or (isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS):
        return True
    return any(words in str(exc) for words in _FULL_WORDS)


def cannot_write(exc: BaseException) -> bool:
    """Whether `exc` says that a file could not be written (full, read-only, not permitted)."""
    from .errors import JournalFullError

    if isinstance(exc, (OSError, JournalFullError)) or disk_full(exc):
        return True
    try:
        import duckdb
    except ImportError:  # pragma: no cover - duckdb is a dependency
        return False
    return isinstance(exc, (duckdb.IOException, duckdb.PermissionException))


def reserve(fd: int, offset: int, length: int) -> bool:
    """Reserve `length` bytes of `fd` from `offset` without changing its size; False where it cannot.

    Raises OSError (ENOSPC) when the disk has no room for them.
    """
    function = _function()
    if function is None:
        return False
    if function(fd, _KEEP_SIZE, offset, length) == 0:  # type: ignore[operator]
        return True
    code = ctypes.get_errno()
    if code in _FULL_ERRNOS:
        raise OSError(code, os.strerror(code))
    return False  # not supported here (or refused for another reason): appends go on without it


def _function() -> object:
    if not _fallocate:
        found = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            found = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
        except OSError:
            pass
        if found is not None:
            found.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            found.restype = ctypes.c_int
        _fallocate.append(found)
    return _fallocate[0]
