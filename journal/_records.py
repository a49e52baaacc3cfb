"""Writing rows of the journal's one table of records (`_schema.RECORDS`).

A row is a kind, the columns every reader filters on (id, session, step, epoch) and a JSON
document with the rest. People and readers use the views named like the tables before
(`step_runs`, `session_records`, ...); they cannot be written to, so writers come here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ._time import stamp


def encode(fields: dict[str, Any]) -> str:
    return json.dumps({k: stamp(v) if isinstance(v, datetime) else v for k, v in fields.items()},
                      separators=(",", ":"))


def insert(con: Any, kind: str, doc: dict[str, Any], *, id: int | None = None, session: str | None = None,
           step: str | None = None, epoch: int | None = None) -> None:
    con.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)", [kind, id, session, step, epoch, encode(doc)])


def patch(con: Any, kind: str, where: str, params: list[Any], changes: dict[str, Any], *,
          epoch: int | None = None, returning: str = "") -> Any:
    """Merge `changes` into the documents of `kind` rows matching `where` (a key set to None is removed)."""
    sets = "doc = json_merge_patch(doc, ?)::VARCHAR" + (", epoch = ?" if epoch is not None else "")
    values = [encode(changes)] + ([epoch] if epoch is not None else [])
    return con.execute(f"UPDATE records SET {sets} WHERE kind = ? AND {where}{returning}", [*values, kind, *params])


def run_end(end: dict[str, Any]) -> dict[str, Any]:
    """The fields a log's `end` record sets in its run's document."""
    return {"ended_at": end["ended_at"], "status": end["status"], "calls_live": end["live"],
            "calls_replayed": end["replayed"], "outputs": end["outputs"], "error": end["error"],
            "variables": end["variables"], "replayed_calls": end.get("replayed_calls"), "budget": end.get("budget")}


def interrupt(con: Any, session: str, step: str | None = None) -> None:
    """Steps and runs of `session` (of `step`) left running by a process that is gone were cut off."""
    where, params = "session = ? AND doc->>'status' = 'running'", [session]
    if step is not None:
        where, params = where + " AND step = ?", [session, step]
    for kind in ("run",) if step is not None else ("step", "run"):
        patch(con, kind, where, params, {"status": "interrupted"})


def set_state(con: Any, name: str, value: int, *, at_least: bool = False) -> None:
    """Set the journal's state `name` (a log's absorbed position, the next call id); `at_least`: never lower it."""
    new = "greatest(id, ?)" if at_least else "?"
    con.execute(f"UPDATE records SET id = {new} WHERE kind = 'state' AND doc->>'name' = ?", [value, name])


def drop_states(con: Any, names: list[str]) -> None:
    con.execute("DELETE FROM records WHERE kind = 'state' AND list_contains(?, doc->>'name')", [names])


def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386 merge patch, as DuckDB's json_merge_patch applies it: None removes a key."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
