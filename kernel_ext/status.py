"""Short, readable accounts of a session and of a step run, for notebooks and terminals."""

from __future__ import annotations

import html
from typing import Any

from .approvals import decide_command, journal_option
from .budgets import left as budget_left
from .cli.terminal import plain, table
from .notebook.outputs import DURABLE_METADATA
from .runtime import ActiveStep, Session


def summary_output(active: ActiveStep, seconds: float | None = None) -> dict[str, Any] | None:
    """The one-line account shown under a durable cell: calls replayed (and when recorded), calls live."""
    warnings = active.warning_lines()
    if active.live + active.replayed == 0 and not warnings:
        return None
    parts = []
    if active.replayed:
        when = ""
        if active.replayed_from:
            first, last = (t.strftime("%Y-%m-%d %H:%M UTC") for t in active.replayed_from)
            when = f" (recorded {first})" if first == last else f" (recorded {first} to {last})"
        parts.append(f"{active.replayed} replayed from the journal{when}")
    if active.live:
        parts.append(f"{active.live} live, journaled")
    if active.tokens_replayed:  # what this run paid for, apart from what the journal gave back
        parts.append(f"{active.tokens - active.tokens_replayed:,} tokens spent in this run, "
                     f"{active.tokens_replayed:,} recorded")
    elif active.tokens:
        parts.append(f"{active.tokens:,} tokens")
    if not parts:
        parts.append("no call journaled")
    if active.budgets and (left := budget_left(active)) is not None:
        parts.append(left)
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    text = f"durable step {active.name!r}: " + ", ".join(parts)
    mark = "\u21bb " if active.replayed else "\u2713 "
    state: dict[str, Any] = {"step": active.name, "replayed": active.replayed, "live": active.live}
    if warnings:
        state["warnings"] = warnings
    return {
        "output_type": "display_data",
        "data": {
            "text/plain": "\n".join([mark + text, *(f"\u26a0 {w}" for w in warnings)]),
            "text/html": step_line_html(mark + text, [f"\u26a0 {w}" for w in warnings]),
        },
        "metadata": {DURABLE_METADATA: state},
    }


# Set apart from the cell's own output by a rule and a tint, in the theme's text colour (readable on
# light and dark themes alike), in the notebook's code font so that counts line up.
_LINE_STYLE = ("border-left:3px solid #2563eb;background:rgba(37,99,235,.07);padding:3px 10px;margin:4px 0;"
               "font-family:var(--jp-code-font-family,monospace);font-size:var(--jp-code-font-size,13px)")


def step_line_html(text: str, warnings: list[str] | None = None) -> str:
    """A durable step's line (progress or summary) as HTML, with its warnings under it."""
    extra = "".join(f'<div style="color:#b45309;font-weight:600">{html.escape(w)}</div>' for w in warnings or [])
    return f'<div style="{_LINE_STYLE}"><div>{html.escape(text)}</div>{extra}</div>'


def render_status(session: Session) -> str:
    if not session.journal.path.exists():  # a look must not create the journal (or its folder)
        return (f"session {session.name!r}  journal {session.journal.path} (not there yet)\n"
                "no steps yet: run a %%durable cell")
    with session.journal.open() as store:
        steps = store.steps_of(session.name)
        holder = store.session_holder(session.name)
    lines = [f"session {session.name!r}  journal {session.journal.path}"]
    if holder is not None:
        lines.append(f"driven by {holder.describe()}")
    if not steps:
        lines.append("no steps yet: run a %%durable cell")
        return "\n".join(lines)
    shown = table("step", "status", "calls", "tokens", "runs", "last run", right=("calls", "tokens", "runs"))
    for s in steps:
        shown.add_row(s["name"], s["status"], str(s["calls"]), str(s["tokens"]), str(s["runs"]),
                      f"{s['updated_at']:%Y-%m-%d %H:%M:%S} UTC")
    lines.append(plain(shown))
    return "\n".join(lines)


def render_approvals(session: Session) -> str:
    if not session.journal.path.exists():
        return f"session {session.name!r} has no approvals (no journal at {session.journal.path} yet)"
    with session.journal.open() as store:
        approvals = store.approvals(session.name)
    if not approvals:
        return f"session {session.name!r} has no approvals"
    lines = [f"approvals of session {session.name!r}:"]
    for a in approvals:
        decision = a["decision"]
        if decision is None:
            state = (f"PENDING since {a['requested_at']:%Y-%m-%d %H:%M} UTC: "
                     f"{decide_command(session.name, a['key'], journal_option(session.journal))}")
        else:
            verdict = "approved" if decision["approved"] else "rejected"
            comment = f" ({decision['comment']})" if decision.get("comment") else ""
            state = f"{verdict} by {decision['by']} at {decision['at'][:16].replace('T', ' ')} UTC{comment}"
        lines.append(f"  {a['key']}  [{a['step']}]  {a['prompt']}\n      {state}")
    return "\n".join(lines)
