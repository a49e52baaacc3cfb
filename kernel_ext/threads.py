"""Calls made from threads a durable step starts belong to that step.

The step a call belongs to is found through a context variable, and context variables do not
flow into `threading.Thread` or `ThreadPoolExecutor` workers (only asyncio tasks and
`asyncio.to_thread` copy the context). So a thread started inside a step, and a function
submitted to a thread pool inside a step (`loop.run_in_executor` submits too), run in a copy of
the submitting context. A pool's worker threads outlive the step that first started them; each
submission brings its own context, so a later step's work is never taken for an earlier one's.
Outside steps nothing changes.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Thread
from typing import Any

from .runtime import active_step

_originals: dict[str, Callable[..., Any]] = {}


def install() -> None:
    """Carry the open step into threads started and work submitted inside it (idempotent)."""
    if _originals:
        return
    _originals["start"] = start = Thread.start
    _originals["submit"] = submit = ThreadPoolExecutor.submit

    def start_in_step(self: Thread) -> None:
        if active_step() is not None:
            self.run = _in_context(contextvars.copy_context(), self.run)  # type: ignore[method-assign]
        start(self)

    def submit_in_step(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if active_step() is not None:
            return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)
        return submit(self, fn, *args, **kwargs)

    Thread.start = start_in_step  # type: ignore[method-assign]
    ThreadPoolExecutor.submit = submit_in_step  # type: ignore[method-assign]


def uninstall() -> None:
    if _originals:
        Thread.start = _originals.pop("start")  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = _originals.pop("submit")  # type: ignore[method-assign]


def _in_context(context: contextvars.Context, run: Callable[[], None]) -> Callable[[], None]:
    def run_in_context() -> None:
        context.run(run)

    return run_in_context
