"""`durable ls` and `durable show`: a journal read in a terminal, or as JSON for machines."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from journal import Journal

from ..errors import StepError
from ..exit_codes import EXIT_COMPLETED, EXIT_FAILED
from ..history import history_text, load_history
from .terminal import echo, table


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value is not None else "-"


def list_sessions(journal: Journal, as_json: bool) -> int:
    with journal.open(read_only=True) as store:
        sessions = store.sessions_overview()
    if as_json:
        print(json.dumps(sessions, default=str, indent=2))
        return EXIT_COMPLETED
    if not sessions:
        print(f"no sessions in {journal.path}")
        return EXIT_COMPLETED
    priced = any(s["cost"] is not None for s in sessions)
    costs = ("cost",) if priced else ()
    listed = table("session", "status", "steps", "calls", "tokens", *costs, "last activity",
                   right=("steps", "calls", "tokens", *costs))
    for s in sessions:
        cost = (f"{s['cost']:.4f}" if s["cost"] is not None else "-",) if priced else ()
        last = _when(s["last_activity"])
        if s["pending_approvals"]:
            last += f"  ({s['pending_approvals']} approvals pending)"
        if s["sleeping_until"]:
            last += f"  (sleeping until {_when(datetime.fromisoformat(s['sleeping_until']))})"
        listed.add_row(s["session"], s["status"], f"{s['steps_completed']}/{s['steps']}", str(s["calls"]),
                       str(s["tokens"]), *cost, last)
    echo(listed)
    return EXIT_COMPLETED


def show_session(journal: Journal, session: str, as_json: bool, *, steps: list[str] | None = None,
                 last: int | None = None) -> int:
    """A session's steps with their calls; `steps` and `last` show a page of a long session."""
    try:
        history = load_history(journal, session, read_only=True)
    except StepError as exc:
        print(f"durable show: {exc}")
        return EXIT_FAILED
    if steps:
        unknown = sorted(set(steps) - {s.name for s in history.steps})
        if unknown:
            print(f"durable show: session {session!r} has no step {', '.join(map(repr, unknown))}; its steps: "
                  f"{', '.join(s.name for s in history.steps)}")
            return EXIT_FAILED
        history = history.only(steps)
    if last is not None:
        history = history.page(last, calls=None, rows=None)
    if as_json:
        shown = asdict(replace(history, earlier=[]))
        for drawing in ("earlier", "later", "rows"):  # where a page sits, for the pictures: its count instead
            del shown[drawing]
        print(json.dumps({**shown, "left_out": history.left_out}, default=str, indent=2))
        return EXIT_COMPLETED
    print(f"journal {journal.path}")
    print(history_text(history))
    return EXIT_COMPLETED
