"""Human approvals as durable promises.

`approve(...)` records a pending approval in the journal and returns either the recorded
`Decision`, or a `PendingApproval`. Awaiting it (`decision = await approve(...)`) waits in
place: on ipykernel >= 7.4 widget clicks reach a cell suspended in `await`, and a decision
made from the CLI is noticed by polling the journal, which the waiting step releases so the
CLI can write to it. Using a pending approval without `await` (reading `.approved`, `if
decision:`) suspends the step: it stops with `StepSuspended`, and its next run goes on from
the decision. Where nobody can click (`durable run`, nbclient; DURABLE_HEADLESS=1) an
undecided approval suspends at once. The decision is journaled before anything acts on it.

A plain Python process (an exported script) has no widget. Run from a terminal, it asks there
and journals the answer; a decision made meanwhile with `durable approve` counts as well. With
no terminal (cron, CI, a service) it suspends at once: a scheduled job should end and say what
it waits for rather than sit on a decision that may take days; its next run goes on from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import re
import select
import shlex
import sys
import textwrap
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from journal import Journal, Split, default_path, digest, split_document

from .errors import StepError, UnreadRejectionError
from .runtime import ActiveStep, active_step, env_flag
from .secrets import redact_document

POLL_SECONDS = 1.0  # how often a waiting kernel looks for a decision made elsewhere (the CLI)


_VERDICT = frozenset({"approved", "rejected", "timed_out"})


@dataclass(frozen=True)
class Decision:
    """The outcome of an approval: who decided what, when, with which comment and edited data."""

    approved: bool
    by: str
    at: str  # ISO 8601, UTC
    key: str
    comment: str | None = None
    data: Any = None
    timed_out: bool = False

    @property
    def rejected(self) -> bool:
        return not self.approved

    def __getattribute__(self, name: str) -> Any:
        if name in _VERDICT:
            object.__setattr__(self, "_read", True)  # the code looked at the verdict (see gate)
        return object.__getattribute__(self, name)

    def __bool__(self) -> bool:
        return self.approved

    def __await__(self) -> Generator[Any, None, Decision]:
        # `await approve(...)` works the same whether or not the decision is already recorded.
        return self
        yield  # pragma: no cover - makes this a generator

    @property
    def read(self) -> bool:
        """Whether the code looked at the verdict (approved, rejected, timed_out, or its truth)."""
        return self.__dict__.get("_read", False)

    def gate(self, step: ActiveStep, ending: bool) -> bool:
        """May `step` go on past this decision? An approval, or a rejection the code read, lets it."""
        if self.__dict__.get("approved") or self.read or ending:
            return True
        raise UnreadRejectionError(step.name, self.key, self.__dict__.get("by", "?"))

    def to_json(self) -> dict[str, Any]:
        # Not asdict(): reading the fields through the object would count as the code reading them.
        return {f.name: self.__dict__[f.name] for f in fields(self)}

    def copy(self) -> Decision:
        """The same decision as a new object, for showing it without marking this one read."""
        return Decision(**self.to_json())


def make_decision(key: str, approved: bool, *, by: str | None = None, comment: str | None = None,
                  data: Any = None, timed_out: bool = False) -> Decision:
    return Decision(approved=approved, by=by or _who(), at=datetime.now(timezone.utc).isoformat(), key=key,
                    comment=comment or None, data=data, timed_out=timed_out)


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


class StepSuspended(BaseException):  # noqa: N818 - it is a state, not a failure
    """A step stopped to wait for a decision. A BaseException: agent code must not swallow it."""

    suspends_step = True  # read by Session.step, which records the run as suspended

    def __init__(self, session: str, step: str, key: str, prompt: str, *, journal: str | None = None,
                 script: bool = False) -> None:
        self.session, self.step, self.key, self.prompt = session, step, key, prompt
        self.command = decide_command(session, key, journal)
        how = "Decide with" if script else "Decide in the approval widget, or run"
        then = "then run the script again" if script else "then run the step again"
        super().__init__(f"step {step!r} is waiting for approval {key!r} ({prompt}). {how}: {self.command}; {then}.")

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"\u23f8 {self}"]


class PendingApproval:
    """An approval without a decision yet: `await` it to wait, or use it to suspend the step."""

    def __init__(self, active: ActiveStep, call_id: int, key: str, prompt: str, details: Any,
                 deadline: datetime | None) -> None:
        self.active, self.call_id, self.key = active, call_id, key
        self.prompt, self.details, self.deadline = prompt, details, deadline
        self.journal: Journal = active.session.journal
        self._clicked: Decision | None = None
        self._handed: Decision | None = None  # the decision the code was given, by await or by reading
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None  # woken by a click
        self._view = _present(self)
        active.gates.append(self.gate)

    def gate(self, ending: bool) -> bool:
        """May the step go on past this approval? Not while it is undecided (see ActiveStep.pass_gates)."""
        decision = self._decision()
        if decision is None:
            decision = self.poll()
        if decision is None:
            self._suspend()
        if self._handed is None:
            self._handed = decision
        return decision.gate(self.active, ending)

    def _decision(self) -> Decision | None:
        # Never `a or b`: truth-testing a Decision reads its verdict (and a rejection is falsy).
        return self._handed if self._handed is not None else self._clicked

    def decide(self, approved: bool, *, comment: str | None = None, data: Any = None,
               by: str | None = None) -> Decision:
        """Record a decision (the widget calls this); the first decision recorded wins."""
        return self._record(make_decision(self.key, approved, by=by, comment=comment, data=data))

    def expire(self) -> Decision | None:
        """Reject the approval if its deadline has passed (journaled like any decision)."""
        if self.deadline is None or _now() < self.deadline:
            return None
        return self._record(make_decision(self.key, False, by="timeout", comment="no decision before the timeout",
                                          timed_out=True))

    def _record(self, decision: Decision) -> Decision:
        with self.active.session.journal_store() as store:  # this process's one connection
            store.decide(self.call_id, decision.to_json())
            recorded = _decision_of(store, self.call_id)  # the first decision wins
        self._clicked = recorded if recorded is not None else decision
        if self._waiter is not None:  # the click may be handled on another thread than the waiting loop's
            loop, clicked = self._waiter
            loop.call_soon_threadsafe(clicked.set)
        return self._clicked.copy()  # shown by the widget: showing it is not the code reading it

    def recorded(self) -> Decision | None:
        # Asked every POLL_SECONDS while a person decides: the file is let go at once after each look.
        with self.active.session.journal_store(linger=False) as store:
            return _decision_of(store, self.call_id)

    def __await__(self) -> Generator[Any, None, Decision]:
        return self._wait().__await__()

    async def _wait(self) -> Decision:
        if _headless() or not _in_kernel():
            self._suspend()
        last_poll = 0.0
        self.active.waiting = (f"a person to decide approval {self.key!r}", time.monotonic())  # the progress line
        clicked = asyncio.Event()
        self._waiter = (asyncio.get_running_loop(), clicked)
        try:
            while True:
                decision = self._clicked
                if decision is None and time.monotonic() - last_poll >= POLL_SECONDS:
                    last_poll = time.monotonic()
                    self.active.notify("waiting")
                    decision = self.poll()
                if decision is not None:
                    _show_decision(self, decision)
                    self._handed = decision
                    return decision
                # A click is handled while this coroutine waits, and wakes it; else the next look elsewhere.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(clicked.wait(), max(0.0, last_poll + POLL_SECONDS - time.monotonic()))
        finally:
            self._waiter = None
            self.active.waiting = None

    def poll(self) -> Decision | None:
        """A decision made elsewhere (the CLI, another terminal) meanwhile, or the timeout's rejection."""
        decision = self.recorded()
        if decision is None:  # not `or`: a rejection is a falsy Decision
            decision = self.expire()
        return decision

    def _suspend(self) -> None:
        raise StepSuspended(self.active.session.name, self.active.name, self.key, self.prompt,
                            journal=journal_option(self.journal), script=not _in_kernel())

    def __getattr__(self, name: str) -> Any:
        if name in {"approved", "rejected", "by", "at", "comment", "data", "timed_out"}:
            decision = self._decision()
            if decision is None:
                decision = self.recorded()
            if decision is None:
                self._suspend()
            self._handed = decision
            return getattr(decision, name)
        raise AttributeError(name)

    def __bool__(self) -> bool:
        return bool(self.approved)


def approve(prompt: str, *, key: str | None = None, details: Any = None,
            timeout: float | None = None) -> Decision | PendingApproval:
    """Ask a person to approve something; the decision is journaled and replayed ever after.

    Args:
        prompt: what is being asked, in one line.
        key: a stable name for this approval (default: derived from the prompt and details);
            `durable approve SESSION KEY` decides it from a terminal.
        details: data shown with the prompt (for a tool: its name and arguments).
        timeout: seconds to wait; then the approval is rejected, and that is journaled too.
    """
    active = active_step()
    if active is None:
        raise StepError("approve() records its decision in the journal, so it needs a durable step "
                        "(a %%durable cell or `with step(...)`)")
    details = redact_document(_jsonable(details))
    key = key or _default_key(prompt, details)
    request = Split()
    fingerprint = split_document({"approval": key}, request)
    claim = active.claim(fingerprint, f"approval {key}", {"approval": key}, kind="approval")
    if claim.recorded is not None:
        decision = Decision(**json.loads(claim.recorded.data))
        _show_decision_for(key, prompt, details, decision)
        return _gated(active, decision)
    # The deadline is fixed when the approval is first requested and survives restarts.
    recorded_deadline = claim.resume.meta.get("deadline") if claim.resume is not None else None
    if recorded_deadline:
        deadline: datetime | None = datetime.fromisoformat(recorded_deadline)
    else:
        deadline = _now() + timedelta(seconds=timeout) if timeout is not None else None
    call_id = active.start(claim, kind="approval", name=key, request=request, meta={
        "key": key, "prompt": prompt, "details": details, "deadline": deadline.isoformat() if deadline else None,
    })
    pending = PendingApproval(active, call_id, key, prompt, details, deadline)
    with active.session.journal_store() as store:  # decided elsewhere since the step began?
        decided = _decision_of(store, call_id)
    if decided is None:
        decided = pending.expire()
    if decided is None and _at_terminal():
        decided = _ask_at_terminal(pending)
    if decided is None:
        return pending
    active.gates.remove(pending.gate)
    return _gated(active, decided)


def _gated(active: ActiveStep, decision: Decision) -> Decision:
    """A rejection stops the step at its next call unless the code reads it (see Decision.gate)."""
    if not decision.__dict__["approved"]:
        active.gates.append(lambda ending: decision.gate(active, ending))
    return decision


def _decision_of(store: Any, call_id: int) -> Decision | None:
    call = store.call(call_id)
    if call is None or call["status"] != "completed":
        return None
    return Decision(**json.loads(store.fetch(call["response"])))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _default_key(prompt: str, details: Any) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:32].strip("-") or "approval"
    return f"{slug}-{digest(json.dumps([prompt, details], sort_keys=True, default=str).encode())[:6]}"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def _headless() -> bool:
    return env_flag("DURABLE_HEADLESS")


def _in_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def _at_terminal() -> bool:
    """A plain process that a person runs in a terminal, so the question can be asked there."""
    streams = (sys.stdin, sys.stdout)  # None in some services
    return not _headless() and not _in_kernel() and all(s is not None and s.isatty() for s in streams)


def _ask_at_terminal(pending: PendingApproval) -> Decision | None:
    """Ask on the terminal; None if stdin closes unanswered (the step then suspends).

    The journal is released while the question waits, so `durable approve` from another
    terminal can decide instead; the first decision recorded wins.
    """
    active = pending.active
    lines = [f"\u23f8 step {active.name!r} of session {active.session.name!r} asks: {pending.prompt}"]
    if pending.details is not None:
        lines.append(textwrap.indent(json.dumps(pending.details, indent=2, ensure_ascii=False), "    "))
    if pending.deadline is not None:
        lines.append(f"  (rejected automatically at {pending.deadline:%Y-%m-%d %H:%M:%S} UTC)")
    elsewhere = decide_command(active.session.name, pending.key, journal_option(pending.journal))
    lines.append(f"  (or from another terminal: {elsewhere})")
    print("\n".join(lines), flush=True)
    last_poll = 0.0
    asked = False
    while True:
        if not asked:
            print("approve? [y/n] ", end="", flush=True)
            asked = True
        if time.monotonic() - last_poll >= POLL_SECONDS:
            last_poll = time.monotonic()
            decision = pending.poll()
            if decision is not None:
                print(f"\n{_describe(decision)}", flush=True)
                return decision
        if not select.select([sys.stdin], [], [], 0.2)[0]:
            continue
        answer = sys.stdin.readline()
        if not answer:
            return None
        approved = {"y": True, "yes": True, "n": False, "no": False}.get(answer.strip().lower())
        if approved is None:
            asked = False
            continue
        print("comment (optional, Enter to skip): ", end="", flush=True)
        comment = sys.stdin.readline().strip()
        decision = pending.decide(approved, comment=comment or None, by=f"{_who()} (tty)")
        print(_describe(decision), flush=True)
        return decision


def _describe(decision: Decision) -> str:
    shown = decision.to_json()  # not the attributes: the code has not read this decision yet
    verdict = "approved" if shown["approved"] else "rejected"
    return f"{verdict} by {shown['by']}" + (f": {shown['comment']}" if shown["comment"] else "")


def decide_command(session: str, key: str, journal: str | None = None) -> str:
    """The `durable approve` command line that decides an approval."""
    option = f" --journal {shlex.quote(journal)}" if journal else ""
    return f"durable approve {shlex.quote(session)} {shlex.quote(key)}{option} [--reject] [--comment TEXT]"


def journal_option(journal: Journal) -> str | None:
    # The CLI finds the default journal by itself; any other needs naming, absolute so it works anywhere.
    path = journal.path.resolve()
    return None if path == default_path().resolve() else str(path)


# The approval widget lives in the `widgets` package, which depends on this one; it registers
# itself here when the extension loads. Without it (a plain script) nothing is shown.
Presenter = Callable[..., Any]
presenters: dict[str, Presenter] = {}


def _present(pending: PendingApproval) -> Any:
    show = presenters.get("pending")
    return show(pending) if show is not None and not _headless() else None


def _show_decision(pending: PendingApproval, decision: Decision) -> None:
    show = presenters.get("decided_view")
    if show is not None and pending._view is not None:
        show(pending._view, decision.copy())


def _show_decision_for(key: str, prompt: str, details: Any, decision: Decision) -> None:
    show = presenters.get("decided")
    if show is not None:
        show(key=key, prompt=prompt, details=details, decision=decision.copy())


def decide_from_cli(journal: Journal, session: str, key: str, approved: bool, comment: str | None) -> str:
    """`durable approve`: record a decision for the pending approval `key` of `session`."""
    with journal.open() as store:
        waiting = store.approvals(session, pending_only=True)
        pending = [a for a in waiting if a["key"] == key]
        if not pending and store.session_info(session) is None:
            names = store.session_names()
            raise StepError(f"no session {session!r} in {journal.path}; sessions: {', '.join(names) or 'none'}")
        if not pending:
            known = [a["key"] for a in waiting]
            raise StepError(f"no pending approval {key!r} in session {session!r}; pending: "
                            f"{', '.join(known) if known else 'none'}")
        decision = make_decision(key, approved, by=f"{_who()} (cli)", comment=comment)
        store.decide(pending[-1]["id"], decision.to_json())
    verdict = "approved" if approved else "rejected"
    return f"{verdict} {key!r} in session {session!r}; the next run of step {pending[-1]['step']!r} goes on from it"


__all__ = ["Decision", "PendingApproval", "StepSuspended", "approve", "decide_from_cli"]
