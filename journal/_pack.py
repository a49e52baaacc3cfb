"""Replay packs: what the next run of a step needs to replay it, readable without DuckDB.

A pack is a snapshot of one step's recording as DuckDB held it (calls, response blobs and the
items they refer to), with the absorbed position of every append log at that moment, and a run
id and call ids reserved for the run that will use it. The step's calls made after the snapshot
are in the logs past those positions. So the pack plus the logs' tails are the whole recording,
and a notebook replayed from start to end begins every step from a file read in one go instead
of importing and opening DuckDB.

That holds as long as nothing changes the step's rows in DuckDB behind the pack: every such
change (an absorb of the step's records, a settled call, a decided approval, a rerun) deletes the
step's pack under an exclusive lock, and a reader holds the shared lock while it reads the pack
and the logs. A missing pack only means the step begins through DuckDB, as before; a pack is
used once (its reserved ids are then spent) and written again by the process driving the session.

The packs folder's `journal` file names the journal file they were taken from and its schema
version. Packs are read only for that file at this release's schema; a newer schema is refused
there as DuckDB's open refuses it (a release that migrates a journal drops its packs first, so a
newer journal's packs always say so).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _blobs, _log, _records, _seal
from ._files import make_dirs, open_file, replace_file, write_file
from ._schema import LATEST
from .errors import SchemaTooNewError

_KIND = b"Z"  # one zstd frame (packs of kind P, zlib, were written before: read as no pack)
_VERSION = 2
# A pack is written after its step, off the cell's path: a slower level that saves a tenth is worth it.
_LEVEL = 9


def _compress(data: bytes) -> bytes:
    import zstandard  # a (de)compressor object is not safe to share between threads: one per use

    return zstandard.ZstdCompressor(level=_LEVEL).compress(data)


def _decompress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(data)


@dataclass
class Pack:
    epoch: int
    source: str | None
    run_id: int
    call_ids: list[int]
    docs: dict[int, dict[str, Any]]  # call id -> its JSON document, as call_records holds it
    blobs: dict[str, bytes]  # response blobs and the items they refer to


def packs_dir(journal: Path) -> Path:
    return _log.logs_dir(journal) / "packs"


def pack_path(journal: Path, session: str, step: str) -> Path:
    return packs_dir(journal) / (_blobs.digest(f"{session}\0{step}".encode())[:32] + ".pack")


@contextmanager
def locked(journal: Path, *, shared: bool, create: bool = True) -> Iterator[None]:
    """Readers of packs share this lock; whoever deletes or writes one holds it alone.

    Without `create`, a journal without a packs folder has no pack to delete and nothing is
    created (an absorb by a read-only command must not leave files behind).
    """
    directory = packs_dir(journal)
    if create:
        make_dirs(directory)
    elif not directory.is_dir():
        yield
        return
    fd = open_file(directory / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _identity(journal: Path) -> str:
    try:
        stat = journal.stat()
    except OSError:
        return ""
    return f"{stat.st_dev} {stat.st_ino}"


def _owner(journal: Path) -> Path:
    return packs_dir(journal) / "journal"  # "device inode schema" of the journal file the packs were taken from


def _stamp(journal: Path) -> str:
    return f"{_identity(journal)} {LATEST}"


def _owner_of(journal: Path) -> tuple[str, int | None]:
    """(identity, schema version) the packs were taken at; the version is None where no release recorded it.

    Raises FileNotFoundError when there are no packs.
    """
    parts = _owner(journal).read_text().split()
    schema = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None
    return " ".join(parts[:2]), schema


def _refuse_newer(journal: Path, identity: str, schema: int | None) -> None:
    if schema is not None and schema > LATEST and identity == _identity(journal):
        raise SchemaTooNewError(str(journal), schema, LATEST)


def refuse_newer(journal: Path) -> None:
    """Raise SchemaTooNewError if the journal's packs were taken from it at a schema newer than this release's."""
    try:
        owner = _owner_of(journal)
    except FileNotFoundError:
        return
    _refuse_newer(journal, *owner)


def rebase(journal: Path, was: tuple[int, int] | None) -> None:
    """The journal's file `was` was replaced by a copy of itself (the same rows): its packs still hold."""
    if was is None:
        return
    with locked(journal, shared=False, create=False):
        owner = _owner(journal)
        if owner.is_file() and owner.read_text() == f"{was[0]} {was[1]} {LATEST}":
            write_file(owner, _stamp(journal).encode())


def drop(journal: Path) -> None:
    """Delete every pack: the journal's schema changed since they were taken."""
    with locked(journal, shared=False, create=False):
        for old in packs_dir(journal).glob("*.pack"):
            old.unlink(missing_ok=True)
        _owner(journal).unlink(missing_ok=True)


def write(journal: Path, session: str, step: str, pack: Pack, positions: dict[str, int]) -> None:
    """Write a step's pack (the caller holds DuckDB, and the exclusive lock)."""
    owner, stamp = _owner(journal), _stamp(journal)
    if not owner.is_file() or owner.read_text() != stamp:
        # Another file lives at the journal's path now (or another release took the packs): none may be read.
        for old in packs_dir(journal).glob("*.pack"):
            old.unlink(missing_ok=True)
        write_file(owner, stamp.encode())
    header = {"v": _VERSION, "session": session, "step": step,
              "epoch": pack.epoch, "source": pack.source, "run_id": pack.run_id, "call_ids": pack.call_ids,
              "positions": positions, "docs": [[call_id, doc] for call_id, doc in pack.docs.items()]}
    inner = _log.event_frame(header) + b"".join(_log.blob_frame(key, data) for key, data in pack.blobs.items())
    replace_file(pack_path(journal, session, step), _log.frame(_KIND, _compress(inner)))


def discard(journal: Path, steps: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Delete the packs of (session, step) pairs whose rows changed (the caller holds the exclusive lock).

    Returns the pairs that had a pack.
    """
    deleted = []
    for session, step in steps:
        try:
            pack_path(journal, session, step).unlink()
        except FileNotFoundError:
            continue
        deleted.append((session, step))
    return deleted


def usable(journal: Path) -> bool:
    """Whether the packs beside `journal` were taken from this file at this release's schema."""
    try:
        identity, schema = _owner_of(journal)
    except FileNotFoundError:
        return False
    return identity == _identity(journal) and schema == LATEST


def packs_in(journal: Path) -> list[Path]:
    return sorted(packs_dir(journal).glob("*.pack"))


def header(path: Path) -> dict[str, Any] | None:
    """A pack's session, step, epoch and the rest of its header; None for a pack this release cannot read."""
    try:
        frames, _, _ = _log.read_frames(path, 0)
        if len(frames) != 1 or frames[0][0] != _KIND:
            return None
        inner, _, _ = _log.read_frames_of(_decompress(frames[0][1]))
        found = json.loads(inner[0][1])
    except Exception:  # noqa: BLE001 - cut short, not zstd, not JSON: a pack that cannot be read is no pack
        return None
    return found if isinstance(found, dict) and found.get("v") == _VERSION else None


def take(journal: Path, session: str, step: str) -> tuple[Pack, dict[str, int]] | None:
    """The step's pack and log positions, deleted as it is read (its ids are this run's); None if none."""
    path = pack_path(journal, session, step)
    try:
        frames, _, _ = _log.read_frames(path, 0)
        identity, schema = _owner_of(journal)
    except FileNotFoundError:
        return None
    _refuse_newer(journal, identity, schema)  # before the pack is spent: the newer release still needs it
    path.unlink(missing_ok=True)
    if identity != _identity(journal) or schema != LATEST:
        return None  # another file now lives at the journal's path, or it was packed at another schema
    if len(frames) != 1 or frames[0][0] != _KIND:
        return None
    inner, _, _ = _log.read_frames_of(_decompress(frames[0][1]))
    header = json.loads(inner[0][1])
    if (header.get("v"), header["session"], header["step"]) != (_VERSION, session, step):
        return None
    blobs = _seal.open_blobs(dict(_log.split_blob(body) for kind, body in inner[1:] if kind == _log.BLOB))
    docs = {call_id: doc for call_id, doc in header["docs"]}
    pack = Pack(header["epoch"], header["source"], header["run_id"], header["call_ids"], docs, blobs)
    return pack, header["positions"]


def add_tails(journal: Path, session: str, step: str, pack: Pack, positions: dict[str, int]) -> None:
    """Add to `pack` the step's records that the logs hold past the pack's positions.

    Each log is read once per process and indexed by step (see `_LogIndex`): a notebook replayed step
    after step after a kill reads the dead process's log once, not once per step.
    """
    indexes = []
    for path in _log.logs_in(_log.logs_dir(journal)):
        try:
            index = _index(path)
        except FileNotFoundError:
            continue  # absorbed and deleted since the listing: the pack would be gone too
        start = positions.get(path.name, 0)
        indexes.append(index)
        for offset, call_id, doc in index.calls.get((session, step, pack.epoch), ()):
            if offset >= start:
                pack.docs[call_id] = doc
        for call_id in list(pack.docs):
            for offset, patch in index.patches.get(call_id, ()):
                if offset >= start:
                    pack.docs[call_id] = _records.merge_patch(pack.docs[call_id], patch)
    wanted = [doc["response"] for doc in pack.docs.values() if doc.get("response")]
    while wanted:
        key = wanted.pop()
        if key in pack.blobs:
            continue
        data = next((index.blobs[key] for index in indexes if key in index.blobs), None)
        if data is not None:  # else kept in a row (inline) or stored before: replay asks DuckDB
            pack.blobs[key] = _seal.open_blob(data)
            wanted += _blobs.item_references(pack.blobs[key])


class _LogIndex:
    """What one log holds, by step: its call records, their patches and its blobs, each with its offset."""

    def __init__(self, path: Path) -> None:
        self.path, self.end, self.identity = path, 0, (0, 0)
        self.calls: dict[tuple[str, str, int], list[tuple[int, int, dict[str, Any]]]] = {}
        self.patches: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        self.blobs: dict[str, bytes] = {}  # sealed, as the log holds them
        self.lock = threading.Lock()

    def update(self) -> None:
        stat = os.stat(self.path)
        if (stat.st_dev, stat.st_ino) != self.identity or stat.st_size < self.end:
            self.__init__(self.path)  # another file, or an append taken back: read it again
            self.identity = (stat.st_dev, stat.st_ino)
        if stat.st_size == self.end:
            return
        frames, self.end = _log.frames_with_offsets(self.path, self.end)
        for offset, kind, body in frames:
            if kind == _log.BLOB:
                key, data = _log.split_blob(body)
                self.blobs.setdefault(key, data)
                continue
            event = json.loads(body)
            if event["e"] == "call":
                where = (event["session"], event["step"], event["epoch"])
                self.calls.setdefault(where, []).append((offset, event["id"], event["doc"]))
            elif event["e"] == "patch":
                self.patches.setdefault(event["id"], []).append((offset, event["patch"]))


_indexes: dict[Path, _LogIndex] = {}
_indexes_lock = threading.Lock()


def _index(path: Path) -> _LogIndex:
    with _indexes_lock:
        index = _indexes.get(path)
        if index is None:
            for gone in [known for known in _indexes if not known.exists()]:
                del _indexes[gone]
            index = _indexes[path] = _LogIndex(path)
    with index.lock:
        index.update()
    return index
