"""Sessions, steps and the replay rule. Works in a plain `python` process: no IPython here.

A step is open while a `%%durable` cell (or a `with step(NAME):` block) runs. The open step
holds the journal, the recorded calls of its current epoch, and the counters that give
every call its position. `ActiveStep.claim` is the one place where a call is decided:
replayed from its recording, or sent live.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from journal import (
    Holder,
    Journal,
    RecordedCall,
    Split,
    StepRun,
    StepWriter,
    Store,
    digest,
    hold_session,
    let_go_of_session,
    reserve_call_ids,
)

from . import limits
from .budgets import Budget, Spent, make_budget
from .budgets import check as check_budgets
from .budgets import recorded as recorded_spend
from .config import Settings, settings
from .errors import InDoubtError, StepError, StrictReplayError
from .exit_codes import EXIT_SUSPENDED
from .idle import IdleWork
from .secrets import redact_text
from .tool_results import ToolLedger

_active: contextvars.ContextVar[ActiveStep | None] = contextvars.ContextVar("durable_step", default=None)
# Set while a journaled call runs live: what it sends is its own, not a request that escaped the journal.
_journaled: contextvars.ContextVar[bool] = contextvars.ContextVar("durable_journaled", default=False)
_open_steps: list[ActiveStep] = []  # steps open in this process, in any thread or context
_forked = False  # a forked child must not write into its parent's journal


def active_step() -> ActiveStep | None:
    """The step open in this context, if any.

    A context can outlive its step (a thread the step started, still running), so a closed
    step is no step.
    """
    active = _active.get()
    if active is None or active.closed or _forked:
        return None
    return active


@contextmanager
def entered_step(active: ActiveStep) -> Iterator[ActiveStep]:
    """Make `active` the open step of this context while the block runs.

    `Session.step` uses it, and so does an engine that opens steps of its own (engines/dbos/workflow.py).
    """
    token = _active.set(active)
    _open_steps.append(active)
    try:
        yield active
    finally:
        _active.reset(token)
        active.closed = True
        with contextlib.suppress(ValueError):
            _open_steps.remove(active)


@contextmanager
def journaled_call() -> Iterator[None]:
    """Mark the live run of a journaled call, so the network it uses is not reported as unjournaled."""
    token = _journaled.set(True)
    try:
        yield
    finally:
        _journaled.reset(token)


def in_journaled_call() -> bool:
    return _journaled.get()


_shield = threading.local()  # per thread; only the main thread's matters, where SIGINT is handled


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Journal a call's outcome in one piece: an interrupt that arrives meanwhile is raised after it."""
    depth = getattr(_shield, "depth", 0)
    _shield.depth = depth + 1
    try:
        yield
    except BaseException:
        _shield.depth, _shield.pending = depth, False  # already stopping: the interrupt changes nothing
        raise
    _shield.depth = depth
    if depth == 0 and getattr(_shield, "pending", False):
        _shield.pending = False
        raise KeyboardInterrupt


def defer_interrupt() -> bool:
    """For a SIGINT handler: whether the interrupt must wait until a journal write is done."""
    if getattr(_shield, "depth", 0):
        _shield.pending = True
        return True
    return False


def interrupted_by(error: BaseException) -> bool:
    """Whether an exception ending a step is an interrupt (Kernel -> Interrupt, Ctrl-C, a cancelled task)."""
    return isinstance(error, (KeyboardInterrupt, asyncio.CancelledError))


def outside_steps(what: str) -> None:
    """Report a call that no step can claim although steps are open (a thread started before them).

    It is not journaled; each open step says so once in its summary, naming the call and the thread.
    With no step open (the common case outside a durable cell) there is no one to tell.
    """
    if _forked or not _open_steps:
        return
    thread = threading.current_thread().name
    for open_step in list(_open_steps):
        open_step.warn(f"{what} from thread {thread!r} could not be attributed to this step and {{were}} "
                       "not journaled; start that thread inside the step")


def _after_fork() -> None:
    global _forked
    _forked = True
    _open_steps.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


@dataclass
class Claim:
    """A call's place in its step: its position, and its rank among identical requests."""

    seq: int
    fingerprint: str
    ordinal: int
    recorded: RecordedCall | None  # to replay: a completed call, or a tool call that failed
    attempts: int = 1
    resume: RecordedCall | None = None  # an in-doubt call of an idempotent tool, being run again
    idempotency_key: str = ""


@dataclass
class ActiveStep:
    session: Session
    run: StepRun
    writer: StepWriter  # where its calls are journaled: this process's append log
    strict: bool
    live: int = 0
    outputs: list[dict[str, Any]] | None = None  # nbformat outputs, set by the notebook front end
    variables: dict[str, bytes] | None = None  # pickled variables the step assigned or mutated
    closed: bool = False
    replayed_from: tuple[datetime, datetime] | None = None  # when the replayed calls were recorded
    tokens: int = 0  # of the calls so far, live and replayed
    tokens_replayed: int = 0  # of those, the replayed calls' (recorded, not spent again)
    journaled: int = 0  # live calls whose outcome is in the journal (the others were in flight or lost)
    replayed_calls: list[int] = field(default_factory=list)  # journal ids of the recorded calls replayed
    waiting: tuple[str, float] | None = None  # (what it waits for, monotonic start): a person, or a wake-up time
    observer: Callable[[ActiveStep, str], None] | None = None  # told "replayed", "live" or "recorded"
    warnings: dict[str, int] = field(default_factory=dict)  # what this step could not journal, and how often
    # Approvals asked and not yet seen decided: each is asked whether the step may go on (see pass_gates).
    gates: list[Callable[[bool], bool]] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)  # of the step and its session (budgets.py)
    live_usage: dict[str, list[int]] = field(default_factory=dict)  # model -> [prompt, completion] spent live here
    _spends: dict[str, Spent] = field(default_factory=dict)  # by budget scope: what earlier runs recorded
    # What escaped the journal, counted by name under one line each: message -> {name: count} (see warn_named).
    named_warnings: dict[str, Counter[str]] = field(default_factory=dict)
    _seen_results: set[str] = field(default_factory=set)
    _seq: int = 0
    _ordinals: Counter[str] = field(default_factory=Counter)
    _failed: Counter[str] = field(default_factory=Counter)  # failed attempts of the call in progress
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # The latest record of each (request, ordinal) wins: a settled or re-run call replaces its start.
        self._index = {(c.fingerprint, c.ordinal): c for c in self.run.recorded}
        self._by_seq = {c.seq: c for c in self.run.recorded}
        # Model calls recorded with the key of their SDK-level arguments (integrations/_rebuild.py): key -> request.
        self._aliases = {c.meta["kw"]: c.fingerprint for c in self.run.recorded if c.meta and "kw" in c.meta}

    def claim_alias(self, key: str, describe: str) -> Claim | None:
        """Claim a model call by the key of its SDK-level arguments, as the request recorded with that key.

        None if no recorded call has the key: the call is then claimed by its request, as usual.
        """
        fingerprint = self._aliases.get(key)
        if fingerprint is None:
            return None
        try:
            return self.claim(fingerprint, describe)
        except StrictReplayError as error:
            # Name the difference as a claim by the request itself would: it is the request recorded with the key.
            from journal import join_document

            raise StrictReplayError(error.step, error.call,
                                    self._difference(join_document(fingerprint, self.fetch))) from None

    @property
    def name(self) -> str:
        return self.run.step

    def claim(self, fingerprint: str, describe: str, request: Any = None, *, kind: str = "llm",
              idempotent: bool = True) -> Claim:
        """Decide a call: replay its recording, or let it run live. The one place this is decided.

        Identical requests within a step are told apart by their ordinal, so a loop that
        sends the same request three times replays three recorded answers in order.
        A model request whose process died before its answer is simply sent again. A tool
        that failed replays its failure; one that started and never finished (in doubt)
        runs again only if it is idempotent. Nothing is decided past an approval the step has
        not seen decided (see pass_gates).
        """
        if self.gates:
            self.pass_gates()
        if kind == "llm" and self.budgets and not self.strict:
            known = self._index.get((fingerprint, self._ordinals[fingerprint]))
            if known is None or known.status != "completed":  # it would go live: is there budget left?
                check_budgets(self, describe.rpartition(", model ")[2] if ", model " in describe else None)
        with self._lock:
            self._seq += 1
            attempts = self._failed.pop(fingerprint, 0) + 1
            ordinal = self._ordinals[fingerprint]
            self._ordinals[fingerprint] += 1
            key = "" if kind == "llm" else "dk-" + digest(
                f"{self.session.name}/{self.name}/{self.run.epoch}/{fingerprint}/{ordinal}".encode())
            recorded = self._index.get((fingerprint, ordinal))
            resume = None
            if recorded is not None and (recorded.status == "completed" or (
                    recorded.status == "failed" and kind != "llm")):
                self.replayed_calls.append(recorded.id)
                self.tokens += recorded.tokens
                self.tokens_replayed += recorded.tokens
                if recorded.ended_at is not None:
                    first, last = self.replayed_from or (recorded.ended_at, recorded.ended_at)
                    self.replayed_from = (min(first, recorded.ended_at), max(last, recorded.ended_at))
                claim = Claim(self._seq, fingerprint, ordinal, recorded, idempotency_key=key)
                event = "replayed"
            else:
                if recorded is not None and recorded.status == "started" and kind != "llm":
                    if not idempotent:
                        raise InDoubtError(self.name, f"call {self._seq} ({describe}, journal id {recorded.id}, "
                                           f"idempotency key {key})", recorded.id, self.session.name,
                                           interrupted=bool(recorded.meta.get("interrupted")))
                    resume = recorded
                if self.strict:
                    raise StrictReplayError(self.name, f"call {self._seq} ({describe})",
                                            self._difference(request))
                self.live += 1
                claim = Claim(self._seq, fingerprint, ordinal, None, attempts, resume, key)
                event = "live"
        self.notify(event)
        return claim

    def pass_gates(self, *, ending: bool = False) -> None:
        """Fail closed on approvals: before any further call, every approval the step asked for is decided.

        An undecided one suspends the step (StepSuspended); a rejected one whose decision the code
        never read stops it, since going on would treat the rejection as an approval. At the end of
        the step only an undecided approval matters: the step ends suspended, not completed.
        """
        with self._lock:
            gates = list(self.gates)
        passed = [gate for gate in gates if gate(ending)]
        with self._lock:
            self.gates = [gate for gate in self.gates if gate not in passed]

    @property
    def replayed(self) -> int:
        return len(self.replayed_calls)

    def warn(self, message: str) -> None:
        """Something of this step escaped the journal: said once, with a count, in the step's summary.

        `message` may hold {n} (the count), {s} (a plural s) and {were} (was or were).
        """
        with self._lock:
            self.warnings[message] = self.warnings.get(message, 0) + 1

    def fetch(self, key: str) -> bytes:
        """A blob of this step's recording (rarely needed: replay data is read when the step begins)."""
        with self.session.journal_store() as store:
            return store.fetch(key)

    def mark_known(self, split: Split) -> None:
        self.writer.mark_known(split)

    def first_sight(self, result: str) -> bool:
        """Whether this step sees a tool result (by its call's id) for the first time: retries resend it."""
        with self._lock:
            if result in self._seen_results:
                return False
            self._seen_results.add(result)
            return True

    def warn_named(self, message: str, name: str) -> None:
        """Like warn, for a line that names what it counts: `message` may also hold {names} ("send_sms ×2, lookup")
        and {es} (a plural es)."""
        with self._lock:
            self.named_warnings.setdefault(message, Counter())[name] += 1

    def warning_lines(self) -> list[str]:
        with self._lock:
            counted = list(self.warnings.items())
            named = [(m, sorted(c.items(), key=lambda item: (-item[1], item[0])))
                     for m, c in self.named_warnings.items()]
        lines = []
        for message, counts in named:
            n = sum(count for _, count in counts)
            names = ", ".join(name if count == 1 else f"{name} \u00d7{count}" for name, count in counts)
            lines.append(message.format(n=n, s="" if n == 1 else "s", es="" if n == 1 else "es", names=names))
        return lines + [m.format(n=n, s="" if n == 1 else "s", were="was" if n == 1 else "were") for m, n in counted]

    def notify(self, event: str) -> None:
        """Tell the observer (the progress line) what happened: replayed, live, recorded, waiting."""
        if self.observer is not None:
            self.observer(self, event)

    @contextmanager
    def sending(self, claim: Claim) -> Iterator[None]:
        """Around a model call sent live: what it sends is its own (not unjournaled traffic), and if the
        attempt fails, the SDK's retry takes its place (see retry)."""
        try:
            with journaled_call():
                yield
        except BaseException:
            self.retry(claim)
            raise

    def retry(self, claim: Claim) -> None:
        """Give back a live claim whose attempt failed, so that the retry takes its place."""
        with self._lock:
            if self._seq == claim.seq:
                self._seq -= 1
            if self._ordinals[claim.fingerprint] == claim.ordinal + 1:
                self._ordinals[claim.fingerprint] -= 1
            self._failed[claim.fingerprint] = claim.attempts
            self.live -= 1

    def record(self, claim: Claim, **row: Any) -> None:
        """Journal a live call's result before the program sees it."""
        row.setdefault("attempts", claim.attempts)
        with uninterrupted():
            self.writer.record_call(seq=claim.seq, fingerprint=claim.fingerprint, ordinal=claim.ordinal, **row)
        with self._lock:
            self.journaled += 1
            self.tokens += sum(n or 0 for n in row.get("usage", ()))
            if row.get("kind") == "llm":
                usage = self.live_usage.setdefault(str(row.get("model")), [0, 0])
                for i, n in enumerate(row.get("usage", ())):
                    usage[i] += n or 0
        self.notify("recorded")

    @property
    def live_tokens(self) -> int:
        return self.tokens - self.tokens_replayed

    @property
    def live_models(self) -> set[str]:
        return set(self.live_usage)

    def recorded_spend(self, budget: Budget) -> Spent:
        """What the journal recorded for a budget's scope before this run (read once per step run)."""
        if budget.scope not in self._spends:
            with self.session.journal_store() as store:
                self._spends[budget.scope] = recorded_spend(
                    store, self.session.name, self.name if budget.scope.startswith("step ") else None)
        return self._spends[budget.scope]

    def start(self, claim: Claim, *, kind: str, name: str, request: Split, meta: dict[str, Any],
              effect: bool = False) -> int:
        """Journal that a live call begins; returns its journal id (an in-doubt call keeps its own).

        `effect`: running the call twice would repeat an effect, so its start must survive a power
        cut too (in the `effects` and `always` sync modes).
        """
        if claim.resume is not None:
            return claim.resume.id
        with uninterrupted():
            return self.writer.start_call(seq=claim.seq, fingerprint=claim.fingerprint, ordinal=claim.ordinal,
                                          kind=kind, name=name, request=request, meta=meta, effect=effect)

    def finish(self, call_id: int, **outcome: Any) -> None:
        with uninterrupted():
            self.writer.finish_call(call_id, **outcome)
        with self._lock:
            self.journaled += 1

    def interrupted(self, call_id: int) -> None:
        """A started tool call was interrupted inside: still in doubt, and its record says why."""
        with uninterrupted():
            self.writer.note_call(call_id, {"interrupted": True})

    def _difference(self, request: Any) -> str:
        recorded = self._by_seq.get(self._seq)
        if recorded is None:
            return f"the recording of this step has no call at position {self._seq}"
        if recorded.request is None or request is None:
            return "its request differs from the recorded one"
        with self.session.journal_store() as store:
            before = store.get_json(recorded.request)
        if before == request:
            # The same request, recorded without a result: the recording stopped while it waited.
            waiting = "undecided" if recorded.kind == "approval" else "in flight"
            return f"the recording has this request but no result (it was still {waiting})"
        return "request differs from the recording at " + first_difference(before, request)


def first_difference(recorded: Any, current: Any, path: str = "") -> str:
    """Where two JSON documents first differ, as `path: recorded -> current`."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        for key in sorted(set(recorded) | set(current), key=str):
            if recorded.get(key, _MISSING) != current.get(key, _MISSING):
                return first_difference(recorded.get(key, _MISSING), current.get(key, _MISSING), f"{path}.{key}")
    elif isinstance(recorded, list) and isinstance(current, list):
        for i, (a, b) in enumerate(zip(recorded, current, strict=False)):
            if a != b:
                return first_difference(a, b, f"{path}[{i}]")
        if len(recorded) != len(current):
            return f"{path or 'request'}: {len(recorded)} items -> {len(current)} items"
    return f"{path.lstrip('.') or 'request'}: {_short(recorded)} -> {_short(current)}"


_MISSING = "<missing>"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Session:
    """One durable agent run, stored in a journal under its name."""

    def __init__(self, name: str, journal: Journal | str | os.PathLike[str] | None = None,
                 *, notebook: str | None = None) -> None:
        if not name or not name.strip():
            raise StepError("a session needs a non-empty name")
        self.name = name
        if isinstance(journal, Journal):
            self.journal = journal
        else:
            chosen = settings()
            self.journal = Journal(journal if journal is not None else chosen.journal, sync=chosen.sync)
        self.notebook = notebook
        self.holder = Holder.current(f"{_process_label()} for {notebook or name!r}")
        self._claimed = False
        self._cells: list[tuple[str, str | None, str]] = []  # ran here, not yet in the journal
        self._store: Store | None = None  # DuckDB, open only while used and a moment after (journal_store)
        self._closer = IdleWork(LINGER, self._close_when_idle, f"durable-idle {name}")
        self._journal_lock = threading.RLock()
        self._absorbed: dict[Path, int] = {}  # how far this process absorbed its own logs
        self._cells_seen: dict[tuple[str, str | None, str], None] = {}  # in the order they first ran
        self._held: int | None = None  # the session's lock file, held while this process drives it
        self._claim_logged = False  # taken over through the log (a step begun from a pack), not DuckDB
        self._ended: dict[str, None] = {}  # steps that ran here since their recordings were last packed
        # While this process holds the session, no other adds a step to it: a step not among these is new,
        # and its first run begins from the log alone (None: not read from DuckDB yet).
        self._steps: set[str] | None = None
        self._run_ids: list[int] = []  # reserved for those runs
        self._refill: threading.Thread | None = None  # reserving more of them, beside the running steps
        # For `_steps`, `_run_ids` and `_refill`; taken inside `_journal_lock`, never around it.
        self._steps_lock = threading.Lock()
        self.tool_ledger = ToolLedger()  # journaled tool calls whose results no request carried yet
        self.budget: Budget | None = None  # set by `session(..., budget_tokens=...)`; else the settings'
        # Vendor state (a stored response's id) named by answers replayed here -> (step, call) that replayed it.
        self.vendor_state: dict[str, tuple[str, int]] = {}
        self.exits_when_suspended = False  # an exported script: a suspended step ends it with exit code 3

    def __repr__(self) -> str:
        return f"Session({self.name!r}, journal={str(self.journal.path)!r})"

    @contextmanager
    def step(self, name: str, *, source: str | None = None, strict: bool = False,
             rerun: bool = False, budget: Budget | None = None) -> Iterator[ActiveStep]:
        """Run a block as the durable step `name`; calls inside it are journaled and replayed."""
        __tracebackhide__ = True
        if _active.get() is not None:
            raise StepError(f"step {name!r} cannot start inside step {_active.get().name!r}: steps do not nest")
        chosen = settings()  # read before the step begins: an invalid setting begins none
        strict = strict or chosen.strict
        limits.configure(chosen.max_concurrent, chosen.max_per_minute)
        budgets = [b for b in (budget, self.budget or self._budget_of(chosen)) if b is not None]
        source = redact_text(source) if source is not None else None
        begun = None if rerun else self._begin_from_pack(name, source) or self._begin_new(name, source)
        elsewhere: list[str] = []  # other sessions that recorded this step, when a new session begins with it
        if begun is None:
            with self.journal_store() as store:
                self._hold()
                if not self._claimed:  # while this process lives, no other can take the session over
                    store.claim_session(self.name, self.holder, self.notebook)
                    self._claimed = True
                run = store.begin_step(self.name, name, source, rerun=rerun)
                self._flush_cells(store)
                first = self._steps is None
                self._learn_steps(store, name)
                if first and self._steps == {name} and not run.recorded and source is not None:
                    elsewhere = store.recorded_elsewhere(self.name, name, source)
            begun = run, StepWriter(self.journal, run, self._reserve_ids)
        active = ActiveStep(self, *begun, strict, budgets=budgets)
        if elsewhere:  # a renamed notebook's new default session: say so at once, while the step still runs
            moved = (f"session {self.name!r} is new, but session {elsewhere[0]!r} recorded step {name!r} with the "
                     f"same code: its calls go live again here; `%durable session {elsewhere[0]}` replays them")
            print(f"durable: {moved}", file=sys.stderr)
            active.warn(moved.replace("{", "{{").replace("}", "}}"))  # a warning is a format string
        status, error = "failed", None
        try:
            with entered_step(active):
                yield active
                active.pass_gates(ending=True)
            status = "completed"
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            if getattr(exc, "suspends_step", False):
                status = "suspended"
            elif interrupted_by(exc):
                status, error = "interrupted", "interrupted"
            raise
        finally:
            with uninterrupted():
                active.writer.end_step(status, live=active.live, replayed=active.replayed, outputs=active.outputs,
                                       error=error, variables=active.variables if status == "completed" else None,
                                       replayed_calls=active.replayed_calls, budget=_budget_note(active))
            self._ended[name] = None
            self._closer.later()  # DuckDB takes the step in once the session is idle, off the next cell's path

    def _budget_of(self, chosen: Any) -> Budget | None:
        """The budget the settings give every session, if any."""
        if chosen.budget_tokens is None and chosen.budget_usd is None:
            return None
        where = " and ".join(chosen.origin(n) for n in ("budget_tokens", "budget_usd") if getattr(chosen, n))
        return Budget(f"session {self.name!r}", where,
                      int(chosen.budget_tokens) if chosen.budget_tokens is not None else None, chosen.budget_usd)

    def _hold(self) -> None:
        """Hold the session's lock file for as long as this process drives it."""
        if self._held is None:
            self._held = hold_session(self.journal.path, self.name, self.holder.__dict__, self.holder.describe())

    def _learn_steps(self, store: Store, name: str) -> None:
        """Know the session's steps and hold run ids, so that the steps new to it begin without DuckDB."""
        with self._steps_lock:
            if self._steps is None:
                self._steps = store.session_steps(self.name)  # read after every log was absorbed
            self._steps.add(name)
        self._refill_run_ids(store)

    def _refill_beside(self) -> None:
        try:
            with self.journal_store(linger=False) as store:
                self._refill_run_ids(store)
        except Exception as exc:  # noqa: BLE001 - steps go on through DuckDB once the ids run out
            print(f"durable: could not reserve run ids beside the running steps ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
        finally:
            with self._steps_lock:
                self._refill = None

    def _refill_run_ids(self, store: Store) -> None:
        with self._steps_lock:
            if self._steps is not None and len(self._run_ids) < _RUN_IDS // 4:
                self._run_ids.extend(store.reserve_run_ids(_RUN_IDS))

    def _begin_new(self, name: str, source: str | None) -> tuple[StepRun, StepWriter] | None:
        """Begin the first run of a step new to the session from the log alone; None if it cannot be known new."""
        with self._steps_lock:
            if self._steps is None or name in self._steps or len(self._run_ids) < 2 or self._held is None:
                return None
            split = Split()
            key = split.add(source.encode()) if source is not None else None
            run = self.journal.begin_new(self.name, name, (self._run_ids[0], self._run_ids[1]), key)
            if run is None:
                return None
            del self._run_ids[:2]
            self._steps.add(name)  # from now on it has a run: its next one replays it
            if len(self._run_ids) < _RUN_IDS // 4 and self._refill is None:
                # A long loop of new steps: DuckDB takes what they wrote in and reserves more, beside them.
                self._refill = threading.Thread(target=self._refill_beside, name="durable-refill", daemon=True)
                self._refill.start()
        writer = StepWriter(self.journal, run, self._reserve_ids)
        with uninterrupted():
            writer.begin_run(split if key is not None else None, key, new=True)
        return run, writer

    def _begin_from_pack(self, name: str, source: str | None) -> tuple[StepRun, StepWriter] | None:
        """Begin a run from the step's pack, without DuckDB (see journal/_pack.py); None if it has none."""
        if not self.journal.has_pack(self.name, name):
            return None  # and nothing created: a journal DuckDB refuses must be left as it is
        self._hold()
        begun = self.journal.begin_from_pack(self.name, name)
        if begun is None:
            return None
        run, stored_source = begun
        writer = StepWriter(self.journal, run, self._reserve_ids)
        split = Split() if source is not None else None
        key = split.add(source.encode()) if split is not None else None
        claim = None if self._claimed or self._claim_logged else {"holder": self.holder.__dict__,
                                                                   "notebook": self.notebook}
        with uninterrupted():
            writer.begin_run(split if key != stored_source else None, key, claim=claim)
        self._claim_logged = True
        return run, writer

    def _reserve_ids(self, count: int) -> list[int]:
        # From the counter file while it exists: opening DuckDB mid-step would absorb the step's log.
        ids = reserve_call_ids(self.journal.path, count)
        if ids is not None:
            return ids
        with self.journal_store() as store:
            return store.reserve_call_ids(count)

    @contextmanager
    def journal_store(self, *, linger: bool = True) -> Iterator[Store]:
        """DuckDB for a moment: opened if closed, this process's log absorbed, closed LINGER seconds later
        (at once without `linger`).

        A running step journals into its log, not into DuckDB, so while a cell runs the file is free
        for the CLI and other kernels. Steps that follow each other closely (Run All, a script's
        loop) share one connection.
        """
        with self._journal_lock:
            self._closer.cancel()
            try:
                if self._store is None:
                    self._store = self.journal.connect()  # absorbs every log it finds
                else:
                    self._absorb_own(self._store)
                self._repack(self._store)
                yield self._store
            except BaseException:
                self.close_journal()  # after a failure, go on from a fresh connection
                raise
            if not linger:
                self.close_journal()
                return
            self._closer.later()  # closed (and absorbed, if no step runs) unless used again meanwhile

    def _own_log(self) -> tuple[Path | None, int, bool]:
        """This process's log, the bytes written to it, and whether any are not absorbed yet.

        The position is read before an absorb: what is appended meanwhile is still to absorb.
        """
        log = self.journal.writer()
        path, written = log.path, log.position
        return path, written, path is not None and written > self._absorbed.get(path, -1)

    def _absorb_own(self, store: Store) -> None:
        path, written, pending = self._own_log()
        if pending:
            store.absorb([path])
            self._absorbed[path] = written

    def _repack(self, store: Store) -> None:
        # Absorbing a step's records spent its pack: the next run of each step that ran here can
        # begin without DuckDB again.
        ended = list(self._ended)  # a step ending meanwhile (another thread) is packed next time
        # And the steps of this session whose packs an absorb deleted: a replay after a kill goes on from packs.
        unpacked = [pair for pair in list(self.journal.unpacked) if pair[0] == self.name]
        self.journal.unpacked.difference_update(unpacked)
        ended += [step for _, step in unpacked if step not in self._ended]
        if ended:
            later = set(store.repack(self.name, ended))
            for name in ended:
                if name not in later:
                    self._ended.pop(name, None)

    def _close_when_idle(self) -> None:
        # While a step runs, its log is absorbed once at the end rather than bit by bit: every absorb is
        # a DuckDB commit and checkpoint, and many small ones leave the file larger.
        running = any(step.session is self and not step.closed for step in list(_open_steps))
        self.close_journal(absorb=not running)

    def close_journal(self, *, absorb: bool = True) -> None:
        """Absorb this process's log and close DuckDB (at once: another user may wait for the file)."""
        with self._journal_lock:
            self._closer.cancel()
            store, self._store = self._store, None
            if not absorb:
                if store is not None:
                    store.close()
                return
            if store is None and not self._own_log()[2] and not self._ended:
                return
            try:
                store = store or self.journal.connect()  # connecting absorbs every log, ours too
                try:
                    self._absorb_own(store)
                    self._repack(store)
                    self._flush_cells(store)
                    self._refill_run_ids(store)
                    log = self.journal.writer()
                    if log.path is not None:
                        retired = log.retire(store.absorbed_position(log.path))
                        if retired is not None:
                            store.forget_log(retired)
                finally:
                    store.close()
            except Exception as exc:  # noqa: BLE001 - a process at exit must not fail on a busy file
                # Nothing is lost: the log stays, and whoever opens the journal next absorbs it.
                print(f"durable: the journal's log was not absorbed yet ({type(exc).__name__}: {exc}); "
                      "the next open of the journal takes it in", file=sys.stderr)

    def note_cell(self, kind: str, step: str | None, source: str) -> None:
        """Remember a notebook cell this kernel ran (`setup` or `step`), for exporting the session.

        Kept in memory and written with the next step, so a plain cell costs no journal write.
        """
        cell = (kind, step, redact_text(source))  # kept for export: never a literal key
        if cell not in self._cells_seen:
            self._cells_seen[cell] = None
            self._cells.append(cell)

    def flush_cells(self) -> None:
        if self._cells:
            with self.journal.open() as store:
                self._flush_cells(store)

    def _flush_cells(self, store: Store) -> None:
        if self._cells:
            kernel = f"{self.holder.host}:{self.holder.pid}:{self.holder.started}"
            store.record_cells(self.name, kernel, self._cells)
            self._cells = []

    def release(self) -> None:
        """Let another process drive this session (done at exit; a killed process is detected)."""
        self.close_journal()
        if self._claimed or self._claim_logged:
            with self.journal.open() as store:
                store.release_session(self.name, self.holder)
            self._claimed = self._claim_logged = False
        if self._held is not None:
            let_go_of_session(self.journal.path, self.name, self._held)
            self._held = None
        with self._steps_lock:
            self._steps, self._run_ids = None, []  # another process may add steps now


def _process_label() -> str:
    return "kernel" if "ipykernel" in sys.modules else "process"


def _budget_note(active: ActiveStep) -> str | None:
    """What the step's budgets left, for its run's record (the history shows it); None without budgets."""
    if not active.budgets:
        return None
    from .budgets import left

    try:
        return left(active)
    except Exception:  # noqa: BLE001 - a note: the step's end must be journaled whatever it says
        return None


_current: Session | None = None
DEFAULT_SESSION = "default"  # the session's name where nothing tells the notebook's
_unnamed: Session | None = None  # the current session, while it has that name and nobody was told yet
_RUN_IDS = 1024  # run ids reserved at a time for steps begun without DuckDB (two a step)
LINGER = 0.25  # seconds the journal stays open after its last use: long enough for back-to-back steps,
# short enough that another kernel beginning a step hardly waits for the file


def session(name: str, journal: Journal | str | os.PathLike[str] | None = None, *,
            budget_tokens: int | None = None, budget_usd: float | None = None) -> Session:
    """Make `name` the current session of this process and return it.

    `budget_tokens` / `budget_usd`: once the session's model calls recorded in the journal spent this
    much, no further live model call is sent (BudgetExceeded); they replace the settings' budget.
    """
    global _current, _unnamed
    _unnamed = None  # named on purpose, even if `default`: nothing to say about it
    if _current is not None and _current.name == name and (
        journal is None or Path(str(getattr(journal, "path", journal))) == _current.journal.path
    ):
        _current.budget = make_budget(f"session {name!r}", "session(...)", budget_tokens, budget_usd) or (
            _current.budget)
        return _current
    previous = _current
    if previous is not None:
        _release_quietly(previous)
    _current = Session(name, journal, notebook=_notebook_path())
    _current.budget = make_budget(f"session {name!r}", "session(...)", budget_tokens, budget_usd)
    if previous is not None:
        # The kernel's namespace still holds what the cells before the switch defined (imports,
        # clients, tools), so an export of the new session needs them as its setup too.
        for kind, step_name, source in previous._cells_seen:
            if kind == "setup":
                _current.note_cell(kind, step_name, source)
    return _current


# Where the journal setting came from and the journal it gave, when the current session last followed it.
_followed: tuple[tuple[str, Path | None], Path] | None = None


def _journal_source(chosen: Settings) -> tuple[str, Path | None]:
    # What was set, not where it leads from the working directory now: a session must not move when a
    # cell calls os.chdir. The origin names the environment's and %config's value; pyproject.toml's is its path.
    origin = chosen.origin("journal")
    return origin, chosen.journal if origin.startswith("[tool.durable]") else None


def follow_journal_setting(chosen: Settings) -> str | None:
    """Move the current session to `chosen.journal` when the journal setting was changed since it last followed.

    Only a change of the setting moves it (%config, %env, pyproject.toml), not a change of the working
    directory; a session opened on an explicit journal (`session(name, journal=...)`) stays where it is.
    The first call only notes the setting. Returns the line that says the session moved, or None.
    """
    global _followed, _unnamed
    source = _journal_source(chosen)
    if _followed is not None and _followed[0] == source:
        return None
    previous, _followed = _followed, (source, chosen.journal)
    if previous is None:
        return None
    current = current_session()
    if current.journal.path != previous[1] or current.journal.path == chosen.journal:
        return None
    unnamed = _unnamed is current
    session(current.name, chosen.journal)
    if unnamed:  # moved, not named: the first step still says which session it is
        _unnamed = _current
    return f"durable: session {current.name!r} now journals to {chosen.journal}"


def current_session() -> Session:
    """The current session, creating the default one (named after the notebook) on first use."""
    global _current, _unnamed
    if _current is None:
        notebook = _notebook_path()
        name = os.environ.get("DURABLE_SESSION") or (Path(notebook).stem if notebook else None)
        _current = Session(name or DEFAULT_SESSION, notebook=notebook)
        if name is None:
            _unnamed = _current
    return _current


def unnamed_session_notice() -> str | None:
    """Once: the line that says the current session is named `default` because its notebook's name is unknown.

    nbclient and nbconvert (unlike a Jupyter server and `durable run`) do not tell the kernel which
    notebook it runs, and notebooks that all fall back to one session would replay each other's steps.
    """
    global _unnamed
    unnamed, _unnamed = _unnamed, None
    if unnamed is None or unnamed is not _current:
        return None
    return (f"durable: steps journal to session {DEFAULT_SESSION!r} (this kernel was not told its notebook's "
            "name); to name the session: %durable session NAME, or run the notebook with `durable run`")


@contextmanager
def step(name: str, *, strict: bool = False, rerun: bool = False, budget_tokens: int | None = None,
         budget_usd: float | None = None) -> Iterator[ActiveStep]:
    """`with step(NAME):` — a durable step of the current session (the script form of `%%durable`).

    `budget_tokens` / `budget_usd` limit what the step's model calls spend live (see budgets.py).
    """
    __tracebackhide__ = True
    current = current_session()
    budget = make_budget(f"step {name!r}", f"step({name!r}, ...)", budget_tokens, budget_usd)
    try:
        with current.step(name, strict=strict, rerun=rerun, budget=budget) as active:
            yield active
    except BaseException as exc:
        if not (current.exits_when_suspended and getattr(exc, "suspends_step", False)):
            raise
        # Waiting for a person is not a failure: a scheduler sees exit code 3, a person the way on.
        print(f"\u23f8 {exc}", file=sys.stderr)
        raise SystemExit(EXIT_SUSPENDED) from None


_UNSET: Any = object()


def settle(call_id: int, *, value: Any = _UNSET, retry: bool = False) -> str:
    """Decide an in-doubt tool call of the current session: it returned `value`, or it may `retry`.

    Returns a one-line account of what was recorded.
    """
    from . import stored

    if (value is _UNSET) == (not retry):
        raise StepError("settle a call with either value=... (it took effect) or retry=True (it did not)")
    current = current_session()
    with current.journal.open() as store:
        call = store.call(call_id)
        if call is None or call["session"] != current.name:
            raise StepError(f"no call with journal id {call_id} in session {current.name!r}; "
                            "the in-doubt error names the call")
        which = f"the call with journal id {call_id} ({call['name']})"
        if call["status"] != "started":
            raise StepError(f"{which} is {call['status']}, not in doubt: nothing to settle")
        if retry:
            store.settle_call(call_id, retry=True)
            return f"{which} will run again when step {call['step']!r} runs"
        data, body = stored.dump(value)
        store.settle_call(call_id, value=data, body=body)
        return f"{which} settled as done with {_short(value)}; step {call['step']!r} replays it"


def env_flag(name: str) -> bool:
    """An on/off setting from the environment: set and not "0" means on."""
    return os.environ.get(name, "") not in ("", "0")


def _notebook_path() -> str | None:
    # Jupyter servers pass the notebook's path to the kernel in JPY_SESSION_NAME.
    return os.environ.get("DURABLE_NOTEBOOK") or os.environ.get("JPY_SESSION_NAME") or None


def _release_quietly(current: Session) -> None:
    # At exit a busy journal must not turn into a traceback; a dead holder is detected anyway.
    with contextlib.suppress(Exception):
        current.release()


@atexit.register
def _release_at_exit() -> None:
    if _current is not None:
        # Cells run after the last step are still in memory; `durable export` reads them from the journal.
        with contextlib.suppress(Exception):
            _current.flush_cells()
        _release_quietly(_current)


