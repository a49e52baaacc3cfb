"""`durable ls/show/approve --dbos URL`: sessions that ran on DBOS, read from DBOS's own tables.

A session on DBOS is a workflow (`dbos.workflow_status`) whose journaled calls are its steps
(`dbos.operation_outputs`, see workflow.py); the notebook's replayed calls are counted in each step's
end row. An approval is decided by sending the workflow a message on the approval's topic.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

from ...errors import StepError
from .workflow import APPROVAL_TOPIC, ROW

WORKFLOW = "durable.session"
_STATUS = {"SUCCESS": "completed", "PENDING": "running", "ENQUEUED": "queued", "DELAYED": "queued",
           "ERROR": "failed", "CANCELLED": "cancelled", "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "failed"}


def resolve_url(given: str | None) -> str:
    """`--dbos URL`, or `--dbos` alone for $DBOS_SYSTEM_DATABASE_URL."""
    url = given or os.environ.get("DBOS_SYSTEM_DATABASE_URL")
    if not url:
        raise StepError("--dbos needs a URL (postgresql://... or sqlite:///...), or DBOS_SYSTEM_DATABASE_URL set")
    return url


def _client(url: str) -> Any:
    try:
        from dbos import DBOSClient
    except ImportError:
        raise StepError("reading DBOS needs the dbos package: pip install 'durable-kernel[dbos]'") from None
    try:
        return DBOSClient(system_database_url=url)
    except Exception as exc:  # noqa: BLE001 - a bad URL or a server that is down: one line
        raise StepError(f"cannot open the DBOS database: {type(exc).__name__}: {_safe(str(exc), url)}") from None


def _safe(text: str, url: str) -> str:
    from urllib.parse import urlsplit

    # A URL's password must not reach a terminal or a log through an error message.
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def _time(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def session_rows(client: Any, workflow_id: str) -> list[dict[str, Any]]:
    """The journaled calls and step ends of a session, in order, each with its DBOS function id."""
    rows = []
    for info in client.list_workflow_steps(workflow_id):
        if info["function_name"].startswith(ROW) and isinstance(info["output"], dict):
            rows.append({"function_id": info["function_id"], **info["output"]})
    return rows


def _summary(status: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    calls = [r for r in rows if "kind" in r and "finish" not in r]
    finished = {r["finish"] for r in rows if "finish" in r}
    pending = [r["meta"]["key"] for r in calls if r["kind"] == "approval" and r["function_id"] not in finished]
    state = _STATUS.get(status.status, status.status.lower())
    if state == "running" and pending:
        state = "waiting"
    wake = _wake_at(calls) if state == "running" else None
    if wake is not None:
        state = "sleeping"
    return {"session": status.workflow_id, "status": state, "wake_at": wake, "steps": sum("end" in r for r in rows),
            "calls_live": len(calls), "calls_replayed": sum(r.get("replayed", 0) for r in rows if "end" in r),
            "tokens": sum(r.get("tokens", 0) for r in calls), "pending_approvals": pending,
            "executor": status.executor_id, "updated": _time(status.updated_at)}


def _wake_at(calls: list[dict[str, Any]]) -> str | None:
    """The recorded wake-up time of a sleep the session's last call began, while it is still ahead."""
    last = calls[-1] if calls else None
    wake = (last.get("meta") or {}).get("wake_at") if last is not None and last.get("name") == "sleep" else None
    try:
        return wake if wake is not None and datetime.fromisoformat(wake) > datetime.now(timezone.utc) else None
    except (TypeError, ValueError):  # not a time this release wrote: no wake-up to show
        return None


def list_dbos_sessions(url: str, as_json: bool) -> int:
    client = _client(url)
    try:
        found = [_summary(s, session_rows(client, s.workflow_id))
                 for s in client.list_workflows(name=WORKFLOW, load_input=False, load_output=False)]
    finally:
        client.destroy()
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no sessions ran on DBOS in this database")
        return 0
    print(f"{'SESSION':24} {'STATUS':10} {'STEPS':>5} {'LIVE':>5} {'REPLAYED':>8} {'TOKENS':>7}  EXECUTOR   UPDATED")
    for s in found:
        waiting = f"  approvals: {', '.join(s['pending_approvals'])}" if s["pending_approvals"] else ""
        waiting += f"  sleeping until {s['wake_at']}" if s["wake_at"] else ""
        print(f"{s['session'][:24]:24} {s['status']:10} {s['steps']:>5} {s['calls_live']:>5} "
              f"{s['calls_replayed']:>8} {s['tokens']:>7}  {(s['executor'] or '-')[:10]:10} {s['updated']}{waiting}")
    return 0


def show_dbos_session(url: str, session: str, as_json: bool) -> int:
    client = _client(url)
    try:
        found = client.list_workflows(workflow_ids=[session], load_input=False)
        if not found:
            raise StepError(f"no session {session!r} in the DBOS database")
        status, rows = found[0], session_rows(client, session)
    finally:
        client.destroy()
    summary = _summary(status, rows)
    if as_json:
        print(json.dumps({**summary, "result": status.output, "calls": rows}, indent=2, default=_opaque))
        return 0
    print(f"session {session}: {summary['status']} (executor {summary['executor'] or '-'}, "
          f"updated {summary['updated']})")
    if summary["wake_at"]:
        print(f"  sleeping until {summary['wake_at']}")
    finishes = {r["finish"]: r for r in rows if "finish" in r}
    for row in rows:
        if "end" in row:
            print(f"  step {row['end']!r}: {row['status']}, {row['live']} live, {row['replayed']} replayed "
                  f"from the notebook's recording" + (f"; {row['error']}" if row.get("error") else ""))
        elif "kind" in row and "finish" not in row:
            outcome = finishes.get(row["function_id"], row)
            print(f"    #{row['function_id']:<4} {row['kind']:9} {row['name'][:40]:40} {outcome['status']}")
    if status.output is not None:
        print(f"  result: {json.dumps(status.output, ensure_ascii=False)[:200]}")
    return 0


def _opaque(value: Any) -> str:
    return f"<{len(value)} bytes>" if isinstance(value, bytes) else str(value)


def decide_dbos(url: str, session: str, key: str, approved: bool, comment: str | None) -> str:
    """`durable approve SESSION KEY --dbos URL`: send the decision to the waiting workflow."""
    from ...approvals import make_decision

    client = _client(url)
    try:
        rows = session_rows(client, session)
        finished = {r["finish"] for r in rows if "finish" in r}
        waiting = [r for r in rows if r.get("kind") == "approval" and r["function_id"] not in finished]
        if key not in [r["meta"]["key"] for r in waiting]:
            known = [r["meta"]["key"] for r in waiting]
            raise StepError(f"no pending approval {key!r} in session {session!r} on DBOS; pending: "
                            f"{', '.join(known) if known else 'none'}")
        decision = make_decision(key, approved, by=f"{_who()} (cli)", comment=comment)
        client.send(session, decision.to_json(), topic=APPROVAL_TOPIC + key)
    finally:
        client.destroy()
    verdict = "approved" if approved else "rejected"
    return f"{verdict} {key!r} in session {session!r}; its workflow goes on on whichever worker runs it"


def _who() -> str:
    from ...approvals import _who as who

    return who()
