"""Reading a session for people, and the edits people make to one.

What a person asks of a journal (status, history, SQL) reads the documented views
`sessions`, `steps`, `calls` and `approvals`. The edits (forking a session, forgetting a step,
setting prices, remembering the cells a kernel ran) never delete a record: a forgotten step's
calls stay in history under their old epoch, and a fork is a copy.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._damage import GuardedConnection

from . import _blobs, _blobstore, _pack, _records, _seal
from ._time import now as _now
from .errors import JournalError


class History:
    """Mixed into `Store`: `con`, `fetch`, `put`, `put_bytes` and `transaction` come from there."""

    con: GuardedConnection

    # -- reading -------------------------------------------------------------------------------

    def require_key(self) -> None:
        """Raise `JournalKeyError` (one line) if the journal's content is sealed and the key in effect is not its own.

        The newest pack's first blob tells: a view that shows content says so before showing anything.
        """
        row = self.con.execute("SELECT hash FROM blobs WHERE hash IS NOT NULL ORDER BY pack DESC, pos LIMIT 1"
                               ).fetchone()
        if row is not None:
            key = _blobstore.to_hex(row[0])
            for data in self._packs.get(self.con, [key]).values():  # type: ignore[attr-defined]
                _seal.open_blob(data)  # a sealed blob opens only with its own key

    def session_info(self, session: str) -> dict[str, Any] | None:
        """A session's notebook and last update, or None if the journal has no such session."""
        row = self.con.execute("SELECT notebook, updated_at FROM sessions WHERE name = ?", [session]).fetchone()
        return {"notebook": row[0], "updated_at": row[1]} if row is not None else None

    def session_names(self) -> list[str]:
        return [name for (name,) in self.con.execute("SELECT name FROM sessions ORDER BY name").fetchall()]

    def steps_of(self, session: str) -> list[dict[str, Any]]:
        """The steps of a session in the order they were first run, with their calls and tokens."""
        # Aggregated per step in one pass over the session's runs and calls: the `steps` view's
        # subqueries per step cost a scan each (35 ms against 14 ms at 1,000 steps).
        rows = self.con.execute(
            """WITH r AS (SELECT step, count(*) AS runs,
                                 arg_max({'id': id, 'live': calls_live, 'replayed': calls_replayed,
                                          'seconds': date_diff('millisecond', started_at, ended_at) / 1000.0,
                                          'calls': replayed_calls}, id) AS last
                          FROM step_runs WHERE session = $1 GROUP BY step),
                    c AS (SELECT step, count(*) FILTER (WHERE status = 'completed') AS calls,
                                 sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) AS tokens,
                                 sum(cost) AS cost
                          FROM calls WHERE session = $1 AND current GROUP BY step),
                    -- what the step's budgets left when its last run ended (kernel_ext.budgets)
                    b AS (SELECT step, arg_max(doc->>'budget', id) AS budget FROM records
                          WHERE kind = 'run' AND session = $1 GROUP BY step)
               SELECT s.name, s.status, s.epoch, s.created_at, s.updated_at, coalesce(r.runs, 0),
                      coalesce(c.calls, 0), coalesce(c.tokens, 0), r.last.live, r.last.replayed, r.last.seconds,
                      c.cost, r.last.id, r.last.calls, b.budget
               FROM step_records s LEFT JOIN r ON r.step = s.name LEFT JOIN c ON c.step = s.name
                   LEFT JOIN b ON b.step = s.name
               WHERE s.session = $1 ORDER BY s.created_at""",
            [session],
        ).fetchall()
        keys = ("name", "status", "epoch", "created_at", "updated_at", "runs", "calls", "tokens",
                "last_run_live", "last_run_replayed", "last_run_seconds", "cost", "last_run_id",
                "last_run_replayed_calls", "last_run_budget")
        steps = [dict(zip(keys, row, strict=True)) for row in rows]
        for step in steps:  # None: a run of an older release, which did not say
            raw = step["last_run_replayed_calls"]
            step["last_run_replayed_calls"] = set(json.loads(raw)) if raw is not None else None
        if any(step["status"] == "running" for step in steps) and self._driver_gone(session):
            for step in steps:
                if step["status"] == "running":
                    step["status"] = "interrupted"
        return steps

    def _driver_gone(self, session: str) -> bool:
        """Whether no live process drives `session`: a step it left 'running' was cut off, not running."""
        holder = self.session_holder(session)  # type: ignore[attr-defined]
        return holder is None or not holder.is_alive()

    def sessions_overview(self) -> list[dict[str, Any]]:
        """One row per session: status, steps, calls, tokens, cost, last activity."""
        # One pass over calls and one over steps, grouped by session: the `sessions` and `steps` views
        # answer with a subquery per session and per step (98 ms against 17 ms at 1,000 steps).
        rows = self.con.execute(
            """WITH c AS (SELECT session, count(*) FILTER (WHERE current AND status = 'completed') AS calls,
                                 sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0))
                                     FILTER (WHERE current) AS tokens,
                                 sum(cost) FILTER (WHERE current) AS cost,
                                 count(*) FILTER (WHERE kind = 'approval' AND status = 'started') AS pending
                          FROM calls GROUP BY session),
                    t AS (SELECT session, count(*) AS steps, count(*) FILTER (WHERE status = 'completed') AS done,
                                 list(DISTINCT status) AS statuses
                          FROM step_records GROUP BY session),
                    -- the wake-up time of the latest sleep of a step that has not ended (see kernel_ext.waits)
                    w AS (SELECT r.session, max(json_extract_string(r.meta, '$.wake_at')) AS wake_at
                          FROM call_rows r JOIN step_records p ON p.session = r.session AND p.name = r.step
                              AND p.epoch = r.epoch
                          WHERE r.kind = 'value' AND r.name = 'sleep' AND p.status IN ('running', 'suspended')
                          GROUP BY r.session)
               SELECT s.name, s.updated_at, coalesce(t.steps, 0), coalesce(c.calls, 0), coalesce(c.tokens, 0),
                      c.cost, coalesce(t.done, 0), t.statuses, coalesce(c.pending, 0), w.wake_at
               FROM session_records s LEFT JOIN t ON t.session = s.name LEFT JOIN c ON c.session = s.name
                   LEFT JOIN w ON w.session = s.name
               ORDER BY s.updated_at DESC"""
        ).fetchall()
        out = []
        for name, updated, steps, calls, tokens, cost, completed, statuses, pending, wake_at in rows:
            statuses = set(statuses or [])
            if "running" in statuses and self._driver_gone(name):
                statuses = (statuses - {"running"}) | {"interrupted"}
            status = next((st for st in ("suspended", "running", "interrupted", "failed", "forgotten")
                           if st in statuses), "completed")
            out.append({"session": name, "status": status if steps else "empty", "steps": steps,
                        "steps_completed": completed, "calls": calls, "tokens": int(tokens), "cost": cost,
                        "pending_approvals": pending, "last_activity": updated,
                        "sleeping_until": wake_at if _ahead(wake_at) else None})
        return out

    def session_calls(self, session: str) -> dict[str, list[dict[str, Any]]]:
        """The calls of each step's current epoch, in the order they were made, by step name."""
        rows = self.con.execute(
            """SELECT step, id, run_id, seq, kind, name, model, status, attempts, latency_ms,
                      prompt_tokens, completion_tokens, cost, currency, started_at, ended_at
               FROM calls WHERE session = ? AND current AND status <> 'abandoned' ORDER BY id""",
            [session],
        ).fetchall()
        keys = ("id", "run_id", "seq", "kind", "name", "model", "status", "attempts", "latency_ms",
                "prompt_tokens", "completion_tokens", "cost", "currency", "started_at", "ended_at")
        # A sleep's wake-up time, for the views that say until when a step sleeps (kernel_ext/waits.py).
        wakes = dict(self.con.execute(
            "SELECT id, meta->>'wake_at' FROM call_rows WHERE session = ? AND kind = 'value' AND name = 'sleep'",
            [session]).fetchall())
        calls: dict[str, list[dict[str, Any]]] = {}
        for step, *values in rows:
            call = dict(zip(keys, values, strict=True))
            call["wake_at"] = wakes.get(call["id"])
            calls.setdefault(step, []).append(call)
        return calls

    def call_documents(self, call_id: int) -> dict[str, Any] | None:
        """A call's row with its request and response as recorded (documents, bytes or a pickle)."""
        return self.calls_documents([call_id]).get(call_id)

    def calls_documents(self, call_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Many calls' rows with their requests and responses (see `call_documents`), by id.

        The rows come in one query and the packs holding their blobs in one more, whatever the number of
        calls: a view that shows a page of calls opens them together.
        """
        rows = self.con.execute(
            "SELECT r.id, r.session, r.step, r.kind, r.name, r.model, r.status, r.request, r.response, r.meta, "
            "(c.doc->'blobs')::VARCHAR FROM call_rows r JOIN call_records c ON c.id = r.id "
            "WHERE r.id IN (SELECT unnest(?::BIGINT[]))", [list(call_ids)],
        ).fetchall()
        calls: dict[int, dict[str, Any]] = {}
        kept: dict[int, dict[str, Any]] = {}
        for *values, inline in rows:
            call = dict(zip(("id", "session", "step", "kind", "name", "model", "status", "request", "response",
                             "meta"), values, strict=True))
            call["meta"] = _seal.open_meta(json.loads(call["meta"] or "{}")) or {}
            calls[call["id"]] = call
            kept[call["id"]] = json.loads(inline) if inline else {}
        # The packs that hold the documents' first blobs, read together into the store's cache (opened when
        # fetched); what those blobs lead to was mostly written with them, in the same packs.
        heads = [key for call in calls.values() for key in (call["request"], call["response"])
                 if key and key not in kept[call["id"]]]
        if heads:
            self._packs.get(self.con, heads)  # type: ignore[attr-defined]
        for call_id, call in calls.items():
            self._join(call, kept[call_id])
        return calls

    def _join(self, call: dict[str, Any], kept: dict[str, Any]) -> None:
        def fetch(key: str) -> bytes:  # the call's own small blobs first (see Store._inline)
            return _blobs.unpack_inline(kept[key]) if key in kept else self.fetch(key)

        call["request"] = _blobs.join_document(call["request"], fetch) if call["request"] else None
        body, response = call["meta"].get("body"), call["response"]
        if response is None:
            call["response"] = None
        elif body in ("json", "decision"):
            call["response"] = _blobs.join_document(response, fetch)
        else:
            call["response"] = fetch(response)  # raw bytes (a stream) or a pickle

    def pickles(self) -> list[tuple[str, bytes]]:
        """Every pickle the journal holds, as stored: (what it is, its bytes). For `durable trust`."""
        found: list[tuple[str, bytes]] = []
        calls = self.con.execute(
            "SELECT id, name FROM call_rows WHERE response IS NOT NULL AND meta->>'body' = 'pickle' ORDER BY id"
        ).fetchall()
        for call_id, name in calls:
            call = self.call_documents(call_id)
            if call is not None and isinstance(call["response"], bytes):
                found.append((f"call {call_id} ({name})", call["response"]))
        runs = self.con.execute(
            "SELECT id, variables FROM step_runs WHERE variables IS NOT NULL ORDER BY id").fetchall()
        for run_id, key in runs:
            for name, blob in json.loads(self.fetch(key)).items():
                found.append((f"variable {name} (run {run_id})", self.fetch(blob)))
        return found

    # -- the cells a kernel ran (for export) ---------------------------------------------------

    def record_cells(self, session: str, kernel: str, cells: list[tuple[str, str | None, str]]) -> None:
        """Remember cells (kind, step, source) in the order `kernel` ran them."""
        if not cells:
            return
        sources = _blobs.Split()
        keys = [sources.add(source.encode()) for _, _, source in cells]
        with self.transaction():
            self.put(sources)  # every source in one statement, not one per cell
            (last,) = self.con.execute(
                "SELECT coalesce(max(position), 0) FROM cells WHERE session = ? AND kernel = ?", [session, kernel]
            ).fetchone()
            rows = [[session, step, _records.encode({"kernel": kernel, "position": last + i, "kind": kind,
                                                     "source": key, "ran_at": _now()})]
                    for i, ((kind, step, _), key) in enumerate(zip(cells, keys, strict=True), start=1)]
            self.con.execute("INSERT INTO records VALUES " + ", ".join(["('cell', NULL, ?, ?, NULL, ?)"] * len(rows)),
                             [value for row in rows for value in row])

    def cells_of(self, session: str) -> list[dict[str, Any]]:
        """The cells the session's latest kernel ran, in order, each source once (its first run)."""
        rows = self.con.execute(
            """WITH latest AS (SELECT kernel FROM cells WHERE session = ? ORDER BY ran_at DESC LIMIT 1)
               SELECT kind, step, source, min(position) AS first FROM cells
               WHERE session = ? AND kernel = (SELECT kernel FROM latest)
               GROUP BY kind, step, source ORDER BY first""",
            [session, session],
        ).fetchall()
        return [{"kind": kind, "step": step, "source": self.fetch(source).decode()}
                for kind, step, source, _ in rows]

    def step_source(self, session: str, step: str) -> str | None:
        row = self.con.execute(
            "SELECT source FROM step_records WHERE session = ? AND name = ?", [session, step]
        ).fetchone()
        return self.fetch(row[0]).decode() if row and row[0] else None

    # -- prices ----------------------------------------------------------------------------------

    def set_prices(self, prices: dict[str, dict[str, Any]], source: str) -> None:
        """Replace the price table: {model: {"input": per million, "output": per million, "currency"}}."""
        rows = [[model, float(p["input"]), float(p["output"]), str(p.get("currency", "USD")), source, _now()]
                for model, p in prices.items()]
        with self.transaction():
            self.con.execute("DELETE FROM prices")
            if rows:
                self.con.executemany("INSERT INTO prices VALUES (?, ?, ?, ?, ?, ?)", rows)

    def prices(self) -> list[dict[str, Any]]:
        rows = self.con.execute(
            "SELECT model, input_per_million, output_per_million, currency, source FROM prices ORDER BY model"
        ).fetchall()
        return [dict(zip(("model", "input", "output", "currency", "source"), r, strict=True)) for r in rows]

    # -- edits -------------------------------------------------------------------------------------

    def forget_step(self, session: str, step: str) -> int:
        """Make `step` run live next time: its epoch moves on, its calls stay as history. Returns the epoch."""
        with self.transaction():
            row = self.con.execute(
                "SELECT epoch FROM step_records WHERE session = ? AND name = ?", [session, step]
            ).fetchone()
            if row is None:
                raise JournalError(f"session {session!r} has no step {step!r}; "
                                   f"its steps: {', '.join(self._step_names(session)) or 'none'}")
            _records.patch(self.con, "step", "session = ? AND step = ?", [session, step],
                           {"status": "forgotten", "updated_at": _now()}, epoch=row[0] + 1)
        # Its pack holds the old epoch's recording: a run begun from it would replay what was forgotten.
        path = self.journal.path  # type: ignore[attr-defined]
        with _pack.locked(path, shared=False, create=False):
            _pack.discard(path, [(session, step)])
        return row[0] + 1

    def fork_session(self, session: str, new: str, upto: str | None = None) -> list[str]:
        """Copy `session` into `new`: every step, or the steps first run up to and including `upto`.

        The copies keep their recorded calls (current epoch), runs and variables, so the new
        session replays the shared prefix; the original is not touched. Returns the copied steps.
        """
        with self.transaction():
            if self.con.execute("SELECT 1 FROM session_records WHERE name = ?", [session]).fetchone() is None:
                raise JournalError(f"no session {session!r} in this journal")
            if self.con.execute("SELECT 1 FROM session_records WHERE name = ?", [new]).fetchone() is not None:
                raise JournalError(f"session {new!r} exists already; pick another name for the fork")
            names = self._step_names(session)
            if upto is not None:
                if upto not in names:
                    raise JournalError(f"session {session!r} has no step {upto!r}; its steps: "
                                       f"{', '.join(names) or 'none'}")
                names = names[: names.index(upto) + 1]
            self.con.execute(
                "INSERT INTO records SELECT kind, NULL, ?, NULL, NULL, json_merge_patch(doc, ?)::VARCHAR "
                "FROM records WHERE kind = 'session' AND session = ?",
                [new, _records.encode({"created_at": _now(), "updated_at": _now(), "holder": None}), session],
            )
            if names:
                self._copy_steps(session, new, names)
        return names

    def _copy_steps(self, session: str, new: str, names: list[str]) -> None:
        params = [new, session, names]
        self.con.execute(
            "INSERT INTO records SELECT kind, NULL, ?, step, epoch, doc FROM records "
            "WHERE kind = 'step' AND session = ? AND list_contains(?, step)", params,
        )
        # Runs and calls get ids of their own; a call follows its run to the run's new id.
        self.con.execute(
            """CREATE TEMP TABLE run_map AS
               SELECT r.id AS old, nextval('run_ids') AS new FROM step_runs r
               JOIN step_records s ON s.session = r.session AND s.name = r.step AND s.epoch = r.epoch
               WHERE r.session = ? AND list_contains(?, r.step)""",
            [session, names],
        )
        try:
            self.con.execute(
                """INSERT INTO records
                   SELECT 'run', m.new, ?, r.step, r.epoch, json_merge_patch(r.doc, CASE
                       WHEN r.doc->>'status' = 'running' THEN '{"replayed_calls":null,"status":"interrupted"}'
                       ELSE '{"replayed_calls":null}' END)::VARCHAR
                   FROM records r JOIN run_map m ON m.old = r.id WHERE r.kind = 'run'""",
                [new],
            )
            (count,) = self.con.execute(
                "SELECT count(*) FROM call_records c JOIN run_map m ON m.old = (c.doc->>'run_id')::BIGINT"
            ).fetchone()
            first = self.reserve_call_ids(count)[0] if count else 0
            self.con.execute(
                """INSERT INTO records
                   SELECT 'call', ? - 1 + row_number() OVER (ORDER BY c.id), ?, c.step, c.epoch,
                          json_merge_patch(c.doc, json_object('run_id', m.new))::VARCHAR
                   FROM call_records c JOIN run_map m ON m.old = (c.doc->>'run_id')::BIGINT""",
                [first, new],
            )
            self.con.execute(
                """INSERT INTO records SELECT kind, NULL, ?, step, NULL, doc FROM records
                   WHERE kind = 'cell' AND session = ? AND (doc->>'kind' = 'setup' OR list_contains(?, step))""",
                params,
            )
        finally:
            self.con.execute("DROP TABLE run_map")

    def _step_names(self, session: str) -> list[str]:
        rows = self.con.execute(
            "SELECT name FROM step_records WHERE session = ? ORDER BY created_at", [session]
        ).fetchall()
        return [name for (name,) in rows]


def _ahead(iso: str | None) -> bool:
    """Whether a recorded wake-up time (ISO 8601 with its offset) is still to come."""
    try:
        return iso is not None and datetime.fromisoformat(iso) > datetime.now(timezone.utc)
    except (TypeError, ValueError):  # not a time this release wrote (a journal from elsewhere): no wake-up to show
        return False
