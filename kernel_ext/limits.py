"""Limits on live model calls: how many at once, and how many a minute, in this process.

A fan-out of 500 `asyncio.gather` calls must not meet a wall of 429s: with `max_concurrent` (or
`max_per_minute`) set, a live call waits for its turn before it is sent. Replayed calls are never
limited: they send nothing. Threads wait on a semaphore; coroutines on an asyncio one of their own
event loop, so a waiting coroutine never blocks the loop (the concurrency limit holds for the threads
together and for each event loop's coroutines). The rate counts every live model call of the process,
whatever its model. The limits are the settings in effect when the latest step began
(Durable.max_concurrent, Durable.max_per_minute).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator

_lock = threading.Lock()
_concurrent: int | None = None
_per_minute: int | None = None
_threads: threading.BoundedSemaphore | None = None
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
_sent: collections.deque[float] = collections.deque()  # monotonic times of the live calls of the last minute


def configure(max_concurrent: float | None, max_per_minute: float | None) -> None:
    """Take the limits in effect (None: no limit); cheap when they did not change."""
    global _concurrent, _per_minute, _threads
    concurrent = int(max_concurrent) if max_concurrent is not None else None
    per_minute = int(max_per_minute) if max_per_minute is not None else None
    with _lock:
        if concurrent != _concurrent:
            _concurrent = concurrent
            _threads = threading.BoundedSemaphore(concurrent) if concurrent is not None else None
            _loops.clear()
        _per_minute = per_minute


@contextlib.contextmanager
def live_call() -> Iterator[None]:
    """Around a live model call sent from a thread: it waits for its turn."""
    if _concurrent is None and _per_minute is None:
        yield
        return
    semaphore = _threads
    if semaphore is not None:
        semaphore.acquire()
    try:
        while (wait := _turn()) > 0:
            time.sleep(wait)
        yield
    finally:
        if semaphore is not None:
            semaphore.release()


@contextlib.asynccontextmanager
async def live_call_async() -> AsyncIterator[None]:
    """Around a live model call awaited on an event loop: it waits for its turn without blocking the loop."""
    if _concurrent is None and _per_minute is None:
        yield
        return
    semaphore = _loop_semaphore()
    if semaphore is not None:
        await semaphore.acquire()
    try:
        while (wait := _turn()) > 0:
            await asyncio.sleep(wait)
        yield
    finally:
        if semaphore is not None:
            semaphore.release()


def _loop_semaphore() -> asyncio.Semaphore | None:
    if _concurrent is None:
        return None
    loop = asyncio.get_running_loop()
    with _lock:
        if loop not in _loops:
            _loops[loop] = asyncio.Semaphore(_concurrent)
        return _loops[loop]


def _turn() -> float:
    """0 if a call may be sent now (and counts it as sent), else the seconds until one of the minute expires."""
    if _per_minute is None:
        return 0.0
    now = time.monotonic()
    with _lock:
        while _sent and now - _sent[0] >= 60:
            _sent.popleft()
        if len(_sent) < _per_minute:
            _sent.append(now)
            return 0.0
        return 60 - (now - _sent[0]) + 0.001
