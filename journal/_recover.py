"""Salvaging a damaged journal into a new one (`durable recover JOURNAL -o NEW`).

DuckDB reads a column 2,048 rows at a time, and a damaged block fails every read that needs it.
So each table is copied whole where it can be, and a range of rows that fails is halved down to
single rows: what DuckDB can still read is copied, the rest is reported by row id. One damaged
16 KB block can so cost up to about 2,048 rows of its table. Copied rows that refer to what was
lost are then made safe to replay (`_repair`). Nothing here imports IPython.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._damage import damage_reason
from ._files import make_dirs, private_umask, write_file
from ._log import logs_dir, logs_in
from ._repair import repair
from ._schema import LATEST, migrate
from ._store import _BLOCK_SIZE, _LOCK_HOLDER, Journal
from .errors import JournalError, JournalIsFolderError

# Columns that say whose a row was, read (where they still can be) for the rows that were lost.
_OWNER = {"session_records": ("name",), "step_records": ("session", "name"), "step_runs": ("session", "step"),
          "call_records": ("session", "step"), "cells": ("session", "step"), "records": ("session", "step", "kind")}
# Since schema 8 one table holds them all: a lost row of `records` is reported as its kind's table was.
_KIND_TABLE = {"session": "session_records", "step": "step_records", "run": "step_runs", "call": "call_records",
               "cell": "cells"}
_CALLS = ("call_records", "records")  # tables whose lost rows may be calls
_WHAT = {"session_records": "session record", "step_records": "step record", "step_runs": "run records",
         "call_records": "call records", "cells": "notebook cells (for export)", "records": "records"}


class RecoverUsageError(JournalError):
    """The command was given a target that exists, or a source that does not."""


@dataclass
class TableCopy:
    table: str
    copied: int = 0
    counted: int | None = None  # rows DuckDB's metadata counts; None when even that cannot be read
    lost: list[int] = field(default_factory=list)  # row ids that could not be read
    reason: str | None = None  # the first damage DuckDB reported for this table

    def line(self) -> str:
        counted = "?" if self.counted is None else f"{self.counted:,}"
        text = f"{self.table:<16} {self.copied:>7,} of {counted} rows copied"
        if self.lost:
            text += f"; lost rows {_ranges(self.lost)} ({len(self.lost):,})"
        if self.reason:
            text += f" (DuckDB: {self.reason})"
        return text


@dataclass
class Recovery:
    source: Path
    target: Path
    tables: list[TableCopy] = field(default_factory=list)
    # (session, step) -> what is missing there -> the calls or runs it concerns
    notes: dict[tuple[str | None, str | None], dict[str, list[str]]] = field(default_factory=dict)
    calls_unowned: bool = False  # call rows were lost whose session and step cannot be read either

    @property
    def complete(self) -> bool:
        return not self.notes and all(t.reason is None and not t.lost for t in self.tables)

    def note(self, session: str | None, step: str | None, what: str, item: Any = None) -> None:
        items = self.notes.setdefault((session, step), {}).setdefault(what, [])
        if item is not None:
            items.append(str(item))

    def lines(self) -> list[str]:
        verdict = "everything was copied" if self.complete else "some of it could not be read"
        lines = [f"recovered {self.source} into {self.target}: {verdict}"]
        lines += [f"  {t.line()}" for t in self.tables]
        if self.notes:
            lines.append("  incomplete:")
        for (session, step), texts in sorted(self.notes.items(), key=lambda item: (
                item[0][0] is not None, item[0][0] or "", item[0][1] or "")):
            who = "rows of unknown sessions" if session is None else f"session {session}" + (
                f", step {step}" if step else "")
            parts = [f"{what}: {', '.join(items)}" if items else what for what, items in texts.items()]
            lines.append(f"    {who}: {'; '.join(parts)}")
        lines.append(f"  go on from it: DURABLE_JOURNAL={self.target} (or --journal {self.target})")
        return lines


def recover(source: Path, target: Path) -> Recovery:
    """Copy what DuckDB can read of the journal `source` into the new journal `target`."""
    import duckdb

    source, target = source.absolute(), target.absolute()
    if target.exists() or Path(f"{target}.wal").exists():
        raise RecoverUsageError(f"{target} exists already; recover writes a new journal: choose another -o")
    if not source.is_file():
        missing = JournalIsFolderError(str(source)) if source.is_dir() else f"no journal at {source}"
        raise RecoverUsageError(str(missing))
    try:
        duckdb.connect(str(source), read_only=True).close()
    except duckdb.Error as exc:
        if holder := _LOCK_HOLDER.search(str(exc)):
            raise JournalError(f"{source} is in use by process {holder.group(2)} ({holder.group(1)}); "
                               "recover it once that process has ended") from None
        raise JournalError(f"DuckDB cannot open {source} at all ({_reason(exc)}); nothing can be salvaged "
                           "from it") from None
    make_dirs(target.parent)
    try:
        return _recover(source, target)
    except BaseException:
        for leftover in (target, Path(f"{target}.wal")):  # half a copy must not pass for a recovered journal
            leftover.unlink(missing_ok=True)
        raise


def _recover(source: Path, target: Path) -> Recovery:
    import duckdb

    report = Recovery(source, target)
    with private_umask():  # the new journal and its WAL are DuckDB's to create
        con = duckdb.connect(str(target), config={"default_block_size": _BLOCK_SIZE, "threads": "1"})
        try:
            con.execute("ATTACH '" + str(source).replace("'", "''") + "' AS damaged (READ_ONLY)")
            # Rows are copied into the schema they were written in; opening the new file migrates them.
            migrate(con, upto=_version(con, report))
            for table in _tables(con):
                report.tables.append(_copy(con, table, report))
            _continue_sequences(con)
            con.execute("DETACH damaged")
        finally:
            con.close()
    _bring_logs(source, target)
    with Journal(target).open() as store, store.transaction():
        repair(store, report.note, calls_lost_unowned=report.calls_unowned)
    return report


def _version(con: Any, report: Recovery) -> int:
    import duckdb

    try:
        (version,) = con.execute("SELECT max(version) FROM damaged.schema_version").fetchone()
    except duckdb.Error as exc:
        report.note(None, None, f"the schema version could not be read ({_reason(exc)}); assumed {LATEST}")
        return LATEST
    return version or LATEST


def _tables(con: Any) -> list[tuple[str, list[str]]]:
    """The tables both files have (but the schema version), with the columns both have, in order."""
    rows = con.execute(
        """SELECT t.table_name, list(c.column_name ORDER BY c.column_index)
           FROM duckdb_tables() t JOIN duckdb_columns() c USING (database_name, schema_name, table_name)
           WHERE t.database_name = current_database() AND t.table_name <> 'schema_version'
             AND c.column_name IN (SELECT column_name FROM duckdb_columns() s
                                   WHERE s.database_name = 'damaged' AND s.table_name = t.table_name)
           GROUP BY t.table_name ORDER BY t.table_name"""
    ).fetchall()
    return [(name, columns) for name, columns in rows]


def _copy(con: Any, table: tuple[str, list[str]], report: Recovery) -> TableCopy:
    import duckdb

    name, columns = table
    copy = TableCopy(name)
    try:
        (copy.counted,) = con.execute(f'SELECT count(*) FROM damaged."{name}"').fetchone()
        (top,) = con.execute(f'SELECT max(rowid) FROM damaged."{name}"').fetchone()
    except duckdb.Error as exc:
        copy.reason = _reason(exc)
        report.note(None, None, f"every row of {name} lost")
        report.calls_unowned = report.calls_unowned or name in _CALLS
        return copy
    chosen = ", ".join(f'"{c}"' for c in columns)
    picked = f'SELECT {chosen} FROM damaged."{name}" WHERE rowid >= ? AND rowid < ?'

    def readable(lo: int, hi: int) -> list[tuple[int, int]]:
        # Read, not inserted: finding the readable rows one by one then costs no write per try.
        con.execute(f"SELECT max(hash(COLUMNS(*))) FROM ({picked})", [lo, hi]).fetchall()
        return [(lo, hi)]

    con.execute(f'DELETE FROM main."{name}"')  # rows the migrations made (the call-id floor) come from the source
    if top is not None:
        for lo, hi in _joined(_salvage(readable, 0, top + 1, copy)):
            con.execute(f'INSERT INTO main."{name}" ({chosen}) {picked}', [lo, hi])
    (copy.copied,) = con.execute(f'SELECT count(*) FROM main."{name}"').fetchone()
    if copy.lost:
        _owners_of_lost(con, copy, report)
    return copy


def _salvage(attempt: Callable[[int, int], Any], lo: int, hi: int, copy: TableCopy) -> list[Any]:
    """`attempt` over the row ids [lo, hi); where DuckDB cannot read, halve the range down to single rows."""
    import duckdb

    try:
        return attempt(lo, hi) or []
    except duckdb.Error as exc:
        reason = damage_reason(exc)
        if reason is None:
            raise
        copy.reason = copy.reason or reason
        if hi - lo == 1:
            copy.lost.append(lo)
            return []
    middle = (lo + hi) // 2
    return _salvage(attempt, lo, middle, copy) + _salvage(attempt, middle, hi, copy)


def _owners_of_lost(con: Any, copy: TableCopy, report: Recovery) -> None:
    """Say whose rows were lost, where the columns naming their session and step can still be read."""
    owner = _OWNER.get(copy.table)
    if owner is None:
        return
    columns = ", ".join(f'"{c}"' for c in owner)
    scratch = TableCopy(copy.table)
    found: list[tuple[Any, ...]] = []
    for lo, hi in _runs(copy.lost):
        found += _salvage(lambda a, b: con.execute(f'SELECT {columns} FROM damaged."{copy.table}" '
                                                    "WHERE rowid >= ? AND rowid < ?", [a, b]).fetchall(),
                          lo, hi, scratch)
    counts: dict[tuple[str, str | None, str | None], int] = {}
    for row in found:
        table = _KIND_TABLE.get(row[2]) if copy.table == "records" else copy.table
        if table is None:
            continue  # the journal's own state: rebuilt below (_continue_sequences) or re-read from the logs
        key = (table, row[0], None) if table == "session_records" else (table, row[0], row[1])
        counts[key] = counts.get(key, 0) + 1
    if scratch.lost:
        counts[(copy.table, None, None)] = len(scratch.lost)
        report.calls_unowned = report.calls_unowned or copy.table in _CALLS
    for (table, session, step), n in counts.items():
        what = _WHAT[table]
        if session is not None and table in ("session_records", "step_records"):
            report.note(session, step, f"its {what} lost")
        elif table == "records":  # not even the kind of these rows can be read
            report.note(session, step, f"{n:,} records lost (calls, runs, steps or sessions: those calls run live "
                        "again, tools included)")
        elif table in _CALLS:
            report.note(session, step, f"{n:,} call records lost (those calls run live again, tools included)")
        else:
            report.note(session, step, f"{n:,} {what}{'s' if what.endswith('record') else ''} lost")


def _bring_logs(source: Path, target: Path) -> None:
    """The append logs of the damaged journal go along: what they hold and it did not absorb is absorbed now.

    Their absorbed positions were copied with the rows, so nothing is taken in twice.
    """
    logs = list(logs_in(logs_dir(source)))
    if logs:
        make_dirs(logs_dir(target))
        for log in logs:
            write_file(logs_dir(target) / log.name, log.read_bytes())


def _continue_sequences(con: Any) -> None:
    """New ids start after every id the damaged journal ever gave out, also those of lost rows."""
    rows = con.execute("SELECT sequence_name, coalesce(last_value, 0) FROM duckdb_sequences() "
                       "WHERE database_name = 'damaged'").fetchall()
    mine = {name for (name,) in con.execute("SELECT sequence_name FROM duckdb_sequences() "
                                            "WHERE database_name = current_database()").fetchall()}
    for name, last in rows:
        if name in mine:
            con.execute(f'CREATE OR REPLACE SEQUENCE "{name}" START {int(last) + 1}')
    tables = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables() "
                                              "WHERE database_name = current_database()").fetchall()}
    if "records" in tables:
        top = "(SELECT coalesce(max(id), 0) + 1 FROM records WHERE kind = 'call')"
        con.execute(f"UPDATE records SET id = greatest(id, {top}) WHERE kind = 'state' "
                    "AND doc->>'name' = 'next call id'")
        con.execute(f"""INSERT INTO records SELECT 'state', {top}, NULL, NULL, NULL, '{{"name":"next call id"}}'
                        WHERE NOT EXISTS (SELECT 1 FROM records WHERE kind = 'state'
                                          AND doc->>'name' = 'next call id')""")
    elif "journal_state" in tables:
        # Call ids reserved in blocks: past every copied call, also if the counter's own row was lost.
        top = "(SELECT coalesce(max(id), 0) + 1 FROM call_records)"
        con.execute(f"UPDATE journal_state SET value = greatest(value, {top}) WHERE name = 'next call id'")
        con.execute(f"INSERT INTO journal_state SELECT 'next call id', {top} "
                    "WHERE NOT EXISTS (SELECT 1 FROM journal_state WHERE name = 'next call id')")


def _joined(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Consecutive row ids as half-open ranges."""
    return _joined([(row, row + 1) for row in sorted(rows)])


def _ranges(rows: list[int]) -> str:
    return ", ".join(str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in _runs(rows))


def _reason(exc: BaseException) -> str:
    return damage_reason(exc) or str(exc).strip().splitlines()[0]
