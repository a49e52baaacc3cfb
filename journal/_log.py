"""The journal's hot path: one append-only log file per writing process, beside the DuckDB file.

A journaled call is one framed append (`write()` of length, checksum, kind, body) to the log of
the process that made it, and the program goes on once the append returns. A process killed at
any point (SIGKILL, OOM, a kernel restart) loses nothing it had written: the bytes are in the
operating system's page cache. Only a power cut or an OS crash can lose unsynced appends, which
is what the sync modes are about:

- `always`: every record is fdatasync'ed before the call returns.
- `effects` (default): records whose loss could repeat an effect (the start of a tool that is not
  idempotent) are fdatasync'ed; the others survive a killed process, not a power cut.
- `never`: nothing is fdatasync'ed; a killed process still loses nothing.

DuckDB takes the logs in later (see `_absorb`). A log's name says which process writes it, so
whoever opens the journal can tell a finished log (its writer is gone) from a growing one.

An append that fails (a full disk) is taken back: the file is cut to where its last whole record
ends, so the records appended after it stay readable. Where even that fails, the torn record stays,
a `.full` file beside the log tells its readers why, and the writer goes on in a new file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import _seal, _space
from ._files import make_dirs, open_file

SYNC_MODES = ("always", "effects", "never")
# length of kind + body, crc32 of kind + body; then one byte of kind
_HEADER = struct.Struct("<II")
EVENT, BLOB = b"E", b"B"
_SUFFIX = ".log"
# Before the start of a tool that is not idempotent, this much room past it is reserved for its outcome
# (see _space); reserving goes in larger steps, so that it is one system call in many appends.
_ROOM = 128 << 10
_RESERVE_STEP = 512 << 10


def sync_mode(value: str | None = None) -> str:
    """The durability mode: `value`, else `$DURABLE_SYNC`, else `effects`."""
    mode = (value if value is not None else os.environ.get("DURABLE_SYNC") or "effects").strip().lower()
    if mode not in SYNC_MODES:
        from .errors import JournalError

        raise JournalError(f"DURABLE_SYNC={mode!r} is not a durability mode; use one of: {', '.join(SYNC_MODES)}")
    return mode


def logs_dir(journal: Path) -> Path:
    return journal.with_name(journal.name + ".logs")


def frame(kind: bytes, body: bytes) -> bytes:
    payload = kind + body
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def blob_frame(key: str, data: bytes) -> bytes:
    raw = key.encode()
    return frame(BLOB, bytes([len(raw)]) + raw + _seal.seal_blob(data))


def event_frame(event: dict[str, Any]) -> bytes:
    return frame(EVENT, json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())


def read_frames(path: Path, start: int, limit: int = -1) -> tuple[list[tuple[bytes, bytes]], int, int]:
    """The whole frames of a log from byte `start`: ([(kind, body)], end of the last whole frame, bytes left).

    Reading stops at the first frame that is cut short or fails its checksum: from a growing log
    that is a frame still being written; from a finished one, a record torn by the kill. With a
    `limit`, at most that many bytes are read (but always one whole frame if there is one), and
    the bytes left count those after the last frame read to the end of the file.
    """
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read(limit)
        frames, used, left = read_frames_of(data)
        if limit >= 0 and len(data) == limit:
            if not frames:  # one frame larger than the limit
                file.seek(start)
                data = file.read()
                frames, used, left = read_frames_of(data)
            else:
                left = os.fstat(file.fileno()).st_size - start - used
    return frames, start + used, left


def frames_with_offsets(path: Path, start: int) -> tuple[list[tuple[int, bytes, bytes]], int]:
    """The whole frames of a log from byte `start`, each with its offset: ([(offset, kind, body)], end).

    A log's file is longer than what it holds (room is reserved ahead, as zeros): where no frame
    starts at `start`, only its header is read.
    """
    with open(path, "rb") as file:
        file.seek(start)
        head = file.read(_HEADER.size)
        if len(head) < _HEADER.size or _HEADER.unpack(head)[0] == 0:
            return [], start
        frames, used, _ = read_frames_of(head + file.read())
    placed, offset = [], start
    for kind, body in frames:
        placed.append((offset, kind, body))
        offset += _HEADER.size + len(kind) + len(body)
    return placed, start + used


def read_frames_of(data: bytes) -> tuple[list[tuple[bytes, bytes]], int, int]:
    """The whole frames at the start of `data`: ([(kind, body)], bytes they take, bytes left)."""
    frames: list[tuple[bytes, bytes]] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        if length == 0 or end > len(data):
            break
        payload = data[offset + _HEADER.size:end]
        if zlib.crc32(payload) != crc:
            break
        frames.append((payload[:1], payload[1:]))
        offset = end
    return frames, offset, len(data) - offset


def split_blob(body: bytes) -> tuple[str, bytes]:
    size = body[0]
    return body[1:1 + size].decode(), body[1 + size:]


def writer_of(path: Path) -> tuple[str, int, str] | None:
    """(host, pid, process start) from a log's name, None for a file that is not a log."""
    if path.suffix != _SUFFIX:
        return None
    parts = path.stem.rsplit("-", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def full_marker(log: Path) -> Path:
    """The empty file saying that a record at the end of `log` was cut short by a full disk."""
    return log.with_name(log.name + ".full")


def logs_in(directory: Path) -> Iterator[Path]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        path = directory / name
        if writer_of(path) is not None:
            yield path


class LogWriter:
    """The log this process appends to for one journal. Thread-safe; files are opened lazily."""

    def __init__(self, journal: Path, *, sync: str, process_start: str) -> None:
        self.directory = logs_dir(journal)
        self.sync = sync
        self._process_start = process_start  # "" where /proc cannot tell, as Holder has it
        self._lock = threading.Lock()
        self.records = threading.Lock()  # held by a step writer while it decides which blobs a record carries
        self._fd: int | None = None
        self._path: Path | None = None
        self._generation = 0
        self._pid = os.getpid()
        self.position = 0  # bytes written to the current file
        self._reserved = 0  # bytes of the current file reserved for appends (-1: it cannot reserve)
        self.full = False  # an append of this process failed on a full disk

    @property
    def path(self) -> Path | None:
        return self._path

    def append(self, data: bytes, *, effect: bool = False) -> None:
        """Append frames; returns once they survive the process (and a power cut, per the sync mode)."""
        with self._lock:
            fd = self._open()
            try:
                if effect:
                    self._make_room(fd, len(data))
                written = os.write(fd, data)
                while written < len(data):  # a short write (a signal, a full disk) goes on where it stopped
                    written += os.write(fd, data[written:])
                if self.sync == "always" or (effect and self.sync == "effects"):
                    os.fdatasync(fd)
            except OSError as exc:
                self._take_back(fd, exc)
                raise
            self.position += len(data)

    def _make_room(self, fd: int, size: int) -> None:
        end = self.position + size + _ROOM
        if self._reserved < 0 or end <= self._reserved:
            return
        if _space.reserve(fd, self.position, end + _RESERVE_STEP - self.position):
            self._reserved = end + _RESERVE_STEP
        else:
            self._reserved = -1

    def _take_back(self, fd: int, exc: OSError) -> None:
        """After a failed append the file ends where its last whole record ends, or is given up."""
        if _space.disk_full(exc):
            self.full = True
        try:
            os.ftruncate(fd, self.position)  # also lets go of what was reserved past it
            self._reserved = min(self._reserved, 0)
            return
        except OSError:
            pass
        if self.full and self._path is not None:
            with contextlib.suppress(OSError):  # its readers then say that it was cut short, not why
                os.close(open_file(full_marker(self._path), os.O_WRONLY))
        os.close(fd)
        self._fd, self._path, self.position, self._reserved = None, None, 0, 0

    def _open(self) -> int:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        if self._pid != os.getpid():  # a forked child writes a log of its own
            self._pid, self._fd, self._generation, self.position = os.getpid(), None, 0, 0
        make_dirs(self.directory)
        while True:
            self._generation += 1
            host = socket.gethostname().replace("-", "_")
            path = self.directory / f"{host}-{self._pid}-{self._process_start}-{self._generation}{_SUFFIX}"
            try:
                self._fd = open_file(path, os.O_WRONLY | os.O_APPEND, new=True)
            except FileExistsError:
                continue  # a log of an earlier process with the same pid and start (or of ours)
            self._path = path
            self.position, self._reserved = 0, 0
            return self._fd

    def retire(self, absorbed_to: int) -> Path | None:
        """Close the current file if DuckDB holds all of it; the next append starts a new one.

        Returns the retired file, for the caller to delete once the absorbed position is committed.
        """
        with self._lock:
            if self._fd is None or self._pid != os.getpid() or absorbed_to != self.position:
                return None
            os.close(self._fd)
            retired, self._fd, self._path, self.position, self._reserved = self._path, None, None, 0, 0
            return retired
