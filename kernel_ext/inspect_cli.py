"""`durable ls` and `durable show`: a journal read in a terminal, or as JSON for machines."""

from __future__ import annotations

import json
from typing import Any

from journal import Journal

from .cli_codes import EXIT_COMPLETED, EXIT_FAILED


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value is not None else "-"


def list_sessions(journal: Journal, as_json: bool) -> int:
    with journal.open() as store:
        sessions = store.sessions_overview()
    if as_json:
        print(json.dumps(sessions, default=str, indent=2))
        return EXIT_COMPLETED
    if not sessions:
        print(f"no sessions in {journal.path}")
        return EXIT_COMPLETED
    width = max(len("session"), *(len(s["session"]) for s in sessions))
    print(f"{'session':<{width}}  {'status':<10} {'steps':>7} {'calls':>6} {'tokens':>8}  last activity")
    for s in sessions:
        steps = f"{s['steps_completed']}/{s['steps']}"
        print(f"{s['session']:<{width}}  {s['status']:<10} {steps:>7} {s['calls']:>6} {s['tokens']:>8}  "
              f"{_when(s['last_activity'])}")
    return EXIT_COMPLETED


def show_session(journal: Journal, session: str, as_json: bool) -> int:
    with journal.open() as store:
        known = {s["session"] for s in store.sessions_overview()}
        if session not in known:
            print(f"durable show: no session {session!r} in {journal.path}; sessions: "
                  f"{', '.join(sorted(known)) or 'none'}")
            return EXIT_FAILED
        steps = store.steps_of(session)
        calls = store.session_calls(session)
    if as_json:
        print(json.dumps({"session": session, "steps": [{**step, "calls": calls.get(step["name"], [])}
                                                        for step in steps]}, default=str, indent=2))
        return EXIT_COMPLETED
    print(f"session {session!r}  ({len(steps)} steps, journal {journal.path})")
    for step in steps:
        print(f"\nstep {step['name']!r}: {step['status']}, {step['runs']} runs, {step['calls']} calls, "
              f"{step['tokens']} tokens, last run {_when(step['updated_at'])}")
        for call in calls.get(step["name"], []):
            model = f" [{call['model']}]" if call["model"] else ""
            tokens = ""
            if call["prompt_tokens"] is not None:
                tokens = f"  {call['prompt_tokens']}+{call['completion_tokens'] or 0} tokens"
            latency = f"  {call['latency_ms']:.0f} ms" if call["latency_ms"] is not None else ""
            attempts = f"  {call['attempts']} attempts" if (call["attempts"] or 1) > 1 else ""
            print(f"  {call['seq']:>3}. {call['kind']:<8} {call['name']}{model}  {call['status']}"
                  f"{attempts}{latency}{tokens}")
    return EXIT_COMPLETED
