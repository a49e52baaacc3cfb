"""Telling a damaged journal file from a healthy one, and keeping a damaged one unwritten.

DuckDB 2.0 opens a file whose data blocks are cut off, overwritten or failing their checksums
without complaint: it reads the catalog at open, and a table's blocks only when a query needs
their values (`count(*)` is answered from metadata). So a damaged journal opens, takes new
sessions and steps, and fails later or never, depending on which blocks a query touches.
`probe` reads every value of every table once, before anything is written; a connection that
meets damage later stops writing (and DuckDB's checkpoint at close is turned off, so even the
WAL stays out of the file).
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import private_wal
from ._space import disk_full
from .errors import JournalDamagedError, JournalFullError

if TYPE_CHECKING:
    import duckdb

# What DuckDB 2.0 says when a block is cut off, overwritten, or the header is not a DuckDB header.
_MARKERS = ("Corrupt database file", "Could not read enough bytes", "not a valid DuckDB database file",
            "replaying WAL")
_CHECKSUM = re.compile(r"checksum .* in block at location (\d+)")
_SHORT = re.compile(r"attempted to read \d+ bytes from location (\d+)")
# Files found damaged by this process: DuckDB shares one database between the connections of a
# process, so every connection to the file must stop writing, not only the one that met the damage.
_damaged: set[str] = set()


def damage_reason(exc: BaseException) -> str | None:
    """What a DuckDB error says about the file in a few words, or None if it is not about damage."""
    text = str(exc)
    if not any(marker in text for marker in _MARKERS):
        return None
    if match := _CHECKSUM.search(text):
        return f"checksum mismatch in the block at byte {match.group(1)}"
    if match := _SHORT.search(text):
        return f"the file is cut short, the block at byte {match.group(1)} is missing"
    if "not a valid DuckDB database file" in text:
        return "not a DuckDB database file, its header is missing or overwritten"
    first = re.sub(r'"[^"]*"', "the file", text.strip().splitlines()[0])
    return first if len(first) <= 160 else first[:157] + "..."


def probe(con: duckdb.DuckDBPyConnection) -> None:
    """Read every value of every table, so that a damaged block anywhere fails here and not later."""
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database()"
    ).fetchall()
    for schema, table in tables:
        # hash() needs each value: an aggregate that statistics can answer would skip the blocks.
        con.execute(f"SELECT max(hash(COLUMNS(*))) FROM {_quote(schema)}.{_quote(table)}").fetchall()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key(path: Path) -> str:
    return str(path.resolve())


def is_damaged(path: Path) -> bool:
    return _key(path) in _damaged


def stop_writing(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Leave the file as it is: no explicit checkpoint from us, and none from DuckDB at close."""
    import duckdb

    _damaged.add(_key(path))
    with contextlib.suppress(duckdb.Error):  # a connection that cannot run it cannot checkpoint either
        con.execute("PRAGMA disable_checkpoint_on_shutdown")


def healthy(path: Path) -> None:
    """`path` passed a probe: a file found damaged before has been replaced by a readable one."""
    _damaged.discard(_key(path))


class GuardedConnection:
    """A DuckDB connection to a journal whose damage errors become `JournalDamagedError`, and whose
    writes that find the disk full become `JournalFullError` (DuckDB has rolled them back).

    After damage is met, every statement but ROLLBACK is refused: ROLLBACK only drops what the
    failed transaction had not committed, and the code that cleans up after an error runs it.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, *, writes: bool = False) -> None:
        import duckdb

        self.raw = con
        self.path = path
        self._key = _key(path)  # resolved once: every statement asks
        self._error = duckdb.Error
        # A statement of a connection that writes may make the WAL, which must be owner-only.
        self._writing = functools.partial(private_wal, str(path)) if writes else contextlib.nullcontext

    @property
    def damaged(self) -> bool:
        return self._key in _damaged

    def execute(self, query: str, parameters: Any = None) -> GuardedConnection:
        self._refuse_after_damage(query)
        with self._writing():
            self._guard(self.raw.execute, query, parameters)
        return self

    def executemany(self, query: str, parameters: Any = None) -> GuardedConnection:
        self._refuse_after_damage(query)
        with self._writing():
            self._guard(self.raw.executemany, query, parameters)
        return self

    def fetchone(self) -> Any:
        return self._guard(self.raw.fetchone)

    def fetchall(self) -> list[Any]:
        return self._guard(self.raw.fetchall)

    @property
    def description(self) -> Any:
        return self.raw.description

    def sql(self, query: str, params: Any = None) -> Any:
        self._refuse_after_damage(query)
        with self._writing():
            return self._guard(self.raw.sql, query, params=params)

    def close(self) -> None:
        self.raw.close()

    def _refuse_after_damage(self, query: str) -> None:
        if self.damaged and query.strip().upper() != "ROLLBACK":
            raise JournalDamagedError(str(self.path), "found damaged earlier in this process", before_writing=False)

    def _guard(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except self._error as exc:
            reason = damage_reason(exc)
            if reason is None:
                if disk_full(exc):
                    raise JournalFullError(f"journal {self.path} could not be written (nothing of this was "
                                           "saved in it)") from None
                raise
            stop_writing(self.raw, self.path)
            raise JournalDamagedError(str(self.path), reason, before_writing=False) from None
