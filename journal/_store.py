"""The DuckDB journal: where every row is written and read.

DuckDB locks the database file for the whole process that opens it, even against
read-only opens from other processes. So a journal is opened for one unit of work (a
durable step, a CLI command) and closed right after; between steps a kernel holds nothing
and the CLI or another kernel can use the file. An open that finds the file locked waits
a little, then says which process holds it.

The WAL is kept small (automatic checkpoint at 1 MB, a checkpoint on every close) because
DuckDB replays it on the next open, and a kernel killed with SIGKILL never closes cleanly.

A file DuckDB cannot wholly read is refused before anything is written to it (see `_damage`).

A read-only open first takes the logs in, which writes. Where the file cannot be written (a full
disk, a read-only mount) it reads what DuckDB holds already and says what it could not take in.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

from . import _blobs, _blobstore, _compact, _ids, _pack, _records, _seal, _space
from ._damage import GuardedConnection, damage_reason, healthy, is_damaged, probe, stop_writing
from ._files import make_dirs, private_umask
from ._history import History
from ._holder import Holder, process_start
from ._log import LogWriter, sync_mode
from ._schema import LATEST, migrate
from ._time import now, stamp
from .errors import (
    JournalBusyError,
    JournalDamagedError,
    JournalError,
    JournalFullError,
    JournalIsFolderError,
    SessionHeldError,
)

# Small blocks: DuckDB's default 256 KB blocks make even a tiny journal a megabyte.
_BLOCK_SIZE = "16384"
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def default_path() -> Path:
    """`$DURABLE_JOURNAL`, else `.durable/journal.duckdb` under the working directory."""
    env = os.environ.get("DURABLE_JOURNAL")
    return Path(env) if env else Path.cwd() / ".durable" / "journal.duckdb"


_FIRST_IDS = 64  # call ids reserved when a step begins; a longer step reserves more as it goes
_REPACK_BATCH = 256  # steps packed together (their recordings are held in memory at once)


@dataclass
class RecordedCall:
    id: int
    fingerprint: str
    ordinal: int
    seq: int
    kind: str
    name: str
    status: str
    request: str | None
    response: str | None
    meta: dict[str, Any]
    ended_at: datetime | None
    tokens: int = 0  # prompt and completion tokens of a model call
    data: bytes | None = None  # the response blob, preloaded so that replay does not query


def recorded_calls(docs: dict[int, dict[str, Any]], blobs: dict[str, bytes],
                   fetch: Callable[[str], bytes] | None = None) -> tuple[list[RecordedCall], dict[str, bytes]] | None:
    """The calls a run replays from a step's documents, and the items their responses refer to.

    A blob missing from `blobs` is fetched (a value kept in a row of another step), or, without
    `fetch`, makes the answer None: the recording is then read from DuckDB.
    """
    # A small result may be kept in an earlier call's row (the same value returned twice).
    kept = {key: entry for doc in docs.values() for key, entry in (doc.get("blobs") or {}).items()}
    recorded = []
    for call_id in sorted(docs):
        doc = docs[call_id]
        if doc["status"] == "abandoned":
            continue
        ended = doc.get("ended_at")
        call = RecordedCall(call_id, doc["fingerprint"], doc["ordinal"], doc["seq"], doc["kind"], doc["name"],
                            doc["status"], doc.get("request"), doc.get("response"),
                            _seal.open_meta(doc.get("meta")) or {},
                            datetime.fromisoformat(ended) if ended else None,
                            (doc.get("prompt_tokens") or 0) + (doc.get("completion_tokens") or 0))
        if call.response in kept:
            call.data = _blobs.unpack_inline(kept[call.response])
        elif call.response in blobs:
            call.data = blobs[call.response]
        elif call.response is not None:
            if fetch is None:
                return None
            call.data = fetch(call.response)
        recorded.append(call)
    items = {}
    for call in recorded:
        for key in _blobs.item_references(call.data) if call.data else ():
            if key in blobs:
                items[key] = blobs[key]
            elif fetch is None:
                return None
            else:
                items[key] = fetch(key)
    return recorded, items


@dataclass
class StepRun:
    session: str
    step: str
    epoch: int
    run_id: int
    call_ids: list[int] = field(default_factory=list)  # reserved for the calls this run journals
    recorded: list[RecordedCall] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)  # items of recorded responses, preloaded


class Journal:
    """A journal file. Open it for a unit of work with `with journal.open() as store:`.

    `create=False` for commands that only read or decide: a mistyped path must not leave a new
    journal (and its folder) behind.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, wait: float = 10.0,
                 create: bool = True, sync: str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.wait = wait
        self.create = create
        self.sync = sync_mode(sync)
        self._writer: LogWriter | None = None
        self._known: set[str] = set()  # blob hashes known to be stored; blobs are never deleted
        self._identity: tuple[int, int] | None = None
        # The file as this process last left it after reading it whole: unchanged, it needs no probe.
        self._verified: tuple[int, ...] | None = None
        self._swept: tuple[int, ...] | None = None  # the blob sweep `_known` was last checked against
        # What the last read-only open could not take in from the logs, and why (one line), or None.
        self.behind: str | None = None
        # Steps whose packs an absorb of this process deleted (their rows changed): (session, step).
        self.unpacked: set[tuple[str, str]] = set()

    def writer(self) -> LogWriter:
        """This process's append log for the journal (one per Journal object)."""
        if self._writer is None:
            self._writer = LogWriter(self.path, sync=self.sync, process_start=process_start(os.getpid()))
        return self._writer

    def connect(self) -> Store:
        """An open store the caller closes (`Store.close`); `open()` is the usual way."""
        return Store(self, self._connect())

    @contextmanager
    def open(self, *, read_only: bool = False) -> Iterator[Store]:
        """Open for a unit of work; `read_only` for queries people type (they cannot change a row).

        A read-only open answers from what DuckDB holds where the logs cannot be taken in (a full
        disk); `behind` then says how many records it left out.
        """
        if read_only:
            self.require_file()
            self.behind = None
            try:
                self._close(self._connect(), checkpoint=False)  # brings an older journal's schema up to date
            except Exception as exc:  # noqa: BLE001 - those that are not about writing are raised again
                if not _space.cannot_write(exc):
                    raise
                self.behind = self._left_out(exc)
        store = Store(self, self._connect(read_only=read_only))
        store.read_only = read_only
        try:
            yield store
        finally:
            store.close()

    def _left_out(self, exc: BaseException) -> str | None:
        """What a read that could not take the logs in leaves out, as one line (None: nothing)."""
        from ._absorb import waiting

        con = self._connect(read_only=True)
        try:
            count = waiting(self.path, con)
        finally:
            self._release(con)
        if not count:
            return None
        records = f"{count} record{'s' if count != 1 else ''} in logs {'are' if count != 1 else 'is'} not shown yet"
        if _space.disk_full(exc):
            return f"the disk is full: {records} (free space, then run it again)"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"the journal cannot be written here ({first}): {records}"

    def has_pack(self, session: str, step: str) -> bool:
        """Whether the step can begin from its pack; a journal of a newer schema is refused here already."""
        if is_damaged(self.path) or not _pack.pack_path(self.path, session, step).is_file():
            return False
        _pack.refuse_newer(self.path)
        return True

    def begin_from_pack(self, session: str, step: str) -> tuple[StepRun, str | None] | None:
        """A run of `step` begun from its pack and the logs, without DuckDB, and the step's stored source.

        None when there is no usable pack: the step then begins through DuckDB (`Store.begin_step`).
        """
        if is_damaged(self.path) or not self.path.is_file():
            return None
        self._check_swept()  # the caller holds the session's lock: a sweep from now on sees it and waits
        with _pack.locked(self.path, shared=True):
            taken = _pack.take(self.path, session, step)
            if taken is None:
                return None
            pack, positions = taken
            _pack.add_tails(self.path, session, step, pack, positions)
        replay = recorded_calls(pack.docs, pack.blobs)
        if replay is None:
            return None
        return StepRun(session, step, pack.epoch, pack.run_id, pack.call_ids, *replay), pack.source

    def begin_new(self, session: str, step: str, run_ids: tuple[int, int], source: str | None) -> StepRun | None:
        """The first run of a step the journal has no row of, begun from the log alone (no DuckDB).

        The caller holds the session and knows its steps (`Store.session_steps`), and took `run_ids` (this
        run's and the next's) from `Store.reserve_run_ids`. None where call ids cannot be had without DuckDB.
        As a run begun through DuckDB does, it leaves a pack for the next run: the step's recording is then
        nothing but what the logs will hold past this moment, so a run cut off resumes without DuckDB too.
        """
        if is_damaged(self.path) or not self.path.is_file():
            return None
        ids = _ids.reserve(self.path, 2 * _FIRST_IDS)
        if ids is None:
            return None
        log = self.writer()
        # Only this process writes the session's records (it holds it): its log is the only one to read past
        # a point. A log made after now (a later file, a forked child's) is read whole.
        positions = {log.path.name: log.position} if log.path is not None else {}
        with _pack.locked(self.path, shared=False):
            _pack.write(self.path, session, step, _pack.Pack(1, source, run_ids[1], ids[_FIRST_IDS:], {}, {}),
                        positions)
        return StepRun(session, step, 1, run_ids[0], ids[:_FIRST_IDS])

    def _check_swept(self) -> None:
        """Forget the blobs known to be stored if some were deleted since (see `_gc`)."""
        try:
            stat = _blobstore.swept_marker(self.path).stat()
            seen: tuple[int, ...] | None = (stat.st_ino, stat.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen != self._swept:
            self._known.clear()
            self._swept = seen

    def require_file(self) -> None:
        """Raise JournalError unless a journal file is at the path (for commands that only read)."""
        if not self.path.is_file():
            self._refuse_folder()
            raise JournalError(f"no journal at {self.path}; run a durable step first, or pass --journal")

    def _refuse_folder(self) -> None:
        if self.path.is_dir():
            raise JournalIsFolderError(str(self.path))

    def _signature(self) -> tuple[int, ...] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _connect(self, *, read_only: bool = False) -> GuardedConnection:
        # Imported here: duckdb takes longer to import than the whole extension may take to load.
        import duckdb

        if self.create and not read_only:
            self._refuse_folder()
            make_dirs(self.path.parent)
        else:
            self.require_file()
        deadline = time.monotonic() + self.wait
        delay = 0.02
        while True:
            try:
                # One thread: the journal's statements are tiny, and a thread pool costs more
                # to wake than they take.
                config = {"threads": "1"} if read_only else {"default_block_size": _BLOCK_SIZE, "threads": "1"}
                with _compact.lock:  # not while this process replaces the file by a compacted copy
                    before = _compact.identity(self.path)
                    with private_umask() if before is None and not read_only else contextlib.nullcontext():
                        con = duckdb.connect(str(self.path), read_only=read_only, config=config)
                    if _compact.identity(self.path) != before:
                        con.close()  # another process replaced the file meanwhile: connect to the new one
                        continue
                    _compact.opened(self.path)
                if read_only:
                    return GuardedConnection(con, self.path)
                break
            except duckdb.Error as exc:
                reason = damage_reason(exc)
                if reason is not None:
                    raise JournalDamagedError(str(self.path), reason) from None
                match = _LOCK_HOLDER.search(str(exc))
                if match is None:
                    raise
                if time.monotonic() >= deadline:
                    holder = f"process {match.group(2)} ({match.group(1)})"
                    raise JournalBusyError(str(self.path), holder, self.wait) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        try:
            if is_damaged(self.path) or self._signature() != self._verified:
                self._probe(con)
            guarded = GuardedConnection(con, self.path, writes=True)
            guarded.execute("SET wal_autocheckpoint = '1MB'")
            if 0 < migrate(guarded) < LATEST:
                _pack.drop(self.path)  # taken at the old schema: a release must not replay them at another
        except BaseException:
            self._release(con)  # a refused journal must not stay locked by this process
            raise
        stat = self.path.stat()
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity:
            self._known.clear()  # a different file now lives at this path
            self._identity = identity
        self._check_swept()
        try:
            # What running and dead processes appended is part of the journal for whoever opens it.
            Store(self, guarded).absorb()
        except BaseException:
            self._release(con)
            raise
        return guarded

    def _release(self, con: Any) -> None:
        with _compact.lock:
            _compact.closed(self.path)
            con.close()

    def _probe(self, con: duckdb.DuckDBPyConnection) -> None:
        """Refuse a file DuckDB cannot wholly read, before anything is written to it."""
        import duckdb

        try:
            probe(con)
        except duckdb.Error as exc:
            reason = damage_reason(exc)
            if reason is None:
                con.close()
                raise
            stop_writing(con, self.path)
            con.close()
            raise JournalDamagedError(str(self.path), reason) from None
        healthy(self.path)
        self._verified = self._signature()

    def _close(self, con: GuardedConnection, *, checkpoint: bool) -> None:
        """Close, merging the WAL into the file (a reopen after SIGKILL then has little to replay)."""
        import duckdb

        merged = False
        try:
            if checkpoint and not con.damaged:
                con.execute("CHECKPOINT")
                merged = True
        except duckdb.TransactionException:
            pass  # another connection of this process is writing: its close merges the WAL
        except JournalFullError:
            pass  # what was committed is in the WAL: a later close merges it
        finally:
            # From the copy to the close under the lock: DuckDB gives a connection this process makes to
            # the same path the instance already open, which would be the replaced file's.
            with _compact.lock:
                try:
                    if merged and self._signature() != self._verified:  # written since this process left it
                        with contextlib.suppress(duckdb.Error, OSError, JournalFullError):  # it stays as it is
                            was = _compact.identity(self.path)
                            if _compact.compact(con, self.path):
                                self._identity = _compact.identity(self.path)  # the same rows: _known holds
                                _pack.rebase(self.path, was)  # and the packs too
                finally:
                    _compact.closed(self.path)
                    con.close()
        if merged:
            self._verified = self._signature()


class Store(History):
    """An open journal: the rows of the replay path live here, those read and edited by people in History."""

    def __init__(self, journal: Journal, con: GuardedConnection) -> None:
        self.journal = journal
        self.con = con
        self._known = journal._known
        self._unsure: set[str] | None = None  # blobs written in the open transaction
        self._packs = _blobstore.Packs()
        self.read_only = False

    def close(self) -> None:
        self.journal._close(self.con, checkpoint=not self.read_only)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        self._unsure = set()
        try:
            yield
            self.con.execute("COMMIT")
        except BaseException:
            import duckdb

            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
                self.con.execute("ROLLBACK")
            self._known.difference_update(self._unsure)  # written, then rolled back: not stored
            self._packs.clear()  # a pack read back in the transaction is gone, and its number free
            raise
        finally:
            self._unsure = None

    def sql(self, query: str, params: Iterable[Any] | None = None) -> duckdb.DuckDBPyRelation | None:
        return self.con.sql(query, params=params)

    # -- blobs ---------------------------------------------------------------------------

    def put(self, *splits: _blobs.Split) -> None:
        """Write the blobs of `splits` that the journal does not hold yet, in one statement.

        Conversations are checked link by link; other blobs this process has not seen are looked up.
        """
        unique: dict[str, bytes] = {}
        for split in splits:
            unique.update(self._missing(split))
        if unique:
            loose = [key for split in splits for key in split.blobs if key in unique]
            for key in self._stored(loose) if loose else ():
                del unique[key]
        _blobstore.write(self.con, unique)
        for split in splits:
            self.mark_known(split)
        if self._unsure is not None:
            self._unsure.update(unique)

    def _missing(self, split: _blobs.Split) -> Iterator[tuple[str, bytes]]:
        yield from ((k, v) for k, v in split.blobs.items() if k not in self._known)
        for links in split.chains:
            fresh = _blobs.new_links(links, self._known)
            if not fresh:
                continue
            # Only a process that has not seen this conversation yet asks the database. Items are
            # asked for too: a message may have been stored before as part of a response.
            stored = self._stored([key for link in links[:fresh] for key in (link[0], link[2])])
            fresh = next((n for n in range(fresh) if links[n][0] in stored), fresh)
            if fresh:
                key, data, items = _blobs.chain_run(links, fresh,
                                                    lambda key, stored=stored: key in stored or key in self._known)
                yield from items.items()
                yield key, data

    def mark_known(self, split: _blobs.Split) -> None:
        """Remember that every blob of `split` is stored (it was written, or matched a record)."""
        self._known.update(split.blobs)
        # Of a conversation only its last link is a key for sure (see _blobs.chain_run).
        self._known.update(links[0][0] for links in split.chains if links)

    def _stored(self, keys: list[str]) -> set[str]:
        return _blobstore.stored(self.con, keys)

    def write_blobs(self, blobs: dict[str, bytes]) -> None:
        """Store those of `blobs` the journal does not hold yet (see `_blobstore`)."""
        stored = self._stored(list(blobs))
        _blobstore.write(self.con, {key: data for key, data in blobs.items() if key not in stored})
        self._known.update(blobs)
        if self._unsure is not None:
            self._unsure.update(key for key in blobs if key not in stored)

    def fetch(self, key: str) -> bytes:
        data = self._packs.get(self.con, [key]).get(key)
        if data is None:  # a small blob of a tool call, kept in the call's row (see _inline)
            found = self.con.execute(
                "SELECT json_extract(doc, ?)::VARCHAR FROM call_records WHERE json_exists(doc, ?) LIMIT 1",
                [f'$.blobs."{key}"'] * 2,
            ).fetchone()
            if found is None:
                raise KeyError(f"blob {key} is missing from the journal")
            return _blobs.unpack_inline(json.loads(found[0]))
        return _seal.open_blob(data)

    def put_bytes(self, data: bytes) -> str:
        split = _blobs.Split()
        key = split.add(data)
        self.put(split)
        return key

    def put_json(self, value: Any) -> str:
        split = _blobs.Split()
        key = _blobs.split_document(value, split)
        self.put(split)
        return key

    def get_json(self, key: str) -> Any:
        return _blobs.join_document(key, self.fetch)

    # -- sessions ------------------------------------------------------------------------

    def claim_session(self, name: str, holder: Holder, notebook: str | None = None) -> None:
        """Make `holder` the driver of session `name`, creating it if new.

        A session driven by another live process is refused: two kernels appending steps
        to one session would interleave them.
        """
        with self.transaction():
            row = self.con.execute("SELECT holder FROM session_records WHERE name = ?", [name]).fetchone()
            if row is None:
                _records.insert(self.con, "session", {"notebook": notebook, "created_at": now(),
                                                      "updated_at": now(), "holder": holder.__dict__}, session=name)
                return
            same = False
            if row[0]:
                current = Holder(**json.loads(row[0]))
                same = (current.pid, current.host, current.started) == (holder.pid, holder.host, holder.started)
                if not same and current.is_alive():
                    raise SessionHeldError(name, current.describe())
            if not same:
                # Taken over from a process that is gone: what it left running was cut off.
                _records.interrupt(self.con, name)
            self._hold(name, holder, now(), notebook)

    def _hold(self, name: str, holder: Holder, at: Any, notebook: str | None) -> None:
        changes = {"holder": None, "updated_at": at} | ({"notebook": notebook} if notebook is not None else {})
        _records.patch(self.con, "session", "session = ?", [name], changes)  # no field of the old holder stays
        _records.patch(self.con, "session", "session = ?", [name], {"holder": holder.__dict__})

    def release_session(self, name: str, holder: Holder) -> None:
        _records.patch(self.con, "session", "session = ? AND (doc->'holder'->>'pid')::INTEGER = ?",
                       [name, holder.pid], {"holder": None})

    def session_holder(self, name: str) -> Holder | None:
        row = self.con.execute("SELECT holder FROM session_records WHERE name = ?", [name]).fetchone()
        return Holder(**json.loads(row[0])) if row and row[0] else None

    # -- steps ---------------------------------------------------------------------------

    def begin_step(self, session: str, step: str, source: str | None, *, rerun: bool = False) -> StepRun:
        """Open a run of `step`, load its recorded calls for replay, and pack them for the next run."""
        # Replaying a whole session runs this once per step, so it spends as few statements as it can.
        source_split = _blobs.Split()
        source_key = source_split.add(source.encode()) if source is not None else None
        with self.transaction():
            epoch, stored_source = self._step_running(session, step, source_key, rerun=rerun)
            if source_key is not None and stored_source != source_key:
                self.put(source_split)
            (run_id,) = self.con.execute(
                "INSERT INTO records VALUES ('run', nextval('run_ids'), ?, ?, ?, ?) RETURNING id",
                [session, step, epoch, _records.encode({"started_at": now(), "status": "running"})],
            ).fetchone()
            # One block for this run and one for the run its pack is for: one sync of the counter.
            ids = self.reserve_call_ids(2 * _FIRST_IDS)
        _records.patch(self.con, "session", "session = ?", [session], {"updated_at": now()})
        # If this run is cut off, the next one begins from the pack and this run's log.
        docs, blobs = self._pack_recording(session, step, epoch, source_key, ids[_FIRST_IDS:])
        recorded, items = recorded_calls(docs, blobs, self.fetch)
        return StepRun(session, step, epoch, run_id, ids[:_FIRST_IDS], recorded, items)

    def _step_running(self, session: str, step: str, source: str | None, *, rerun: bool = False,
                      epoch: int | None = None) -> tuple[int, str | None]:
        """Mark a step running (created if new); returns its epoch and the source it had."""
        row = self.con.execute(
            "SELECT epoch, status, source FROM step_records WHERE session = ? AND name = ?", [session, step]
        ).fetchone()
        if row is None:
            epoch = epoch or 1
            _records.insert(self.con, "step", {"status": "running", "source": source, "created_at": now(),
                                               "updated_at": now()}, session=session, step=step, epoch=epoch)
            return epoch, None
        epoch = epoch if epoch is not None else row[0] + 1 if rerun else row[0]
        changes = {"status": "running", "updated_at": now()} | ({"source": source} if source is not None else {})
        _records.patch(self.con, "step", "session = ? AND step = ?", [session, step], changes, epoch=epoch)
        if row[1] == "running":
            # A run still 'running' belongs to a process that died inside it: the caller holds
            # the session, so nothing else can be running this step.
            _records.interrupt(self.con, session, step)
        return epoch, row[2]

    def apply_begin(self, begin: dict[str, Any], *, cut_off: bool) -> None:
        """Open a step run as its log's `begin` record says (a run begun from a pack or a new step's, without
        DuckDB).

        `cut_off`: its process is gone and the log holds no end for it, so it was interrupted.
        """
        session, step = begin["session"], begin["step"]
        epoch = begin["epoch"]
        if begin.get("new") and self.con.execute("SELECT 1 FROM step_records WHERE session = ? AND name = ?",
                                                 [session, step]).fetchone():
            # Begun as new, yet the step has rows (written behind the holder's back): its epoch stays, so that
            # what it recorded keeps replaying; this run's calls stay in the history under their own epoch.
            epoch = None
        self._step_running(session, step, begin["source"], epoch=epoch)
        _records.insert(self.con, "run", {"started_at": begin["started_at"],
                                          "status": "interrupted" if cut_off else "running"},
                        id=begin["run_id"], session=session, step=step, epoch=begin["epoch"])
        _records.patch(self.con, "session", "session = ?", [session], {"updated_at": begin["started_at"]})

    def apply_claim(self, claim: dict[str, Any]) -> None:
        """A process took the session over without DuckDB (its lock file decided): record it as holder."""
        name, holder = claim["session"], Holder(**claim["holder"])
        row = self.con.execute("SELECT holder FROM session_records WHERE name = ?", [name]).fetchone()
        if row is None:
            _records.insert(self.con, "session", {"notebook": claim.get("notebook"), "created_at": claim["at"],
                                                  "updated_at": claim["at"], "holder": holder.__dict__}, session=name)
            return
        if row[0]:
            current = Holder(**json.loads(row[0]))
            if (current.pid, current.host, current.started) != (holder.pid, holder.host, holder.started):
                _records.interrupt(self.con, name)
        self._hold(name, holder, claim["at"], claim.get("notebook"))

    def _pack_recording(self, session: str, step: str, epoch: int, source: str | None,
                        ids: list[int] | None = None) -> tuple[dict[int, dict[str, Any]], dict[str, bytes]]:
        """Read the step's recording of `epoch` and write it as the step's pack; returns what it read.

        Read and written under the packs' lock: a change of the step's rows (an absorb, a settled call,
        a forgotten step) is either in what is read here, or deletes the pack once it is written.
        """
        with _pack.locked(self.journal.path, shared=False):
            docs, blobs = self._recording(session, step, epoch)
            row = self.con.execute("SELECT epoch FROM step_records WHERE session = ? AND name = ?",
                                   [session, step]).fetchone()
            if row is None or row[0] != epoch:
                return docs, blobs  # moved on meanwhile (forgotten): no run may begin from this epoch
            (run_id,) = self.reserve_run_ids(1)
            ids = ids or self.reserve_call_ids(_FIRST_IDS)
            positions = self._log_positions()
            _pack.write(self.journal.path, session, step,
                        _pack.Pack(epoch, source, run_id, ids, docs, blobs), positions)
        return docs, blobs

    def _log_positions(self) -> dict[str, int]:
        """How far DuckDB has absorbed each log, by the log's file name (what a pack's tails start from)."""
        return {name[4:]: value for name, value in self.con.execute(
            "SELECT name, value FROM journal_state WHERE starts_with(name, 'log ')").fetchall()}

    def repack(self, session: str, steps: Iterable[str]) -> list[str]:
        """Pack the recordings of `steps` that have no pack (their runs ended in this process).

        Returns the steps DuckDB still has running (their end is in a log it has not taken in yet). Steps
        are packed in batches, a few queries each: a long loop of steps is packed at once when it ends.
        """
        later: list[str] = []
        names = list(dict.fromkeys(steps))
        for start in range(0, len(names), _REPACK_BATCH):
            with _pack.locked(self.journal.path, shared=False):
                later += self._pack_batch(session, names[start:start + _REPACK_BATCH])
        return later

    def _pack_batch(self, session: str, names: list[str]) -> list[str]:
        # Under the packs' exclusive lock, as `_pack_recording`.
        names = [name for name in names if not _pack.pack_path(self.journal.path, session, name).exists()]
        if not names:
            return []
        rows = self.con.execute("SELECT name, epoch, source, status FROM step_records "
                                "WHERE session = ? AND list_contains(?, name)", [session, names]).fetchall()
        later = [name for name, _, _, status in rows if status == "running"]
        steps = {name: (epoch, source) for name, epoch, source, status in rows if status != "running"}
        if not steps:
            return later
        docs: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in steps}
        for step, call_id, text in self.con.execute(
                "SELECT c.step, c.id, c.doc FROM call_records c JOIN step_records s "
                "ON s.session = c.session AND s.name = c.step AND s.epoch = c.epoch "
                "WHERE c.session = ? AND list_contains(?, c.step) ORDER BY c.id", [session, list(steps)]).fetchall():
            docs[step][call_id] = json.loads(text)
        blobs = self._replay_blobs([doc for recording in docs.values() for doc in recording.values()])
        run_ids = self.reserve_run_ids(len(steps))
        ids = self.reserve_call_ids(_FIRST_IDS * len(steps))
        positions = self._log_positions()
        for n, (step, (epoch, source)) in enumerate(steps.items()):
            recording = docs[step]
            responses = {doc["response"] for doc in recording.values() if doc.get("response") in blobs}
            needed = responses.union(*(_blobs.item_references(blobs[key]) for key in responses))
            own = {key: blobs[key] for key in needed if key in blobs}
            _pack.write(self.journal.path, session, step,
                        _pack.Pack(epoch, source, run_ids[n], ids[n * _FIRST_IDS:(n + 1) * _FIRST_IDS], recording, own),
                        positions)
        return later

    def apply_end(self, end: dict[str, Any]) -> None:
        """Close a step run as its log's `end` record says (see `_writer.StepWriter.end_step`)."""
        _records.patch(self.con, "run", "id = ?", [end["run_id"]], _records.run_end(end))
        _records.patch(self.con, "step", "session = ? AND step = ? AND epoch = ?",
                       [end["session"], end["step"], end["epoch"]],
                       {"status": end["status"], "updated_at": end["ended_at"]})

    def session_steps(self, session: str) -> set[str]:
        """The names of the session's steps (what a holder of the session begins without DuckDB is new)."""
        return {name for (name,) in self.con.execute("SELECT name FROM step_records WHERE session = ?",
                                                     [session]).fetchall()}

    def recorded_elsewhere(self, session: str, step: str, source: str) -> list[str]:
        """Other sessions that hold a step of this name and code (a notebook renamed, say), latest first."""
        key = _blobs.Split().add(source.encode())
        return [name for (name,) in self.con.execute(
            "SELECT session FROM step_records WHERE name = ? AND source = ? AND session <> ? ORDER BY updated_at DESC",
            [step, key, session]).fetchall()]

    def reserve_run_ids(self, count: int) -> list[int]:
        """`count` run ids for runs begun without DuckDB (see `Journal.begin_new`)."""
        return [run_id for (run_id,) in self.con.execute("SELECT nextval('run_ids') FROM range(?)",
                                                          [count]).fetchall()]

    def reserve_call_ids(self, count: int) -> list[int]:
        """`count` call ids no other writer will use: a running step hands them out without DuckDB."""
        (floor,) = self.con.execute("SELECT value FROM journal_state WHERE name = 'next call id'").fetchone()
        ids = _ids.reserve(self.journal.path, count, floor=floor)
        _records.set_state(self.con, "next call id", ids[-1] + 1)
        return ids

    def absorbed_position(self, log: Path) -> int:
        row = self.con.execute("SELECT value FROM journal_state WHERE name = ?", [f"log {log.name}"]).fetchone()
        return row[0] if row else 0

    def forget_log(self, log: Path) -> None:
        """A retired log, deleted once wholly absorbed: its position is no longer needed."""
        log.unlink(missing_ok=True)
        _records.drop_states(self.con, [f"log {log.name}"])

    def absorb(self, logs: list[Path] | None = None) -> int:
        """Take the append logs in (`logs`, default all of them); see `_absorb`."""
        from ._absorb import absorb

        return absorb(self, logs)

    def _recording(self, session: str, step: str, epoch: int) -> tuple[dict[int, dict[str, Any]], dict[str, bytes]]:
        """A step's recorded calls ({id: document}) and the blobs replaying them needs, in two queries."""
        rows = self.con.execute(
            "SELECT id, doc FROM call_records WHERE session = ? AND step = ? AND epoch = ? ORDER BY id",
            [session, step, epoch],
        ).fetchall()
        docs = {call_id: json.loads(text) for call_id, text in rows}
        return docs, self._replay_blobs(list(docs.values()))

    def _replay_blobs(self, docs: list[dict[str, Any]]) -> dict[str, bytes]:
        """The responses of recorded calls (`docs`) and the items they refer to, in two queries."""
        wanted = {doc["response"] for doc in docs if doc.get("response") and doc["status"] != "abandoned"}
        blobs = self._blobs_by_hash(list(wanted)) if wanted else {}
        items = {key for data in blobs.values() for key in _blobs.item_references(data)} - blobs.keys()
        if items:
            blobs.update(self._blobs_by_hash(list(items)))
        return blobs

    def recorded(self, session: str, step: str, epoch: int) -> list[RecordedCall]:
        """A step's recorded calls as its next run replays them (their results preloaded)."""
        docs, blobs = self._recording(session, step, epoch)
        return recorded_calls(docs, blobs, self.fetch)[0]

    def _blobs_by_hash(self, keys: list[str]) -> dict[str, bytes]:
        return _seal.open_blobs(self._packs.get(self.con, keys))

    # -- calls ---------------------------------------------------------------------------

    def note_call(self, call_id: int, meta: dict[str, Any]) -> None:
        """Merge `meta` into a call's record without touching its status (say, why it is in doubt)."""
        self._patch_call(call_id, {"meta": meta})

    def _patch_call(self, call_id: int, patch: dict[str, Any]) -> None:
        # A JSON merge patch: keys set to None are removed, nested objects (meta) are merged.
        if "meta" in patch:
            patch = {**patch, "meta": _seal.seal_meta(patch["meta"])}
        row = _records.patch(self.con, "call", "id = ?", [call_id], patch, returning=" RETURNING session, step"
                             ).fetchone()
        if row is not None:
            with _pack.locked(self.journal.path, shared=False, create=False):
                _pack.discard(self.journal.path, [row])

    def call(self, call_id: int) -> dict[str, Any] | None:
        row = self.con.execute(
            "SELECT id, session, step, epoch, kind, name, status, request, response, meta FROM call_rows "
            "WHERE id = ?",
            [call_id],
        ).fetchone()
        keys = ("id", "session", "step", "epoch", "kind", "name", "status", "request", "response", "meta")
        if row is None:
            return None
        found = dict(zip(keys, row, strict=True))
        if found["meta"] and _seal.TEXT in found["meta"]:
            found["meta"] = json.dumps(_seal.open_meta(json.loads(found["meta"])))
        return found

    def settle_call(self, call_id: int, *, value: bytes | None = None, body: str = "data",
                    retry: bool = False) -> None:
        """Decide an in-doubt call: it took effect and returned `value` (stored as `body`), or (`retry`) it
        may run again.

        Nothing is deleted: a retried call is marked `abandoned` and stays in history.
        """
        if (value is None) == (not retry):
            raise ValueError("settle a call with either a value or retry=True")
        if retry:
            self._patch_call(call_id, {"status": "abandoned", "ended_at": stamp(now())})
            return
        key = self.put_bytes(value)
        self._patch_call(call_id, {"status": "completed", "response": key, "ended_at": stamp(now()),
                                   "meta": {"settled": True, "body": body}})

    def latest_variables(self, session: str) -> dict[str, tuple[str, bytes]]:
        """The variables as of the session's last completed step runs: {name: (step, pickle)}.

        Each step's last completed run counts, in the order those runs ended: a later value wins.
        """
        rows = self.con.execute(
            """SELECT step, variables FROM (
                   SELECT step, variables, ended_at,
                          row_number() OVER (PARTITION BY step ORDER BY id DESC) AS n
                   FROM step_runs r WHERE session = ? AND status = 'completed' AND variables IS NOT NULL
                   AND epoch = (SELECT epoch FROM step_records s WHERE s.session = r.session AND s.name = r.step))
               WHERE n = 1 ORDER BY ended_at""",
            [session],
        ).fetchall()
        merged: dict[str, tuple[str, bytes]] = {}
        for step, key in rows:
            for name, blob in json.loads(self.fetch(key)).items():
                merged[name] = (step, self.fetch(blob))
        return merged

    # -- approvals -----------------------------------------------------------------------

    def approvals(self, session: str | None = None, *, pending_only: bool = False) -> list[dict[str, Any]]:
        """Approval calls (pending ones have status `started`), newest last."""
        rows = self.con.execute(
            "SELECT id, session, step, status, meta, response, started_at, ended_at FROM call_rows "
            "WHERE kind = 'approval' AND status IN ('started', 'completed') "
            "AND (? IS NULL OR session = ?) AND (NOT ? OR status = 'started') ORDER BY started_at, id",
            [session, session, pending_only],
        ).fetchall()
        out = []
        for call_id, sess, step, status, meta, response, started, ended in rows:
            info = _seal.open_meta(json.loads(meta or "{}")) or {}
            decision = json.loads(self.fetch(response)) if response else None
            out.append({"id": call_id, "session": sess, "step": step, "status": status, "key": info.get("key"),
                        "prompt": info.get("prompt"), "details": info.get("details"),
                        "deadline": info.get("deadline"), "decision": decision,
                        "requested_at": started, "decided_at": ended})
        return out

    def decide(self, call_id: int, decision: dict[str, Any]) -> bool:
        """Record the decision of a pending approval; False if it was decided already (first one wins)."""
        with self.transaction():
            (status,) = self.con.execute("SELECT status FROM call_rows WHERE id = ?", [call_id]).fetchone()
            if status != "started":
                return False
            key = self.put_bytes(_blobs.canonical_json(decision))
            # The gist of the decision also goes into meta, where the `approvals` view can read it.
            gist = {k: decision.get(k) for k in ("approved", "by", "comment", "timed_out")}
            self._patch_call(call_id, {"status": "completed", "response": key, "ended_at": stamp(now()),
                                       "attempts": 1, "meta": {"body": "decision", "decision": gist}})
        return True
