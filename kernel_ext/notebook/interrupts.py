"""Kernel -> Interrupt stops a `%%durable` cell at once, as it stops a plain cell.

A `%%durable` cell runs as a top-level-await cell, and for those ipykernel turns SIGINT into a
cancellation of the cell's task, which lands only at the next `await`: a cell busy in a sync
model call or a sync tool would never stop, and an awaited call would be cancelled only once
the loop got round to it. While a durable cell runs, SIGINT is ours: when the cell's own code
is running (the signal arrives inside its frames) it raises KeyboardInterrupt there, as Python
does for a plain cell; when the cell is suspended in an `await`, its task is cancelled through
the loop's self-pipe, so the cancellation lands at once. While a call's result is being
journaled, the interrupt waits for the journal (runtime.uninterrupted), so a paid answer is kept.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import CodeType, FrameType
from typing import Any

from .. import runtime


class CellInterrupts:
    """SIGINT handling for one durable cell, installed for the time it runs (main thread only)."""

    def __init__(self, cell_code: CodeType) -> None:
        self.cell_code = cell_code
        self.cancelled = False  # the task was cancelled by an interrupt (its CancelledError means one)
        self._previous: Any = None
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> CellInterrupts:
        if threading.current_thread() is threading.main_thread():
            try:
                self._task = asyncio.current_task()
            except RuntimeError:  # no running loop: a plain KeyboardInterrupt does the job
                self._task = None
            self._previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if runtime.defer_interrupt():
            return  # raised when the call being journaled is in the journal
        if self._task is None or _inside(frame, self.cell_code):
            raise KeyboardInterrupt
        self.cancelled = True
        self._task.get_loop().call_soon_threadsafe(self._task.cancel)


def _inside(frame: FrameType | None, code: CodeType) -> bool:
    # A suspended coroutine has no frame on the stack: finding the cell's means its code is running.
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False
