"""How many cells are executing on the kernel's main thread (IPython's pre_execute/post_execute).

Kept apart from the widgets themselves so that loading the extension counts cells from the start
without importing ipywidgets, which takes longer than the rest of the extension.
"""

from __future__ import annotations

import threading
from typing import Any

_running = 0


def _count(delta: int) -> Any:
    def count() -> None:
        global _running
        if threading.current_thread() is threading.main_thread():
            _running = max(0, _running + delta)
    return count


_started, _finished = _count(1), _count(-1)


def main_thread_cells() -> int:
    return _running


def count_cells(shell: Any) -> None:
    if shell is not None and _started not in shell.events.callbacks["pre_execute"]:
        shell.events.register("pre_execute", _started)
        shell.events.register("post_execute", _finished)
