"""A session's history put together for whoever shows it: the model read from the journal, its latest
page (a long session's earlier steps are left out, and a line says how to see them), the details of
the page's calls, and the picture that fits where it is shown (the widget, else HTML with text beside it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from journal import Journal

from .model import SessionHistory, history_text, load_history

if TYPE_CHECKING:
    from .detail import CallDetail

# Calls whose request and response go into the HTML with the page (the latest of it): a conversation's
# detail runs to kilobytes, and the HTML stays in the notebook file.
DETAILS_SHOWN = 100

# The details and the HTML are imported when a history is first shown, not here: `%load_ext` imports
# this package (to register the widget) and should not pay for the pictures.


class HistoryDocument:
    """The history where widgets cannot render: HTML for notebooks and code hosts, text for terminals."""

    def __init__(self, history: SessionHistory, details: dict[int, CallDetail]) -> None:
        self.history, self.details = history, details

    def _repr_html_(self) -> str:
        from .html import history_html

        return history_html(self.history, self.details)

    def __repr__(self) -> str:
        return history_text(self.history)


# The widget lives in the `widgets` package, which depends on this one; it registers itself.
presenters: dict[str, Any] = {}


def history_view(journal: Journal, session: str) -> Any:
    """`%durable history`: the latest page of the session, as the widget where ipywidgets is installed,
    else as the HTML/text document. The page keeps the earlier steps for `earlier_page()`."""
    from .detail import all_details

    page = load_history(journal, session).page()
    show = presenters.get("history")
    if show is not None:
        return show(journal, page)
    return HistoryDocument(page, all_details(journal, page, limit=DETAILS_SHOWN))
