"""What a session did, for people, in layers: the model at the bottom (model.py: steps, calls, what
replay saved, read from the journal), the pictures drawn from it above (detail.py: one call's request
and response; layout.py: a step's timeline; html.py: the whole picture as HTML), and view.py on top,
which puts them together for `%durable history`. The widget (widgets/history.py) draws from the same
layers. Each module imports only those below it.
"""

from .model import (
    PAGE_STEPS,
    SHADES,
    CallView,
    Saved,
    SessionHistory,
    StepView,
    Totals,
    duration,
    history_text,
    load_history,
    money,
)
from .view import HistoryDocument, history_view, presenters

__all__ = [
    "PAGE_STEPS",
    "SHADES",
    "CallView",
    "HistoryDocument",
    "Saved",
    "SessionHistory",
    "StepView",
    "Totals",
    "duration",
    "history_text",
    "history_view",
    "load_history",
    "money",
    "presenters",
]
