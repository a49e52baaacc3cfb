"""The history widget: a session's steps (one accordion pane each) and their calls; a call selected in
a step's list shows its request and response below. Where widgets cannot render, the same output
carries an HTML rendering with the same steps, calls, requests and responses."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from journal import Journal
from kernel_ext import history
from kernel_ext.history import SessionHistory, call_detail, detail_html

_PROMPT = "<i>select a call to see its request and response</i>"
_FALLBACK_DETAILS = 300  # calls whose request and response go into the HTML rendering too


class HistoryView(w.VBox):
    def __init__(self, journal: Journal, session_history: SessionHistory) -> None:
        self.journal, self.history = journal, session_history
        self.detail = w.HTML(_PROMPT)
        self.call_lists: list[w.Select] = []
        panes = []
        for step in session_history.steps:
            calls = w.Select(options=[(c.label(), c.id) for c in step.calls], value=None,
                             rows=min(max(len(step.calls), 1), 10), layout=w.Layout(width="100%"))
            calls.observe(self._show_call, names="value")
            self.call_lists.append(calls)
            panes.append(calls if step.calls else w.HTML("<i>no calls</i>"))
        steps = w.Accordion(children=panes, titles=tuple(s.label() for s in session_history.steps))
        header = w.HTML(f"<b>{html.escape(session_history.totals())}</b>")
        super().__init__([header, steps, self.detail])

    def _show_call(self, change: dict[str, Any]) -> None:
        if change["new"] is None:
            return
        for calls in self.call_lists:  # one selection at a time across the steps
            if calls is not change["owner"] and calls.value is not None:
                calls.value = None
        self.detail.value = detail_html(call_detail(self.journal, change["new"]))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        calls = sum(len(s.calls) for s in self.history.steps)
        details = history.all_details(self.journal, self.history) if calls <= _FALLBACK_DETAILS else {}
        bundle["text/html"] = history.history_html(self.history, details)
        bundle["text/plain"] = history.history_text(self.history)
        return bundle
