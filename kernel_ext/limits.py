"""Limits on live model calls: how many at once, and how many a minute, in this process, in all or per model.

A fan-out of 500 `asyncio.gather` calls must not meet a wall of 429s: with `max_concurrent` (or
`max_per_minute`) set, a live call waits for its turn before it is sent. Replayed calls are never
limited: they send nothing. Threads wait on a semaphore; coroutines on an asyncio one of their own
event loop, so a waiting coroutine never blocks the loop (the concurrency limit holds for the threads
together and for each event loop's coroutines). A limit is for every live model call of the process
(`*`), or for one model's (`gpt-4o-mini=5`), or both: a call waits for its model's turn, then for the
turn of all. The limits are the settings in effect when the latest step began (Durable.max_concurrent,
Durable.max_per_minute).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping

ALL = "*"  # the limit's key for every model's calls together
_lock = threading.Lock()


class _Limit:
    """At most `concurrent` calls at once and `per_minute` calls a minute (None: no such limit)."""

    def __init__(self, concurrent: int | None, per_minute: int | None) -> None:
        self.concurrent, self.per_minute = concurrent, per_minute
        self.threads = threading.BoundedSemaphore(concurrent) if concurrent is not None else None
        self.loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())
        self.sent: collections.deque[float] = collections.deque()  # monotonic times of the last minute's calls

    def loop_semaphore(self) -> asyncio.Semaphore | None:
        if self.concurrent is None:
            return None
        loop = asyncio.get_running_loop()
        with _lock:
            if loop not in self.loops:
                self.loops[loop] = asyncio.Semaphore(self.concurrent)
            return self.loops[loop]

    def turn(self) -> float:
        """0 if a call may be sent now (and counts it as sent), else the seconds until one of the minute expires."""
        if self.per_minute is None:
            return 0.0
        now = time.monotonic()
        with _lock:
            while self.sent and now - self.sent[0] >= 60:
                self.sent.popleft()
            if len(self.sent) < self.per_minute:
                self.sent.append(now)
                return 0.0
            return 60 - (now - self.sent[0]) + 0.001


_limits: dict[str, _Limit] = {}
_given: tuple[dict[str, int], dict[str, int]] = ({}, {})


def _whole(limits: Mapping[str, float] | float | None) -> dict[str, int]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):  # a number: every model's calls together
        return {ALL: int(limits)}
    return {model: int(n) for model, n in limits.items()}


def configure(max_concurrent: Mapping[str, float] | float | None,
              max_per_minute: Mapping[str, float] | float | None) -> None:
    """Take the limits in effect: None (no limit), a number (all calls), or {model or `*`: number}.

    Cheap when they did not change; a limit that changed starts afresh (its waiting calls finish as they were).
    """
    global _limits, _given
    given = (_whole(max_concurrent), _whole(max_per_minute))
    with _lock:
        if given == _given:
            return
        _given = given
        _limits = {key: _Limit(given[0].get(key), given[1].get(key)) for key in {*given[0], *given[1]}}


def _for(model: str | None) -> list[_Limit]:
    # The model's own first, then all: every call takes them in this order, so two calls never each
    # hold one the other waits for.
    limits = _limits
    return [limit for limit in (limits.get(model) if model is not None else None, limits.get(ALL))
            if limit is not None]


@contextlib.contextmanager
def live_call(model: str | None = None) -> Iterator[None]:
    """Around a live model call sent from a thread: it waits for its turn."""
    held = []
    try:
        for limit in _for(model):
            if limit.threads is not None:
                limit.threads.acquire()
                held.append(limit.threads)
            while (wait := limit.turn()) > 0:
                time.sleep(wait)
        yield
    finally:
        for semaphore in reversed(held):
            semaphore.release()


@contextlib.asynccontextmanager
async def live_call_async(model: str | None = None) -> AsyncIterator[None]:
    """Around a live model call awaited on an event loop: it waits for its turn without blocking the loop."""
    held = []
    try:
        for limit in _for(model):
            semaphore = limit.loop_semaphore()
            if semaphore is not None:
                await semaphore.acquire()
                held.append(semaphore)
            while (wait := limit.turn()) > 0:
                await asyncio.sleep(wait)
        yield
    finally:
        for semaphore in reversed(held):
            semaphore.release()
