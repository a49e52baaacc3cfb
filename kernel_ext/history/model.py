"""What a session did, for people: its steps and calls (one number per call, when each ran) and what
replay saved.

This model (`SessionHistory`) is the bottom of the history package and imports none of what is drawn
from it (a call's detail, the timeline, the HTML, the widget): view.py puts those together for a
caller. The plain text of `durable show` is written here, from the model alone.

A call is numbered by its position in its step ("step plan · call 2"), the number the runtime's own
messages use (strict replay, in-doubt errors). The journal's id of a call is shown only beside it, where
a command needs it (`durable settle`).
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from journal import Journal, Store, now

from ..errors import StepError

# How a call's bar is coloured, and what the legend says of it. One key per call (see CallView.shade).
SHADES: dict[str, str] = {
    "live": "live: sent to the model, or the tool ran, in the step's last run",
    "replayed": "replayed: read back from the journal, nothing sent",
    "person": "waiting for a person: an approval (the bar is how long they took)",
    "failed": "failed, or no outcome recorded (in doubt)",
    "earlier": "earlier record: not used by the step's last run",
}


@dataclass
class CallView:
    id: int  # the journal's id: what `durable settle` takes; people see `number`
    seq: int  # the call's position in its step: the number people see
    kind: str
    name: str
    model: str | None
    status: str
    attempts: int
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    currency: str | None
    live: bool  # recorded by the step's last run
    # What the step's last run did with it: live, replayed, not used by the last run (an edit changed
    # the request at its place, or a failed call was made again; kept as history), or recorded earlier
    # (a run of an older release, which did not say which calls it replayed).
    use: str = "live"
    step: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    in_doubt: bool = False  # started, no outcome, and nothing is running it any more
    wake_at: str | None = None  # a sleep's recorded wake-up time (ISO 8601, UTC)
    # An approval an earlier run asked for and the last run asked again (a restart between them): when
    # the last run asked, as its widget said ("waiting for a decision since ..."). The record keeps the
    # first request's time, so the wait is counted from this one.
    asked_again: datetime | None = None

    @property
    def number(self) -> str:
        return f"call {self.seq}"

    @property
    def ref(self) -> str:
        """The name people use for the call: its step and its number there."""
        return f"step {self.step} · call {self.seq}"

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name}" + (f" [{self.model}]" if self.model else "")

    @property
    def tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)

    @property
    def shade(self) -> str:
        """Which of SHADES the call is drawn in."""
        if self.use == "not used by the last run" or self.use == "recorded earlier":
            return "earlier"
        if self.kind == "approval":
            return "person"
        if self.status == "failed" or self.in_doubt:
            return "failed"
        return "replayed" if self.use == "replayed" else "live"

    @property
    def state(self) -> str:
        """Its status in words: an approval is decided or waiting, never live."""
        if self.kind == "approval":
            return "decided" if self.status == "completed" else "waiting for a person"
        if self.in_doubt:
            return "in doubt (no outcome recorded)"
        return self.status

    @property
    def since(self) -> datetime | None:
        """When what its bar shows began: the call's start, or the last run's request of an approval asked again."""
        return self.asked_again or self.started_at

    def seconds(self, at: datetime | None = None) -> float:
        """How long it took; a pending approval has taken until `at` (now) so far."""
        if self.since is not None and self.ended_at is not None:
            return max(0.0, (self.ended_at - self.since).total_seconds())
        if self.latency_ms is not None:
            return self.latency_ms / 1000
        if self.since is not None and self.kind == "approval" and self.status == "started":
            return max(0.0, ((at or now()) - self.since).total_seconds())
        return 0.0

    def figures(self) -> list[str]:
        """Time, tokens and cost, as short phrases."""
        parts = []
        if self.kind == "approval":
            return self._waiting()
        if self.wake_at is not None:
            parts.append(f"wakes {_wake(self.wake_at)}")
        if self.attempts > 1:
            parts.append(f"{self.attempts} attempts")
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.0f} ms")
        if self.tokens is not None:
            parts.append(f"{self.prompt_tokens or 0}+{self.completion_tokens or 0} tokens")
        if self.cost is not None:
            parts.append(money(self.cost, self.currency))
        return parts

    def _waiting(self) -> list[str]:
        """When a person was asked and how long they took, in the approval widget's own words and clock."""
        if self.since is None:
            return [f"waited {duration(self.latency_ms / 1000)}"] if self.latency_ms is not None else []
        first = [f"first asked {_clock(self.started_at)}"] if self.asked_again and self.started_at else []
        if self.status == "started":
            return [f"waiting since {_clock(self.since)}", f"{duration(self.seconds())} so far", *first]
        return [f"asked {_clock(self.since)}", f"waited {duration(self.seconds())}", *first]

    def label(self) -> str:
        parts = [f"{self.number} · {self.what}", self.state]
        if self.kind != "approval":
            parts.append(self.use)
        return " · ".join(parts + self.figures())


@dataclass
class Saved:
    """What replaying recorded calls saved, over every run of a step that replayed some."""

    calls: int = 0  # recorded calls read back instead of made again (a call replayed twice counts twice)
    model_calls: int = 0
    tool_runs: int = 0
    decisions: int = 0  # approvals read back instead of asked again
    tokens: int = 0
    cost: float | None = None  # at the prices the user set; None where none of them is priced
    currency: str | None = None
    model_seconds: float = 0.0  # how long the model took to answer them when they were recorded

    def add(self, other: Saved) -> None:
        self.calls += other.calls
        self.model_calls += other.model_calls
        self.tool_runs += other.tool_runs
        self.decisions += other.decisions
        self.tokens += other.tokens
        self.model_seconds += other.model_seconds
        if other.cost is not None:
            self.cost = (self.cost or 0.0) + other.cost
            self.currency = self.currency or other.currency

    def cost_text(self) -> str:
        if self.cost is not None:
            return f"{money(self.cost, self.currency)} at your prices"
        return "cost: no price set (%durable prices FILE)"

    def short(self) -> str:
        """In a step's line: tokens where some were saved, else the calls."""
        if self.tokens:
            return f"replay saved {self.tokens:,} tokens"
        return f"replay saved {_count(self.calls, 'call')}" if self.calls else ""

    def text(self) -> str:
        if not self.calls:
            return "replay saved nothing yet: no run has replayed a recorded call"
        made = [_count(n, noun) for n, noun in ((self.model_calls, "model call"), (self.tool_runs, "tool run"),
                                                 (self.decisions, "decision")) if n]
        return (f"replay saved {_count(self.calls, 'call')} ({', '.join(made)}): {self.tokens:,} tokens, "
                f"{self.cost_text()}, {duration(self.model_seconds)} of model time")


@dataclass
class StepView:
    name: str
    status: str
    runs: int
    seconds: float | None
    live: int | None
    replayed: int | None
    tokens: int
    cost: float | None
    calls: list[CallView] = field(default_factory=list)
    saved: Saved = field(default_factory=Saved)
    budget: str | None = None  # what its budgets left when its last run ended

    def label(self) -> str:
        mark = {"completed": "✓", "failed": "✗", "suspended": "⏸", "running": "…", "interrupted": "■"}.get(
            self.status, "·")
        parts = [f"{mark} {self.name}", self.status, _count(len(self.calls), "call")]
        if self.status in ("running", "suspended") and self.calls and self.calls[-1].wake_at is not None:
            parts.append(f"sleeping until {_wake(self.calls[-1].wake_at)}")
        if self.live is not None:
            parts.append(f"last run {self.replayed} replayed, {self.live} live")
        if self.seconds is not None:
            parts.append(f"{self.seconds:.1f} s")
        if self.tokens:
            parts.append(f"{self.tokens:,} tokens")
        if self.cost is not None:
            parts.append(money(self.cost, self.calls[0].currency if self.calls else None))
        if self.saved.calls:
            parts.append(self.saved.short())
        if self.budget:
            parts.append(self.budget)
        return " · ".join(parts)


# A long session's history opens on its latest page: drawing every step of a session of thousands
# costs seconds and megabytes in the notebook. Earlier pages open on request; `durable show` has all.
PAGE_STEPS = 50
PAGE_CALLS = 300  # calls in a page at most, unless its one step has more
PAGE_ROWS = 200  # calls of one step listed in a page; the rest are counted


@dataclass
class Totals:
    """A session's figures over all its steps: the same whichever page of them is shown."""

    steps: int = 0
    calls: int = 0
    tokens: int = 0
    cost: float | None = None
    currency: str | None = None
    live: int = 0  # calls drawn live (CallView.shade)
    replayed: int = 0

    @classmethod
    def of(cls, steps: list[StepView]) -> Totals:
        costs = [s.cost for s in steps if s.cost is not None]
        calls = [c for s in steps for c in s.calls]
        shades = Counter(c.shade for c in calls)
        return cls(len(steps), len(calls), sum(s.tokens for s in steps), sum(costs) if costs else None,
                   next((c.currency for c in calls if c.currency), None), shades["live"], shades["replayed"])


@dataclass
class SessionHistory:
    session: str
    journal: str
    steps: list[StepView]  # the steps shown: all of them, or a page
    saved: Saved = field(default_factory=Saved)
    overall: Totals = None  # type: ignore[assignment]  # the whole session's; from `steps` when not given
    # The steps before the page, oldest first, not shown: kept so an earlier page opens without the journal.
    earlier: list[StepView] = field(default_factory=list, repr=False, compare=False)
    later: int = 0  # steps after the page, not shown
    rows: int | None = None  # calls listed per step at most (a page in a notebook); None: every call

    def __post_init__(self) -> None:
        if self.overall is None:
            self.overall = Totals.of(self.steps)

    @property
    def calls(self) -> int:
        return self.overall.calls

    @property
    def tokens(self) -> int:
        return self.overall.tokens

    @property
    def cost(self) -> float | None:
        return self.overall.cost

    @property
    def currency(self) -> str | None:
        return self.overall.currency

    def totals(self) -> str:
        cost = f", {money(self.cost, self.currency)} where priced" if self.cost is not None else ""
        return (f"session {self.session!r}: {_count(self.overall.steps, 'step')}, {_count(self.calls, 'call')}, "
                f"{self.tokens:,} tokens{cost}")

    @property
    def left_out(self) -> int:
        """Steps of the session not shown."""
        return self.overall.steps - len(self.steps)

    def page(self, steps: int = PAGE_STEPS, calls: int | None = PAGE_CALLS,
             rows: int | None = PAGE_ROWS) -> SessionHistory:
        """The latest of the steps shown: at most `steps` of them, holding at most `calls` calls (None: any
        number), each listing at most `rows` calls (None: all). The others wait in `earlier`."""
        n = _fitting(self.steps, steps, calls)
        cut = len(self.steps) - n
        return replace(self, steps=self.steps[cut:], earlier=[*self.earlier, *self.steps[:cut]], rows=rows)

    def earlier_page(self, steps: int = PAGE_STEPS, calls: int | None = PAGE_CALLS) -> SessionHistory | None:
        """The page just before this one; None at the session's first step."""
        n = _fitting(self.earlier, steps, calls)
        if not n:
            return None
        cut = len(self.earlier) - n
        return replace(self, steps=self.earlier[cut:], earlier=self.earlier[:cut],
                       later=self.later + len(self.steps))

    def only(self, names: list[str]) -> SessionHistory:
        """The steps named; the totals stay the session's."""
        return replace(self, steps=[s for s in self.steps if s.name in names], earlier=[], later=0)

    def note(self) -> str:
        """One line on the steps not shown and how to see them; empty when every step is shown."""
        if not self.left_out:
            return ""
        shown = f"{len(self.steps):,} of {self.overall.steps:,} steps shown"
        command = f"durable show {shlex.quote(self.session)}"
        if len(self.earlier) + len(self.steps) + self.later != self.overall.steps:  # a choice of steps
            return f"{shown}: {command} lists every step"
        first = len(self.earlier) + 1
        where = ("the latest" if not self.later else f"steps {first:,} to {first + len(self.steps) - 1:,}")
        hidden = [f"{n:,} {when}" for n, when in ((len(self.earlier), "earlier"), (self.later, "later")) if n]
        return f"{shown} ({where}; {' and '.join(hidden)} not shown): {command} --last N, or --step NAME"


def _fitting(steps: list[StepView], most: int, calls: int | None) -> int:
    """How many of the last of `steps` make a page: at most `most`, within `calls` calls, yet one step at least."""
    n = count = 0
    for step in reversed(steps):
        if n >= most or (n and calls is not None and count + len(step.calls) > calls):
            break
        n += 1
        count += len(step.calls)
    return n


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def money(value: float, currency: str | None) -> str:
    """An amount with the digits that matter: a call often costs a fraction of a cent."""
    if value == 0 or abs(value) >= 0.01:
        text = f"{value:.4f}" if abs(value) < 100 else f"{value:,.2f}"
    else:
        text = f"{value:.2g}" if abs(value) >= 1e-4 else f"{value:.2e}"
        text = f"{float(text):.8f}".rstrip("0")
    return f"{text} {currency or ''}".rstrip()


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def load_history(journal: Journal, session: str, *, read_only: bool = False) -> SessionHistory:
    """A session's steps and calls, every one of them, in a few queries whatever their number (a page is
    cut from it: `SessionHistory.page`); `read_only` for a command that only reads (see `Journal.open`)."""
    with journal.open(read_only=read_only) as store:
        store.require_key()
        steps = store.steps_of(session)
        if not steps:
            names = [s["session"] for s in store.sessions_overview()]
            if session not in names:
                raise StepError(f"no session {session!r} in {journal.path}; sessions: {', '.join(names) or 'none'}")
        calls = store.session_calls(session)
        saved = _saved_by_step(store, session)
        began = dict(store.con.execute(
            "SELECT step, arg_max(started_at, id) FROM step_runs WHERE session = ? GROUP BY step",
            [session]).fetchall())
    views = []
    for s in steps:
        # In the order of their numbers, an earlier record just before the call that took its place.
        recorded = sorted(calls.get(s["name"], []), key=lambda c: (c["seq"], c["id"]))
        uses = _uses(recorded, s["last_run_id"], s["last_run_replayed_calls"], began.get(s["name"]))
        step_calls = [CallView(c["id"], c["seq"], c["kind"], c["name"], c["model"], c["status"],
                               c["attempts"] or 1, c["latency_ms"], c["prompt_tokens"], c["completion_tokens"],
                               c["cost"], c["currency"], c["run_id"] == s["last_run_id"], uses[c["id"]][0],
                               step=s["name"], started_at=c["started_at"], ended_at=c["ended_at"],
                               in_doubt=(c["status"] == "started" and c["kind"] != "approval"
                                         and s["status"] != "running"), wake_at=c.get("wake_at"),
                               asked_again=uses[c["id"]][1] if c["kind"] == "approval" else None)
                      for c in recorded]
        views.append(StepView(s["name"], s["status"], s["runs"], s["last_run_seconds"], s["last_run_live"],
                              s["last_run_replayed"], int(s["tokens"] or 0), s["cost"], step_calls,
                              saved.get(s["name"], Saved()), s.get("last_run_budget")))
    total = Saved()
    for step in views:
        total.add(step.saved)
    return SessionHistory(session, str(journal.path), views, total)


def _uses(calls: list[dict[str, Any]], last_run: int | None, replayed: set[int] | None,
          began: datetime | None) -> dict[int, tuple[str, datetime | None]]:
    """What a step's last run did with each of its calls, and when it asked again for those it resumed.

    A call keeps the run that first recorded it: an approval asked before a restart and decided after it,
    or a tool in doubt run again, is finished by a later run under its first run's id, and that run does
    not replay it either. The last run used such a call if it got to its place (no call of its own or
    replayed by it stands there) and the call was still open when that run began.
    """
    if replayed is None:  # a run of an older release, which did not say which calls it replayed
        return {c["id"]: ("live" if c["run_id"] == last_run else "recorded earlier", None) for c in calls}
    own = [c for c in calls if c["run_id"] == last_run]
    taken = {c["seq"] for c in own} | {c["seq"] for c in calls if c["id"] in replayed}
    reached = max(taken, default=0)
    uses: dict[int, tuple[str, datetime | None]] = {}
    for c in sorted(calls, key=lambda c: (c["seq"], c["id"])):
        if c["run_id"] == last_run:
            uses[c["id"]] = ("live", None)
        elif c["id"] in replayed:
            uses[c["id"]] = ("replayed", None)
        elif (began is not None and c["seq"] not in taken and c["seq"] <= reached + 1
              and (c["ended_at"] is None or c["ended_at"] >= began)):
            # Asked again when the run got there: after what it made live before it (replaying takes no time).
            before = [o["ended_at"] for o in own if o["seq"] < c["seq"] and o["ended_at"] is not None]
            uses[c["id"]] = ("live", max([began, *before]))
            reached = max(reached, c["seq"])
        else:
            uses[c["id"]] = ("not used by the last run", None)
    return uses


def _saved_by_step(store: Store, session: str) -> dict[str, Saved]:
    """Every run's replayed calls (the ids each step run noted), priced and timed as when recorded."""
    replays: Counter[int] = Counter()
    for (raw,) in store.con.execute(
            "SELECT replayed_calls FROM step_runs WHERE session = ? AND replayed_calls IS NOT NULL",
            [session]).fetchall():
        replays.update(json.loads(raw))
    if not replays:
        return {}
    saved: dict[str, Saved] = {}
    rows = store.con.execute(
        "SELECT id, step, kind, prompt_tokens, completion_tokens, cost, currency, latency_ms FROM calls "
        "WHERE session = ? AND id IN (SELECT unnest(?::BIGINT[]))", [session, list(replays)]).fetchall()
    for call_id, step, kind, prompt, completion, cost, currency, latency_ms in rows:
        times = replays.get(call_id, 0)
        if not times:
            continue
        one = Saved(calls=times)
        if kind == "llm":
            one.model_calls = times
            one.tokens = times * ((prompt or 0) + (completion or 0))
            one.model_seconds = times * (latency_ms or 0) / 1000
            if cost is not None:
                one.cost, one.currency = times * cost, currency
        elif kind == "tool":
            one.tool_runs = times
        elif kind == "approval":
            one.decisions = times
        saved.setdefault(step, Saved()).add(one)
    return saved


# -- text, for terminals (`durable show`) and a notebook's text/plain fallback ----------------------

def history_text(history: SessionHistory) -> str:
    lines = [history.totals(), history.saved.text()]
    if history.left_out:
        lines.append(history.note())
    for step in history.steps:
        lines.append(f"  {step.label()}")
        shown = step.calls if history.rows is None else step.calls[:history.rows]
        for call in shown:
            line = f"      {call.label()}"
            if call.in_doubt and call.kind == "tool":  # the one place a person needs the journal's id
                line += (f" · journal id {call.id}: durable settle {shlex.quote(history.session)} {call.id} "
                         "--value JSON | --retry")
            lines.append(line)
        if len(shown) < len(step.calls):
            lines.append(f"      … {len(step.calls) - len(shown):,} more calls: durable show "
                         f"{shlex.quote(history.session)} --step {shlex.quote(step.name)}")
    return "\n".join(lines)


def _clock(moment: datetime) -> str:
    """A journal time (naive UTC) as the approval widget shows one."""
    return moment.strftime("%H:%M UTC")


def _wake(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso
