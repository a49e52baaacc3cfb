"""`%durable sql` and `durable sql`: read-only queries over the journal's documented views."""

from __future__ import annotations

import html
import json
import sys
from typing import TYPE_CHECKING, Any

from journal import Journal

from .cli import terminal
from .errors import StepError
from .exit_codes import EXIT_COMPLETED, EXIT_FAILED

if TYPE_CHECKING:
    from rich.table import Table

VIEWS = "sessions, steps, calls, approvals"


class QueryTable:
    """A query's result where pandas is not installed: shown as a table in a notebook or a terminal."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.columns, self.rows = columns, rows

    def __len__(self) -> int:
        return len(self.rows)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def __repr__(self) -> str:
        return terminal.plain(*self.shown())

    def shown(self) -> tuple[Table, str]:
        """The rows as a table to print, and the line that counts them."""
        drawn = terminal.table(*self.columns)
        for row in self.rows:
            drawn.add_row(*map(_text, row))
        return drawn, f"({len(self.rows)} rows)"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p>{len(self.rows)} rows</p>"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _fetch(journal: Journal, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    with journal.open(read_only=True) as store:
        try:
            cursor = store.con.execute(query)
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            where = "the journal is read-only here; views" if _writes(query, first) else "views"
            raise StepError(f"{first}  ({where}: {VIEWS})") from None
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()


_WRITING = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE_INTO", "CREATE", "CREATE_FUNC", "DROP", "ALTER",
                      "COPY", "COPY_DATABASE", "VACUUM"})


def _writes(query: str, error: str) -> bool:
    """Whether a failed query tried to change the journal (refused on a read-only connection).

    By its statements' kind: a write to a view fails with a catalog or binder error ("Can only update
    base table") that does not say it was refused for writing.
    """
    import duckdb

    if "read-only mode" in error:
        return True
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error:  # not even parsed: a syntax error, not a write
        return False
    return any(statement.type.name in _WRITING for statement in statements)


def run_query(journal: Journal, query: str) -> Any:
    """The rows of `query`: a pandas DataFrame where pandas is installed, else a `QueryTable`."""
    columns, rows = _fetch(journal, query)
    if journal.behind:
        print(f"%durable sql: {journal.behind}", file=sys.stderr)
    try:
        import pandas
    except ImportError:
        return QueryTable(columns, rows)
    return pandas.DataFrame.from_records(rows, columns=columns)


def print_query(journal: Journal, query: str, as_json: bool) -> int:
    try:
        columns, rows = _fetch(journal, query)
    except StepError as exc:
        print(f"durable sql: {exc}", file=sys.stderr)
        return EXIT_FAILED
    table = QueryTable(columns, rows)
    if as_json:
        print(json.dumps(table.records(), default=str, indent=2))
    else:
        terminal.echo(*table.shown())
    return EXIT_COMPLETED
