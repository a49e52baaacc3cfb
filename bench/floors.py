"""The floors of durable-kernel's hot path: what one ~1 KB record costs the disk the journal is on.

A running step's records are framed appends to a per-process log, fdatasync'ed or not depending on
DURABLE_SYNC; these are the same system calls with nothing around them.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.child import timed
from bench.systems import TEXT

RECORD = TEXT.encode()  # 1,000 bytes


def append(folder: Path, count: int, warmup: int, *, sync: bool) -> list[int]:
    """Nanoseconds of each `os.write` of RECORD to an O_APPEND file in `folder`, each followed by
    `os.fdatasync` if `sync`."""
    fd = os.open(folder / f"floor-{'sync' if sync else 'write'}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(_: int) -> None:
        os.write(fd, RECORD)

    def write_sync(_: int) -> None:
        os.write(fd, RECORD)
        os.fdatasync(fd)

    try:
        return timed(write_sync if sync else write, range(count + warmup), warmup)
    finally:
        os.close(fd)
