"""What a journal leaves beside itself, removed once nothing needs it; and forgetting a session whole.

Beside the DuckDB file live a lock file per session (`_claim`), a replay pack per step (`_pack`)
and the append logs (`_log`). Taken one by one they are small; over thousands of sessions they
pile up. `collect` removes what no one can use any more: lock files no process holds, packs of
steps that are gone or moved on (or taken from another file), logs of dead processes once
absorbed, files left by a process killed while writing them, and blobs no record refers to.

Blobs are content-addressed and shared: a process that has seen a blob stored skips writing it
again (`Journal._known`). So blobs are deleted only while no process drives a session of the
journal, and only after `swept_marker` has changed, which makes every process that begins a step
or opens the journal later forget what it knew (see `Journal._check_swept`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import _blobs, _blobstore, _claim, _log, _pack, _seal
from ._files import make_dirs, replace_file
from .errors import JournalError, SessionHeldError

if TYPE_CHECKING:
    from ._store import Journal, Store

_HEX = re.compile(rb"[0-9a-f]{32,}")
_KEY_DIGITS = 32
_LISTED = 5  # sessions named in the error for a session that is not there


@dataclass
class Removed:
    """What a collection or a forget removed, and what it had to keep."""

    locks: int = 0
    packs: int = 0
    logs: int = 0
    leftovers: int = 0  # temporary copies and markers left by processes killed while writing them
    file_bytes: int = 0
    records: int = 0
    blobs: int = 0
    blob_bytes: int = 0  # of compressed packs in the journal file
    held: int = 0  # lock files kept: a live process drives their session
    blobs_kept: int = 0  # blobs no record refers to, kept while a process drives a session

    def files(self) -> str:
        parts = [_count(self.locks, "lock file"), _count(self.packs, "replay pack"), _count(self.logs, "log"),
                 _count(self.leftovers, "leftover file")]
        return ", ".join(part for part in parts if part) or "no files"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}" if n else ""


def collect(journal: Journal) -> Removed:
    """Remove what nothing needs beside `journal` and in it (see the module's docstring)."""
    journal.require_file()
    removed = Removed()
    directory = _log.logs_dir(journal.path)
    finished = {path: path.stat().st_size for path in _log.logs_in(directory) if not _alive(path)}
    with journal.open() as store:  # opening absorbs every log, and deletes those of dead processes
        for path, size in finished.items():
            if not path.exists():
                removed.logs += 1
                removed.file_bytes += size
        _leftovers(journal.path, removed)
        _stale_packs(store, removed)
        for lock in sorted(_claim.locks_dir(journal.path).glob("*.lock")):
            try:
                size = lock.stat().st_size
            except FileNotFoundError:
                continue
            gone = _claim.remove_if_free(lock)
            if gone is None:
                removed.held += 1
            elif gone:
                removed.locks += 1
                removed.file_bytes += size
        _sweep(store, removed)
    return removed


def forget(journal: Journal, session: str) -> Removed:
    """Remove every record and file of `session`; blobs other sessions use stay.

    Raises SessionHeldError if a live process drives it, JournalError if there is no such session.
    """
    journal.require_file()
    lock = _claim.lock_path(journal.path, session)
    removed = Removed()
    fd = None
    try:
        with journal.open() as store:  # nothing begins through DuckDB while it is open here
            _refuse_missing(store, session)
            fd = _take(lock, session)  # and, held to the end, nothing begins from a pack
            _refuse_driven(store, session)
            steps = [name for (name,) in store.con.execute(
                "SELECT name FROM step_records WHERE session = ?", [session]).fetchall()]
            with store.transaction():
                (removed.records,) = store.con.execute(
                    "SELECT count(*) FROM records WHERE session = ? AND kind <> 'state'", [session]).fetchone()
                store.con.execute("DELETE FROM records WHERE session = ? AND kind <> 'state'", [session])
            with _pack.locked(journal.path, shared=False, create=False):
                for step in steps:
                    _unlink(_pack.pack_path(journal.path, session, step), removed, "packs")
            _sweep(store, removed, own=lock)
    finally:
        size = _claim.remove(lock, fd) if fd is not None else 0
    if size:  # 0: this process made it, empty, for the while; not a file the session left
        removed.locks += 1
        removed.file_bytes += size
    return removed


def _take(lock: Path, session: str) -> int:
    """The session's lock file, made if missing, held by this process."""
    make_dirs(lock.parent)
    while True:
        try:
            fd = _claim.take(lock)
        except _claim.LockHeld as held:
            raise SessionHeldError(session, held.describe) from None
        if fd is not None:
            return fd


def _refuse_missing(store: Store, session: str) -> None:
    found = store.con.execute("SELECT 1 FROM records WHERE session = ? AND kind <> 'state' LIMIT 1",
                              [session]).fetchone()
    if found is None:
        names = [name for (name,) in store.con.execute("SELECT name FROM session_records ORDER BY name").fetchall()]
        more = f", ... ({len(names)} in all: durable ls)" if len(names) > _LISTED else ""
        listed = ", ".join(names[:_LISTED]) + more
        raise JournalError(f"no session {session!r} in {store.journal.path}; sessions: {listed or 'none'}")


def _refuse_driven(store: Store, session: str) -> None:
    holder = store.session_holder(session)
    if holder is not None and holder.is_alive() and holder.pid != os.getpid():
        raise SessionHeldError(session, holder.describe())


def _alive(log: Path) -> bool:
    from ._absorb import _writer_alive

    writer = _log.writer_of(log)
    return writer is not None and _writer_alive(*writer)


def _leftovers(journal: Path, removed: Removed) -> None:
    """Files of processes killed while writing them; this process holds DuckDB, so none is being written."""
    directory = _log.logs_dir(journal)
    copy = journal.with_name(journal.name + ".compact")  # see _compact
    for path in (copy, copy.with_name(copy.name + ".wal")):
        _unlink(path, removed, "leftovers")
    for marker in directory.glob("*.log.full"):
        if not marker.with_name(marker.name[: -len(".full")]).exists():
            _unlink(marker, removed, "leftovers")


def _stale_packs(store: Store, removed: Removed) -> None:
    """Packs that no run can begin from: of steps that are gone or moved on, or taken from another file."""
    journal = store.journal.path
    if not _pack.packs_dir(journal).is_dir():
        return
    epochs = {(session, step): epoch for session, step, epoch in store.con.execute(
        "SELECT session, name, epoch FROM step_records").fetchall()}
    with _pack.locked(journal, shared=False, create=False):
        usable = _pack.usable(journal)
        for path in _pack.packs_in(journal):
            header = _pack.header(path) if usable else None
            key = (header["session"], header["step"]) if header else None
            if key is None or epochs.get(key) != header["epoch"] or path != _pack.pack_path(journal, *key):
                _unlink(path, removed, "packs")
        for temporary in _pack.packs_dir(journal).glob("*.tmp"):  # see _files.replace_file
            _unlink(temporary, removed, "leftovers")


def _unlink(path: Path, removed: Removed, kind: str) -> None:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return
    setattr(removed, kind, getattr(removed, kind) + 1)
    removed.file_bytes += size


def _sweep(store: Store, removed: Removed, own: Path | None = None) -> None:
    """Delete the blobs no record refers to, if no process drives a session of the journal."""
    dead = _blobstore.keys(store.con) - _referenced(store)
    if not dead:
        return
    journal = store.journal.path
    # Before looking for drivers: a process that takes a session after the look sees the marker changed.
    marker = _blobstore.swept_marker(journal)
    make_dirs(marker.parent)
    replace_file(marker, str(os.getpid()).encode())
    if _driven(journal, own):
        removed.blobs_kept = len(dead)
        return
    with store.transaction():
        removed.blobs, removed.blob_bytes = _blobstore.remove(store.con, dead)
    store.journal._known.clear()


def _driven(journal: Path, own: Path | None) -> bool:
    """Whether a live process holds the lock of a session of `journal` (`own`: this process's, not counted)."""
    for lock in _claim.locks_dir(journal).glob("*.lock"):
        if lock == own:
            continue
        try:
            fd = _claim.take(lock, create=False)
        except FileNotFoundError:
            continue
        except _claim.LockHeld:
            return True
        if fd is not None:
            _claim.release(fd)
    return False


def _referenced(store: Store) -> set[str]:
    """Every blob a record refers to, directly or through other blobs (conversations, items, variables).

    Any 32-hex-digit word of a record or a blob that is a blob's key counts: a rare word that only
    looks like a key keeps a blob, never the other way round.
    """
    stored = _blobstore.keys(store.con)
    found: set[str] = set()
    for (doc,) in store.con.execute("SELECT doc FROM records WHERE kind <> 'state'").fetchall():
        found.update(_words(doc.encode()))
    # A small blob kept in its call's row by an older release refers to others inside its encoding.
    for (kept,) in store.con.execute("SELECT (doc->'blobs')::VARCHAR FROM records "
                                     "WHERE kind = 'call' AND json_exists(doc, '$.blobs')").fetchall():
        for entry in (json.loads(kept) or {}).values():
            with contextlib.suppress(ValueError, TypeError):
                found.update(_words(_blobs.unpack_inline(entry)))
    reached: set[str] = set()
    frontier = found & stored
    packs = _blobstore.Packs()
    while frontier:
        reached |= frontier
        inner: set[str] = set()
        for data in packs.get(store.con, frontier).values():
            inner.update(_words(_seal.open_blob(data)))  # without the key: one line, and nothing is removed
        frontier = (inner & stored) - reached
    return reached


def _words(data: bytes) -> Iterable[str]:
    # Every 32 digits of a longer run too: a key may stand right beside other hex digits in binary data.
    for run in _HEX.findall(data):
        text = run.decode()
        yield from (text[at:at + _KEY_DIGITS] for at in range(len(text) - _KEY_DIGITS + 1))
