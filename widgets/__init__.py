"""ipywidgets views of durable sessions (approvals, history).

Depends on kernel_ext and journal, never the reverse. `register()` plugs the views into
kernel_ext when the extension loads; ipywidgets itself is imported when a view is first shown.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


def _view(module: str, name: str) -> Any:
    def show(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    return show


def register(shell: Any) -> None:
    """Count the kernel's cells and offer the views to kernel_ext (nothing without ipywidgets)."""
    if importlib.util.find_spec("ipywidgets") is None:
        return
    from kernel_ext import approvals, history

    from ._cells import count_cells

    count_cells(shell)
    approvals.presenters.update(pending=_view("widgets.approval", "_pending"),
                                decided_view=lambda view, decision: view.show_decision(decision),
                                decided=_view("widgets.approval", "_decided"))
    history.presenters["history"] = _view("widgets.history", "HistoryView")
