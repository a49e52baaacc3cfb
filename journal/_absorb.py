"""DuckDB takes the append logs in: each log's new whole records in one transaction, exactly once.

The position up to which a log is absorbed is committed in the same transaction as its rows, so
a kill during an absorb leaves either all of it or none, and the next absorb starts from the
committed position. Any process that opens the journal absorbs every log it finds (the file
lock makes them take turns): a growing log of a running kernel, so that readers see its calls
marked running; a finished log of a dead process, which is then deleted.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _log, _pack, _records
from ._holder import Holder

if TYPE_CHECKING:
    from ._store import Store

_ROWS_PER_STATEMENT = 200
_CHUNK = 8 << 20  # bytes of a log taken in per transaction


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def absorb(store: Store, logs: list[Path] | None = None) -> int:
    """Absorb `logs` (default: every log beside the journal); returns how many records were taken in."""
    directory = _log.logs_dir(store.journal.path)
    # Other processes wait for DuckDB's file lock; connections of this process take turns here.
    with _locks_guard:
        lock = _locks.setdefault(directory.resolve(), threading.Lock())
    with lock:
        return _absorb(store, directory, logs)


def _absorb(store: Store, directory: Path, logs: list[Path] | None) -> int:
    paths = list(_log.logs_in(directory)) if logs is None else logs
    taken = 0
    for path in paths:
        taken += _absorb_one(store, path)
    if logs is None:
        forget_missing(store, directory)
    return taken


def forget_missing(store: Store, directory: Path) -> None:
    """Drop the positions of logs that are gone (deleted once absorbed): their names never come back."""
    rows = [name for (name,) in store.con.execute(
        "SELECT name FROM journal_state WHERE starts_with(name, 'log ')").fetchall()]  # a view of records
    gone = [name for name in rows if not (directory / name[4:]).exists()]
    if gone:
        _records.drop_states(store.con, gone)


def _absorb_one(store: Store, path: Path) -> int:
    writer = _log.writer_of(path)
    if writer is None:
        return 0
    alive = _writer_alive(*writer)
    touched: set[tuple[str, str]] = set()
    taken = left = 0
    while True:  # a chunk at a time, each committed with its position: a long session's log in bounded memory
        with store.transaction():
            row = store.con.execute("SELECT value FROM journal_state WHERE name = ?",
                                    [f"log {path.name}"]).fetchone()
            start = row[0] if row else 0
            try:
                frames, end, left = _log.read_frames(path, start, _CHUNK)
            except FileNotFoundError:
                left = 0
                break  # its writer retired it meanwhile: all of it was absorbed
            if frames:
                touched |= _apply(store, frames, alive=alive)
                if row is None:
                    _records.insert(store.con, "state", {"name": f"log {path.name}"}, id=end)
                else:
                    _records.set_state(store.con, f"log {path.name}", end)
        taken += len(frames)
        if not frames or not left:
            break
    if touched or not alive:
        # Packs of the steps whose rows changed go before the log can: a pack with the log gone
        # would miss the records the log held (see _pack).
        with _pack.locked(store.journal.path, shared=False, create=False):
            _pack.discard(store.journal.path, touched)
            if not alive:
                path.unlink(missing_ok=True)
    marker = _log.full_marker(path)
    full = marker.exists()
    if left and (full or not alive):  # a growing log's last record may still be being written
        why = "by a full disk" if full else "(its process died or the disk was full)"
        print(f"durable: {left} bytes at the end of {path.name} were a record cut short {why}; "
              "that call counts as not journaled", file=sys.stderr)
    if full and not alive:
        marker.unlink(missing_ok=True)
    return taken


def waiting(journal: Path, con: Any) -> int:
    """How many records the logs hold past what DuckDB took in (what a read that cannot absorb leaves out)."""
    positions = dict(con.execute("SELECT name, value FROM journal_state WHERE starts_with(name, 'log ')").fetchall())
    count = 0
    for path in _log.logs_in(_log.logs_dir(journal)):
        try:
            frames, _, _ = _log.read_frames(path, positions.get(f"log {path.name}", 0))
        except FileNotFoundError:
            continue
        count += sum(1 for kind, _ in frames if kind == _log.EVENT)
    return count


def _writer_alive(host: str, pid: int, started: str) -> bool:

    here = socket.gethostname()  # a log's name spells it with "_" for "-" (see _log.LogWriter)
    return Holder(pid, here if host == here.replace("-", "_") else host, started, "log writer").is_alive()


def _apply(store: Store, frames: list[tuple[bytes, bytes]], *, alive: bool) -> set[tuple[str, str]]:
    """Apply a log's frames; returns the (session, step) pairs whose rows changed."""
    blobs: dict[str, bytes] = {}
    calls: dict[int, list[Any]] = {}  # id -> [session, step, epoch, doc], inserted at the end
    updates: list[tuple[int, dict[str, Any]]] = []  # patches of calls absorbed earlier
    events = [json.loads(body) for kind, body in frames if kind != _log.BLOB]
    ended = {event["run_id"] for event in events if event["e"] == "end"}
    touched: set[tuple[str, str]] = set()
    for kind, body in frames:
        if kind == _log.BLOB:
            key, data = _log.split_blob(body)
            blobs[key] = data
    if blobs:  # the blobs of one absorb (a whole step's, often) are compressed together: see _blobstore
        store.write_blobs(blobs)
    fresh = _NewSteps(store, events)
    for event in events:
        what = event["e"]
        if what == "call":
            calls[event["id"]] = [event["session"], event["step"], event["epoch"], event["doc"]]
            touched.add((event["session"], event["step"]))
        elif what == "patch":
            row = calls.get(event["id"])
            if row is not None:
                row[3] = _records.merge_patch(row[3], event["patch"])
            else:
                updates.append((event["id"], event["patch"]))
        else:
            # Runs begin, end and change hands in the order the log has them.
            cut_off = not alive and event.get("run_id") not in ended
            if what == "begin" and fresh.begin(event, cut_off=cut_off) or what == "end" and fresh.end(event):
                pass
            else:
                fresh.flush()
                if what == "claim":
                    store.apply_claim(event)
                elif what == "begin":
                    store.apply_begin(event, cut_off=cut_off)
                elif what == "end":
                    store.apply_end(event)
            if "step" in event:
                touched.add((event["session"], event["step"]))
    fresh.flush()
    if calls:  # the floor a lost counter file starts again from (see _ids)
        _records.set_state(store.con, "next call id", max(calls) + 1, at_least=True)
    rows = [[call_id, *row[:3], _records.encode(row[3])] for call_id, row in calls.items()]
    for chunk in range(0, len(rows), _ROWS_PER_STATEMENT):
        part = rows[chunk:chunk + _ROWS_PER_STATEMENT]
        store.con.execute("INSERT INTO records VALUES " + ",".join(["('call', ?, ?, ?, ?, ?)"] * len(part)),
                          [value for row in part for value in row])
    for call_id, patch in updates:
        row = _records.patch(store.con, "call", "id = ?", [call_id], patch,
                             returning=" RETURNING session, step").fetchone()
        if row is not None:
            touched.add(tuple(row))
    return touched


class _NewSteps:
    """First runs of steps new to the journal (begun from the log alone), inserted together.

    A loop of new steps is then taken in with a few statements, not a handful for each step. Whatever
    else happens to runs (a claim, a run of a known step) is applied after these are written.
    """

    def __init__(self, store: Store, events: list[dict[str, Any]]) -> None:
        self.store = store
        begun = {f"{e['session']}\0{e['step']}" for e in events if e["e"] == "begin" and e.get("new")}
        known = set()
        if begun:
            known = {key for (key,) in store.con.execute(
                "SELECT session || chr(0) || name FROM step_records WHERE list_contains(?, session || chr(0) || name)",
                [sorted(begun)]).fetchall()}
        self.fresh = begun - known
        self.steps: dict[str, list[Any]] = {}  # "session\0step" -> [session, step, epoch, doc]
        self.runs: dict[int, list[Any]] = {}  # run id -> [session, step, epoch, doc, "session\0step"]

    def begin(self, begin: dict[str, Any], *, cut_off: bool) -> bool:
        key = f"{begin['session']}\0{begin['step']}"
        if key not in self.fresh:
            return False
        self.fresh.discard(key)  # a later begin of it finds its rows
        session, step, epoch, at = begin["session"], begin["step"], begin["epoch"], begin["started_at"]
        self.steps[key] = [session, step, epoch, {"status": "running", "source": begin["source"],
                                                  "created_at": at, "updated_at": at}]
        self.runs[begin["run_id"]] = [session, step, epoch, {"started_at": at, "status": "interrupted" if cut_off
                                                             else "running"}, key]
        return True

    def end(self, end: dict[str, Any]) -> bool:
        from ._store import run_end

        run = self.runs.get(end["run_id"])
        if run is None:
            return False
        run[3] = _records.merge_patch(run[3], run_end(end))
        self.steps[run[4]][3].update(status=end["status"], updated_at=end["ended_at"])
        return True

    def flush(self) -> None:
        if not self.steps:
            return
        rows = [["step", None, session, step, epoch, _records.encode(doc)]
                for session, step, epoch, doc in self.steps.values()]
        rows += [["run", run_id, session, step, epoch, _records.encode(doc)]
                 for run_id, (session, step, epoch, doc, _) in self.runs.items()]
        for chunk in range(0, len(rows), _ROWS_PER_STATEMENT):
            part = rows[chunk:chunk + _ROWS_PER_STATEMENT]
            self.store.con.execute("INSERT INTO records VALUES " + ",".join(["(?, ?, ?, ?, ?, ?)"] * len(part)),
                                   [value for row in part for value in row])
        latest: dict[str, str] = {}
        for session, _, _, doc in self.steps.values():
            latest[session] = max(latest.get(session, ""), doc["updated_at"])
        for session, at in latest.items():
            _records.patch(self.store.con, "session", "session = ?", [session], {"updated_at": at})
        self.steps.clear()
        self.runs.clear()
