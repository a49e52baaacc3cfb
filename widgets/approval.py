"""The approval widget: the prompt, its details, Approve and Reject, a comment; read-only once decided."""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import ipywidgets as w
from IPython.display import display

from kernel_ext.approvals import Decision, PendingApproval

from ._cells import main_thread_cells

# Keys whose values are money or quantities a reviewer must not miss.
_STANDOUT = ("amount", "price", "total", "cost", "sum", "eur", "usd", "refund", "charge", "quantity")




class _AcknowledgedTextarea(w.Textarea):
    """A text box (the comment, the edited values) whose text must reach the kernel while the cell awaits.

    While a cell runs on the main thread, ipykernel (7.4) handles a widget message routed there
    concurrently with the cell and publishes no idle status for it. The browser's widget manager sends
    a widget's next update only after the idle status of the previous one, so it would hold back every
    keystroke after the first and the decision would record a comment of one character. Publish the
    idle status ipykernel leaves out (messages handled on a subshell thread get theirs from ipykernel).
    """

    def _handle_msg(self, msg: dict[str, Any]) -> None:
        super()._handle_msg(msg)
        if main_thread_cells() and threading.current_thread() is threading.main_thread():
            _acknowledge(msg)


def _acknowledge(msg: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # another kernel, or none: nothing to acknowledge
        from ipykernel.kernelbase import Kernel

        if Kernel.initialized():
            Kernel.instance()._publish_status("idle", "shell", parent=msg)


def _details_html(details: Any) -> str:
    if details is None:
        return ""
    if not isinstance(details, dict):
        return f"<pre>{html.escape(json.dumps(details, indent=2, default=str))}</pre>"
    rows = []
    for key, value in details.items():
        text = html.escape(value if isinstance(value, str) else json.dumps(value, default=str))
        if any(word in str(key).lower() for word in _STANDOUT):
            text = f'<b style="font-size:120%;color:#b45309">{text}</b>'
        rows.append(f"<tr><td style='padding-right:1em;opacity:.7'>{html.escape(str(key))}</td><td>{text}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


class ApprovalView(w.VBox):
    """One approval. `on_decide(approved, comment, data)` records the decision and returns it."""

    def __init__(self, *, key: str, prompt: str, details: Any = None,
                 on_decide: Callable[[bool, str | None, Any], Decision] | None = None,
                 decision: Decision | None = None) -> None:
        self.key, self.prompt, self.on_decide = key, prompt, on_decide
        state = "Approval needed" if decision is None else ("Approved" if decision.approved else "Rejected")
        self.prompt_html = w.HTML(self._header(state))
        self.details_html = w.HTML(_details_html(details))
        decided = decision is not None  # a replayed decision is never shown as a live, pending widget
        self.comment = _AcknowledgedTextarea(placeholder="comment (optional)", disabled=decided,
                                  layout=w.Layout(width="100%", height="3em"))
        # The reviewer may correct the values before approving (a smaller refund, another address).
        self.original = json.dumps(details, indent=2, default=str) if isinstance(details, (dict, list)) else None
        self.values = None
        if self.original is not None:
            shown = self.original
            if decision is not None and decision.data is not None:
                shown = json.dumps(decision.data, indent=2, default=str)
            # As many rows as the JSON has lines (up to a screenful), so none of it is cut off.
            self.values = _AcknowledgedTextarea(value=shown, description="values", disabled=decided,
                                                rows=min(24, shown.count("\n") + 2), layout=w.Layout(width="100%"))
        self.approve_button = w.Button(description="Approve", button_style="success", icon="check", disabled=decided)
        self.reject_button = w.Button(description="Reject", button_style="danger", icon="times", disabled=decided)
        asked = datetime.now(timezone.utc).strftime("%H:%M UTC")
        self.status = w.HTML("" if decided else f"<span style='opacity:.8'>waiting for a decision since {asked}; "
                             "the cell goes on once it is decided here or with durable approve</span>")
        self.approve_button.on_click(lambda _: self._decide(True))
        self.reject_button.on_click(lambda _: self._decide(False))
        editor = [w.HTML("<span style='opacity:.7'>edit values (optional):</span>"), self.values] if self.values else []
        super().__init__([self.prompt_html, self.details_html, *editor, self.comment,
                          w.HBox([self.approve_button, self.reject_button]), self.status],
                         layout=w.Layout(border="1px solid #d4d4d8", padding="8px", width="auto"))
        if decision is not None:
            self.show_decision(decision)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None or not self.approve_button.disabled:
            return bundle  # a pending approval changes: a snapshot of it would go stale in a saved notebook
        # Decided, it never changes again: a notebook on a code host shows it as it stands, not as a repr.
        bundle["text/html"] = (f"<div style='border:1px solid #d4d4d8;padding:8px'><div>{self.prompt_html.value}"
                               f"</div>{self.details_html.value}<div>{self.status.value}</div></div>")
        bundle["text/plain"] = html.unescape(re.sub(r"<[^>]+>", "", f"{self.prompt_html.value}\n{self.status.value}"))
        return bundle

    def _header(self, state: str) -> str:
        return (f"<b>{state}:</b> {html.escape(self.prompt)} "
                f"<span style='opacity:.6'>({html.escape(self.key)})</span>")

    def _decide(self, approved: bool) -> None:
        if self.on_decide is None:
            return
        data = None
        if self.values is not None and approved and self.values.value.strip() != self.original:
            try:
                data = json.loads(self.values.value)
            except ValueError as exc:
                problem = html.escape(str(exc))
                self.status.value = (f"<span style='color:#b91c1c'>the edited values are not valid JSON ({problem}); "
                                     "correct them or restore the original</span>")
                return
        self.approve_button.disabled = self.reject_button.disabled = True
        decision = self.on_decide(approved, self.comment.value or None, data)
        self.show_decision(decision)

    def show_decision(self, decision: Decision) -> None:
        """Turn read-only and say who decided what, when, and why."""
        for control in (self.approve_button, self.reject_button, self.comment, self.values):
            if control is not None:
                control.disabled = True
        verdict = "approved" if decision.approved else "rejected"
        colour = "#15803d" if decision.approved else "#b91c1c"
        self.prompt_html.value = self._header("Approved" if decision.approved else "Rejected")
        comment = f" \u2014 \u201c{html.escape(decision.comment)}\u201d" if decision.comment else ""
        if decision.data is not None:
            comment += " (with edited values)"
        self.status.value = (f"<span style='color:{colour}'><b>{verdict}</b></span> by {html.escape(decision.by)} "
                             f"at {html.escape(decision.at[:19].replace('T', ' '))} UTC{comment}")


def _pending(pending: PendingApproval) -> ApprovalView:
    view = ApprovalView(key=pending.key, prompt=pending.prompt, details=pending.details,
                        on_decide=lambda ok, comment, data: pending.decide(ok, comment=comment, data=data))
    display(view)
    return view


def _decided(*, key: str, prompt: str, details: Any, decision: Decision) -> None:
    display(ApprovalView(key=key, prompt=prompt, details=details, decision=decision))
