"""`sleep(seconds)` and `sleep_until(when)`: waits whose wake-up time outlives the kernel.

The first time a step reaches a sleep, its wake-up time is journaled before it waits; every later
run of the step (after a kill, a restart, a re-run) waits only until that recorded time, and not at
all once it has passed. A plain call blocks (Kernel -> Interrupt stops it at once); `await sleep(...)`
waits on the event loop. Where nobody waits for the process (`durable run`, DURABLE_HEADLESS, or
`DURABLE_MAX_WAIT` set), a sleep longer than the allowed wait suspends the step instead: the run stops
with exit code 3 and says when to run it again; run earlier, it suspends again with the same time.
Outside a durable step these are plain waits.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from types import CodeType
from typing import Any

from journal import Split, split_document
from journal._time import now as journal_now

from . import stored
from .errors import StepError
from .runtime import ActiveStep, active_step, env_flag

DEFAULT_MAX_WAIT = 60.0  # seconds a headless run waits in a sleep before it suspends instead
_SLICE = 0.25  # a blocking wait wakes this often, so that an interrupt lands at once


class SleepSuspended(BaseException):  # noqa: N818 - it is a state, not a failure
    """A step stopped until its recorded wake-up time. A BaseException: agent code must not swallow it."""

    suspends_step = True  # read by Session.step, which records the run as suspended

    def __init__(self, step: str, wake_at: datetime, *, script: bool = False) -> None:
        self.step, self.wake_at = step, wake_at
        again = "run the script again" if script else "run the notebook again (durable run)"
        super().__init__(f"step {step!r} sleeps until {_shown(wake_at)}; {again} at or after that time")

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"\u23f8 {self}"]


def sleep(seconds: float) -> Any:
    """Wait `seconds`, counted from the first time the step reached this call; `await sleep(...)` in async code."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise StepError(f"sleep takes a number of seconds >= 0, got {seconds!r}")
    return _wait({"sleep": seconds}, lambda: _now() + timedelta(seconds=seconds), _awaited())


def sleep_until(when: datetime) -> Any:
    """Wait until `when` (a timezone-aware datetime; a naive one is taken as UTC); `await` it in async code."""
    if not isinstance(when, datetime):
        raise StepError(f"sleep_until takes a datetime, got {type(when).__name__}")
    when = when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
    return _wait({"sleep_until": when.isoformat()}, lambda: when, _awaited())


def _wait(request: dict[str, Any], wake: Any, awaited: bool) -> Any:
    active = active_step()
    wake_at = wake() if active is None else _recorded_wake(active, request, wake)
    if active is not None and _max_wait() is not None and (wake_at - _now()).total_seconds() > _max_wait():
        raise SleepSuspended(active.name, wake_at, script=not _in_kernel())
    if awaited:
        return _until_async(active, wake_at)
    _until(active, wake_at)
    return None


def _recorded_wake(active: ActiveStep, request: dict[str, Any], wake: Any) -> datetime:
    split = Split()
    fingerprint = split_document(request, split)
    describe = f"sleep({next(iter(request.values()))})"
    claim = active.claim(fingerprint, describe, request, kind="value")
    if claim.recorded is not None:
        return stored.load(claim.recorded.data, claim.recorded.meta.get("body"), f"the wake-up time of {describe}",
                           active.session.journal.path)
    wake_at = wake()
    response = Split()
    data, body = stored.dump(wake_at)
    active.record(claim, kind="value", name="sleep", request=split, response=response,
                  response_key=response.add(data), meta={"body": body, "wake_at": wake_at.isoformat()},
                  started_at=journal_now())
    return wake_at


def _until(active: ActiveStep | None, wake_at: datetime) -> None:
    _waiting(active, wake_at)
    try:
        while (left := (wake_at - _now()).total_seconds()) > 0:
            time.sleep(min(left, _SLICE))
    finally:
        if active is not None:
            active.waiting = None


async def _until_async(active: ActiveStep | None, wake_at: datetime) -> None:
    _waiting(active, wake_at)
    try:
        while (left := (wake_at - _now()).total_seconds()) > 0:
            await asyncio.sleep(min(left, _SLICE))
    finally:
        if active is not None:
            active.waiting = None


def _waiting(active: ActiveStep | None, wake_at: datetime) -> None:
    if active is not None and wake_at > _now():
        active.waiting = (f"its wake-up time, {_shown(wake_at)}", time.monotonic())  # the progress line says so
        active.notify("waiting")


def _awaited() -> bool:
    """Whether the caller of sleep() awaits what it returns (`await sleep(...)`), read from its bytecode."""
    frame = sys._getframe(2)
    return _awaits_after(frame.f_code, frame.f_lasti)


@lru_cache(maxsize=512)
def _awaits_after(code: CodeType, offset: int) -> bool:
    import dis  # only here: loading the extension stays light

    # The instruction after the call: `await f()` compiles to the call, then GET_AWAITABLE.
    following = next((i for i in dis.get_instructions(code) if i.offset > offset), None)
    return following is not None and following.opname == "GET_AWAITABLE"


def _max_wait() -> float | None:
    value = os.environ.get("DURABLE_MAX_WAIT")
    if value:
        try:
            return float(value)
        except ValueError:
            raise StepError(f"DURABLE_MAX_WAIT takes a number of seconds, got {value!r}") from None
    return DEFAULT_MAX_WAIT if env_flag("DURABLE_HEADLESS") else None


def _in_kernel() -> bool:
    return "ipykernel" in sys.modules


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _shown(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


__all__ = ["SleepSuspended", "sleep", "sleep_until"]
