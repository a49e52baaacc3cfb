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
            # The holder of a session packs its steps again (a replay goes on from packs, not DuckDB).
            store.journal.unpacked.update(_pack.discard(store.journal.path, touched))
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
    fresh = _Runs(store, events)
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


_PATCH_STEPS = """UPDATE records SET doc = json_merge_patch(records.doc, v.patch)::VARCHAR, epoch = v.epoch
FROM (SELECT unnest(?) AS session, unnest(?) AS step, unnest(?) AS epoch, unnest(?) AS patch) v
WHERE records.kind = 'step' AND records.session = v.session AND records.step = v.step"""


class _Runs:
    """Runs that begin (and end) in one absorb, written together: a loop of steps, new or replayed from
    their packs, is taken in with a few statements, not a handful for each step.

    What cannot be told from the batch alone (a run begun in an earlier absorb, a step another run left
    running, a claim) is applied one by one, after what is pending here is written.
    """

    def __init__(self, store: Store, events: list[dict[str, Any]]) -> None:
        self.store = store
        keys = sorted({f"{e['session']}\0{e['step']}" for e in events if e["e"] == "begin"})
        self.known: dict[str, tuple[int, str | None]] = {}  # step -> (epoch, status) as DuckDB holds it
        if keys:
            self.known = {key: (epoch, status) for key, epoch, status in store.con.execute(
                "SELECT session || chr(0) || name, epoch, status FROM step_records "
                "WHERE list_contains(?, session || chr(0) || name)", [keys]).fetchall()}
        self.steps: dict[str, list[Any]] = {}  # step -> [session, step, epoch, doc or patch, has a row]
        self.runs: dict[int, list[Any]] = {}  # run id -> [session, step, epoch, doc, step key]

    def begin(self, begin: dict[str, Any], *, cut_off: bool) -> bool:
        key = f"{begin['session']}\0{begin['step']}"
        pending, known = self.steps.get(key), self.known.get(key)
        status = pending[3].get("status") if pending else known[1] if known else None
        if status == "running":
            return False  # a run of it left running: it is interrupted one by one (Store.apply_begin)
        session, step, epoch, at = begin["session"], begin["step"], begin["epoch"], begin["started_at"]
        if begin.get("new") and known is not None:
            epoch = pending[2] if pending else known[0]  # as Store.apply_begin: its rows keep their epoch
        change = {"status": "running", "updated_at": at} | ({"source": begin["source"]} if begin["source"] else {})
        if pending is not None:
            pending[2], pending[3] = epoch, {**pending[3], **change}
        elif known is None:
            self.steps[key] = [session, step, epoch, {"status": "running", "source": begin["source"],
                                                      "created_at": at, "updated_at": at}, False]
        else:
            self.steps[key] = [session, step, epoch, change, True]
        self.runs[begin["run_id"]] = [session, step, begin["epoch"],
                                      {"started_at": at, "status": "interrupted" if cut_off else "running"}, key]
        return True

    def end(self, end: dict[str, Any]) -> bool:
        run = self.runs.get(end["run_id"])
        if run is None:
            return False
        run[3] = _records.merge_patch(run[3], _records.run_end(end))
        self.steps[run[4]][3].update(status=end["status"], updated_at=end["ended_at"])
        return True

    def flush(self) -> None:
        if not self.steps:
            return
        con = self.store.con
        rows = [["step", None, session, step, epoch, _records.encode(doc)]
                for session, step, epoch, doc, has_row in self.steps.values() if not has_row]
        rows += [["run", run_id, session, step, epoch, _records.encode(doc)]
                 for run_id, (session, step, epoch, doc, _) in self.runs.items()]
        for chunk in range(0, len(rows), _ROWS_PER_STATEMENT):
            part = rows[chunk:chunk + _ROWS_PER_STATEMENT]
            con.execute("INSERT INTO records VALUES " + ",".join(["(?, ?, ?, ?, ?, ?)"] * len(part)),
                        [value for row in part for value in row])
        patched = [(session, step, epoch, _records.encode(change))
                   for session, step, epoch, change, has_row in self.steps.values() if has_row]
        if patched:
            con.execute(_PATCH_STEPS, [list(column) for column in zip(*patched, strict=True)])
        latest: dict[str, str] = {}
        for session, _, _, doc, _ in self.steps.values():
            latest[session] = max(latest.get(session, ""), doc["updated_at"])
        for session, at in latest.items():
            _records.patch(con, "session", "session = ?", [session], {"updated_at": at})
        for key, (_, _, epoch, doc, _) in self.steps.items():
            self.known[key] = (epoch, doc.get("status", self.known.get(key, (0, None))[1]))
        self.steps.clear()
        self.runs.clear()
