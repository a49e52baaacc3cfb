"""The live status line under a running durable cell: calls so far (replayed, live), tokens, elapsed.

One display updated in place (a display id), so a long agent loop shows one line, not hundreds.
Updates are throttled, except when a live call starts: that is when a person wonders what the cell
is waiting for. When the cell ends, its summary comes after the cell's own output: the live line,
shown at the first call and so above whatever the cell printed later, is emptied and the summary is
shown at the end (a cell that showed nothing keeps one line, turned into the summary in place).
Where nobody watches the notebook (`durable run`, which draws its own progress) only the summary is
shown, so a saved notebook holds no emptied line.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..runtime import ActiveStep, env_flag, interrupted_by
from ..status import step_line_html, summary_output
from .outputs import DURABLE_METADATA

_INTERVAL = 0.25  # seconds between two updates of the line


class ProgressLine:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self._shown = 0.0
        self._handle: Any = None
        self._called = False  # a call was made: a step stopped after it says where
        self._watched = not env_flag("DURABLE_HEADLESS")

    def __call__(self, active: ActiveStep, event: str) -> None:
        self._called = True
        # Displays from other threads would lose the cell they belong to.
        if not self._watched or threading.current_thread() is not threading.main_thread():
            return
        now = time.monotonic()
        if event not in ("live", "waiting") and self._handle is not None and now - self._shown < _INTERVAL:
            return
        self._shown = now
        calls = active.live + active.replayed
        in_flight = f"; call {calls} live…" if event == "live" else ""
        waiting = active.waiting
        if waiting is not None:  # an approval or a sleep: nothing is in flight
            in_flight = f"; waiting for {waiting[0]} ({_waited(now - waiting[1])})"
        text = (f"{'⏸' if waiting else '⟳'} durable step {active.name!r}: {calls} call{'' if calls == 1 else 's'} "
                f"({active.replayed} replayed, {active.live} live), {active.tokens:,} tokens, "
                f"{now - self.started:.1f} s{in_flight}")
        state = {"step": active.name, "replayed": active.replayed, "live": active.live, "state": "running"}
        self._show({"text/plain": text, "text/html": step_line_html(text)}, {DURABLE_METADATA: state})

    def finish(self, active: ActiveStep, error: BaseException | None = None) -> None:
        """Turn the line into the step's summary (or say where a failed step stopped)."""
        if error is None:
            output = summary_output(active, time.monotonic() - self.started)
            if output is not None:
                self._last(output["data"], output["metadata"], below=bool(active.outputs))
            return
        interrupted = interrupted_by(error)
        if not self._called and not interrupted:
            return
        lost = active.live - active.journaled
        kept = f"{active.replayed} replayed, {active.journaled} live and journaled"
        if lost:
            kept += f", {lost} in flight when it stopped"
        calls = active.live + active.replayed
        suspended = getattr(error, "suspends_step", False)  # a budget, a long sleep: it goes on when run again
        what = "interrupted" if interrupted else "suspended" if suspended else "stopped"
        mark = "■" if interrupted else "⏸" if suspended else "✗"
        text = (f"{mark} durable step {active.name!r} {what} after {calls} "
                f"call{'' if calls == 1 else 's'} ({kept})" + ("" if interrupted else f", {type(error).__name__}"))
        state = {"step": active.name, "replayed": active.replayed, "live": active.live, "state": what}
        self._last({"text/plain": text, "text/html": step_line_html(text)}, {DURABLE_METADATA: state},
                   below=bool(active.outputs))

    def _show(self, data: dict[str, str], metadata: dict[str, Any]) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(data, raw=True, metadata=metadata, display_id=True)
        else:
            self._handle.update(data, raw=True, metadata=metadata)

    def _last(self, data: dict[str, str], metadata: dict[str, Any], *, below: bool) -> None:
        """The step's last word, after the cell's own output (`below`: the cell showed some)."""
        from IPython.display import display

        if self._handle is not None and not below:
            self._handle.update(data, raw=True, metadata=metadata)
            return
        if self._handle is not None:
            # An output cannot move or be removed alone: the live line is emptied (nothing renders) and
            # loses its mark, so it counts neither as a summary nor as a running step.
            self._handle.update({}, raw=True, metadata={})
            self._handle = None
        display(data, raw=True, metadata=metadata)


def _waited(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
