"""Making the rows `durable recover` copied safe to replay when what they refer to was lost.

A copied call can refer to a blob that was lost (its request, its result). Replaying it would fail,
so it runs again the way a call the journal never finished does: a model call or a value is sent or
drawn again, an approval is asked again, and a tool call is in doubt until someone settles it (it may
have taken effect). Runs lose their outputs or variables, steps their source, and everything is
reported by session and step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from . import _blobs, _blobstore, _records
from ._store import Store

Note = Callable[..., None]  # (session, step, what, item=None): one line of the recovery's report
_AGAIN = {"llm": "model calls whose result was lost, sent again", "value": "values lost, drawn again",
          "approval": "approvals whose decision was lost, asked again"}


class _Blobs:
    """Which blobs, and which documents with everything they refer to, the new journal can read."""

    def __init__(self, store: Store) -> None:
        # Keys read once: a query per blob would cost a millisecond each. A key whose pack was lost is lost.
        self.stored = _blobstore.packed_keys(store.con)
        self._store = store
        self.inline: dict[str, Any] = {}  # a tool call's small blobs, kept in its own row
        for (kept,) in store.con.execute("SELECT (doc->'blobs')::VARCHAR FROM call_records "
                                         "WHERE (doc->'blobs') IS NOT NULL").fetchall():
            self.inline.update(json.loads(kept))
        self._whole: dict[tuple[str, str], bool] = {}

    def fetch(self, key: str) -> bytes:
        if key in self.inline:
            return _blobs.unpack_inline(self.inline[key])
        if key not in self.stored:
            raise KeyError(key)
        return self._store.fetch(key)

    def has(self, key: str) -> bool:
        return key in self.inline or key in self.stored

    def document(self, key: str) -> bool:
        """The document stored under `key` can be rebuilt: every item and message it refers to is here."""
        if ("doc", key) not in self._whole:
            try:
                value = json.loads(self.fetch(key))
            except (KeyError, ValueError):
                self._whole[("doc", key)] = False
            else:
                self._whole[("doc", key)] = all(self._part(kind, ref) for kind, ref in _references(value))
        return self._whole[("doc", key)]

    def _part(self, kind: str, key: str) -> bool:
        if kind == "item":
            return self.document(key)
        seen: list[str] = []  # a conversation: walk back to a node known whole (or its start)
        node: str | None = key
        ok = True
        while node is not None and ("chain", node) not in self._whole:
            seen.append(node)
            try:
                entry = json.loads(self.fetch(node))
            except (KeyError, ValueError):
                ok = False
                break
            if not (all(self._part(part, ref) for message in entry["m"] for part, ref in _references(message))
                    if "m" in entry else self.document(entry["i"])):
                ok = False
                break
            node = entry["p"]
        ok = ok and (node is None or self._whole[("chain", node)])
        for visited in seen:
            self._whole[("chain", visited)] = ok
        return ok


def _references(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        ref = value.get("$durable")
        if ref in ("item", "chain"):
            yield ref, value["h"]
            return
        for inner in (value["v"] if ref == "escaped" else value).values():
            yield from _references(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _references(inner)


def repair(store: Store, note: Note, *, calls_lost_unowned: bool) -> None:
    """Make every copied row usable: what refers to a lost blob runs again, or is left out, and is reported."""
    blobs = _Blobs(store)
    patches: dict[int, dict[str, Any]] = {}
    calls = store.con.execute(
        "SELECT id, session, step, kind, status, request, response, meta FROM call_rows ORDER BY id"
    ).fetchall()
    for call_id, session, step, kind, status, request, response, meta in calls:
        if request is not None and not blobs.document(request):
            patches[call_id] = {"request": None}
            note(session, step, "calls whose request was lost (history cannot show it)", call_id)
        body = json.loads(meta or "{}").get("body")
        if status in ("completed", "failed") and response is not None and not (
                blobs.document(response) if body in ("json", "decision") else blobs.has(response)):
            patches.setdefault(call_id, {}).update(
                status="abandoned" if kind in ("llm", "value") else "started", response=None, ended_at=None)
            note(session, step, _AGAIN.get(kind) or f"tool calls whose result was lost, in doubt until "
                        f"settled (durable settle {session} ID --value JSON, or --retry)", call_id)
    if patches:  # one statement for all: an UPDATE costs about a millisecond
        store.con.execute("UPDATE records SET doc = json_merge_patch(doc, p.patch)::VARCHAR FROM "
                          "(SELECT unnest(?) AS id, unnest(?) AS patch) p WHERE kind = 'call' AND records.id = p.id",
                          [list(patches), [json.dumps(patch) for patch in patches.values()]])
    runs = store.con.execute("SELECT id, session, step, outputs, variables FROM step_runs ORDER BY id").fetchall()
    for run_id, session, step, outputs, variables in runs:
        if outputs is not None and not blobs.has(outputs):
            _records.patch(store.con, "run", "id = ?", [run_id], {"outputs": None})
            note(session, step, "runs whose outputs were lost", run_id)
        if variables is not None and not (blobs.has(variables) and all(
                blobs.has(key) for key in json.loads(blobs.fetch(variables)).values())):
            _records.patch(store.con, "run", "id = ?", [run_id], {"variables": None})
            note(session, step, "runs whose variables were lost (%durable restore skips them)", run_id)
    for session, step, source in store.con.execute("SELECT session, name, source FROM step_records").fetchall():
        if source is not None and not blobs.has(source):
            _records.patch(store.con, "step", "session = ? AND step = ?", [session, step], {"source": None})
            note(session, step, "its cell source was lost")
    lost = [source for (source,) in store.con.execute("SELECT DISTINCT source FROM cells").fetchall()
            if not blobs.has(source)]
    for (session,) in store.con.execute("SELECT DISTINCT session FROM cells WHERE list_contains(?, source)",
                                        [lost]).fetchall():
        note(session, None, "notebook cells lost their source (for export)")
    store.con.execute("DELETE FROM records WHERE kind = 'cell' AND list_contains(?, doc->>'source')", [lost])
    _orphans(store, note, calls_lost_unowned)


def _orphans(store: Store, note: Note, calls_lost_unowned: bool) -> None:
    """Steps and sessions whose own record was lost, while rows that belong to them were copied."""
    for (session,) in store.con.execute(
        """SELECT DISTINCT session FROM (SELECT session FROM step_records UNION ALL SELECT session FROM call_records
                                         UNION ALL SELECT session FROM step_runs)
           WHERE session NOT IN (SELECT name FROM session_records)"""
    ).fetchall():
        note(session, None, "its session record was lost (the next run makes a new one)")
    for session, step in store.con.execute(
        """SELECT DISTINCT session, step FROM (SELECT session, step FROM call_records
                                              UNION ALL SELECT session, step FROM step_runs)
           AS o WHERE NOT EXISTS (SELECT 1 FROM step_records s WHERE s.session = o.session AND s.name = o.step)"""
    ).fetchall():
        note(session, step, "its step record was lost (the next run replays the calls of its first epoch)")
    if calls_lost_unowned:
        # Whose call rows were lost cannot be read; a step whose runs made more live calls than are
        # left is one of theirs.
        for session, step, missing in store.con.execute(
            """WITH made AS (SELECT session, step, epoch, sum(calls_live) AS n FROM step_runs GROUP BY ALL),
                    kept AS (SELECT session, step, epoch, count(*) AS n FROM call_records GROUP BY ALL)
               SELECT m.session, m.step, m.n - coalesce(k.n, 0)
               FROM made m LEFT JOIN kept k USING (session, step, epoch)
               WHERE m.n > coalesce(k.n, 0) ORDER BY ALL"""
        ).fetchall():
            note(session, step, f"{missing:,} of the calls its runs made have no record left "
                 "(they run live again, tools included)")
