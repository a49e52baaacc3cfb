"""Work done once a session has been left alone for a moment, by one thread that sleeps between times.

Closing DuckDB after the last use, or taking a step's log in once the cell has ended, must not cost
the next cell: starting a timer thread after every step costs more than the step's own journaling.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable


class IdleWork:
    """Run `action` once `delay` seconds pass without another `later()`; `cancel()` forgets it."""

    def __init__(self, delay: float, action: Callable[[], None], name: str) -> None:
        self.delay = delay
        self.action = action
        self.name = name
        self._wake = threading.Condition(threading.Lock())
        self._due: float | None = None
        self._owner: int | None = None  # the process whose thread waits (a forked child has none)

    def later(self) -> None:
        with self._wake:
            self._due = time.monotonic() + self.delay
            if self._owner != os.getpid():
                self._owner = os.getpid()
                threading.Thread(target=self._wait, name=self.name, daemon=True).start()
            self._wake.notify()

    def cancel(self) -> None:
        with self._wake:
            self._due = None

    def _wait(self) -> None:
        while True:
            with self._wake:
                while self._due is None or self._due > time.monotonic():
                    self._wake.wait(None if self._due is None else self._due - time.monotonic())
                self._due = None
            self.action()
