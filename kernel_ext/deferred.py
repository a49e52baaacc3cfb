"""Pydantic AI's approval-required tools as durable approvals.

A tool made with `requires_approval=True` does not run when the model asks for it: the agent run ends
with `DeferredToolRequests`, and the next run takes the decisions as `DeferredToolResults`. Here each
request becomes an `approve()` (a widget in a notebook, a question at a terminal, `durable approve`
from anywhere), keyed by the tool call's id: the decision is journaled, so every later run of the step
replays it, and a rejection goes back to the model as the SDK's `ToolDenied`.
"""

from __future__ import annotations

import json
from typing import Any

from .approvals import Decision, PendingApproval, approve


def _asks(requests: Any, timeout: float | None) -> list[tuple[str, Decision | PendingApproval]]:
    asked = []
    for call in requests.approvals:
        args = call.args_as_dict() if hasattr(call, "args_as_dict") else call.args
        shown = json.dumps(args, ensure_ascii=False, default=str)
        shown = shown[1:-1] if shown.startswith("{") else shown
        asked.append((call.tool_call_id, approve(f"Run {call.tool_name}({shown})?",
                                                 key=f"{call.tool_name}:{call.tool_call_id}",
                                                 details={"tool": call.tool_name, "args": args}, timeout=timeout)))
    return asked


def _results(decided: list[tuple[str, Decision]]) -> Any:
    from pydantic_ai import DeferredToolResults, ToolDenied

    results = DeferredToolResults()
    for call_id, decision in decided:
        results.approvals[call_id] = (True if decision.approved
                                      else ToolDenied(decision.comment or "A person rejected this tool call."))
    return results


def approve_deferred(requests: Any, *, timeout: float | None = None) -> Any:
    """The `DeferredToolResults` for a run's `DeferredToolRequests`, each approval asked durably.

    In a notebook an undecided approval stops the step (its widget waits for a click; run the cell
    again then); `await aapprove_deferred(...)` waits in the cell instead.
    """
    return _results([(call_id, _read(asked)) for call_id, asked in _asks(requests, timeout)])


async def aapprove_deferred(requests: Any, *, timeout: float | None = None) -> Any:
    """As `approve_deferred`, awaiting each decision (a click, or `durable approve`) in the cell."""
    decided = []
    for call_id, asked in _asks(requests, timeout):
        decided.append((call_id, await asked if isinstance(asked, PendingApproval) else asked))
    return _results(decided)


def _read(asked: Decision | PendingApproval) -> Decision:
    asked.approved  # noqa: B018 - reading the verdict of an undecided approval suspends the step
    return asked  # type: ignore[return-value]
