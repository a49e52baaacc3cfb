"""Tool results sent to the model that no journaled tool produced: named under the cell, never silent.

The vendors' docs teach a loop that runs the model's tool calls with plain functions
(`available[name](**args)`) and sends each result back. Inside a durable step the model calls
replay, but such a function runs again on every run. The model asked for those calls, so each
request says which tool results it carries (at the end of its conversation, after the assistant
turn that asked for them). Every tool call journaled in the session (a `@tool`, a framework's
tool) is counted by name; a result in a request that no such call accounts for came from a
function that is not journaled. The step's summary names those tools with counts, on every run,
live and replayed; in strict mode the request is refused.

Formats read: OpenAI chat (`role: tool`, and the older `role: function`), the Responses API
(`function_call_output` items), Anthropic (`tool_result` blocks) and Gemini (`function_response`
parts, snake or camel case), as SDK objects or as the JSON sent.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import UnjournaledToolError

if TYPE_CHECKING:
    from .runtime import ActiveStep

UNJOURNALED = ("{n} tool result{s} sent to the model came from functions that are not journaled ({names}): they "
               "run again on every replay; decorate them with @tool")
UNNAMED = "(unnamed)"  # a result whose call the request does not show (say, after previous_response_id)


class ToolLedger:
    """A session's journaled tool calls whose results no request has carried yet, by tool name."""

    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()
        self.lock = threading.Lock()

    def journaled(self, name: str) -> None:
        with self.lock:
            self.pending[name] += 1

    def unaccounted(self, names: Iterable[str]) -> list[str]:
        """The names among `names` that no journaled call accounts for (each call accounts for one)."""
        missing = []
        with self.lock:
            for name in names:
                if self.pending[name] > 0:
                    self.pending[name] -= 1
                elif name == UNNAMED and sum(self.pending.values()) > 0:
                    next_name = next(n for n, count in self.pending.items() if count > 0)
                    self.pending[next_name] -= 1
                else:
                    missing.append(name)
        return missing


def check_request(active: ActiveStep, request: Any, describe: str) -> None:
    """Account for the tool results `request` (its kwargs or JSON body) sends back to the model."""
    results = [(key, name) for key, name in tool_results(request) if active.first_sight(key)]
    if not results:
        return
    missing = active.session.tool_ledger.unaccounted(name for _, name in results)
    if not missing:
        return
    if active.strict:
        raise UnjournaledToolError(active.name, describe, sorted(set(missing)))
    for name in missing:
        active.warn_named(UNJOURNALED, name)


def tool_results(request: Any) -> list[tuple[str, str]]:
    """(key, tool name) of each tool result at the end of a request's conversation."""
    if not isinstance(request, dict):
        return []
    for field in ("messages", "input", "contents"):
        conversation = request.get(field)
        if isinstance(conversation, (list, tuple)) and conversation:
            return _tail(list(conversation), field)
    return []


def field_of(obj: Any, *names: str) -> Any:
    """The first of `names` set on `obj`, a dict of the JSON sent or an SDK object."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _tail(items: list[Any], field: str) -> list[tuple[str, str]]:
    if field == "contents":
        return _gemini(items)
    last = items[-1]
    content = field_of(last, "content")
    if field_of(last, "role") == "user" and isinstance(content, (list, tuple)):
        return _anthropic(items, content)
    found: list[tuple[str, str | None]] = []
    position = len(items) - 1
    while position >= 0:
        item = items[position]
        role, kind = field_of(item, "role"), field_of(item, "type")
        if role == "tool":
            found.append((str(field_of(item, "tool_call_id")), None))
        elif role == "function":
            found.append((f"function:{position}:{field_of(item, 'name')}", str(field_of(item, "name"))))
        elif kind == "function_call_output":
            found.append((str(field_of(item, "call_id")), None))
        else:
            break
        position -= 1
    if not found:
        return []
    names = _names_before(items, position)
    return [(key, name or names.get(key, UNNAMED)) for key, name in found]


def _names_before(items: list[Any], position: int) -> dict[str, str]:
    """Tool call id -> name, from the assistant turn (or function_call items) that asked for the results."""
    names: dict[str, str] = {}
    while position >= 0:
        item = items[position]
        if field_of(item, "type") == "function_call":
            names[str(field_of(item, "call_id"))] = str(field_of(item, "name"))
            position -= 1
            continue
        for call in field_of(item, "tool_calls") or ():
            names[str(field_of(call, "id"))] = str(field_of(field_of(call, "function") or {}, "name"))
        break
    return names


def _anthropic(items: list[Any], content: Any) -> list[tuple[str, str]]:
    ids = [str(field_of(block, "tool_use_id")) for block in content if field_of(block, "type") == "tool_result"]
    if not ids:
        return []
    names: dict[str, str] = {}
    if len(items) >= 2:
        asked = field_of(items[-2], "content")
        for block in asked if isinstance(asked, (list, tuple)) else ():
            if field_of(block, "type") == "tool_use":
                names[str(field_of(block, "id"))] = str(field_of(block, "name"))
    return [(key, names.get(key, UNNAMED)) for key in ids]


def _gemini(items: list[Any]) -> list[tuple[str, str]]:
    position = len(items) - 1
    parts = field_of(items[position], "parts")
    found = []
    for index, part in enumerate(parts if isinstance(parts, (list, tuple)) else ()):
        response = field_of(part, "function_response", "functionResponse")
        if response is not None:
            name = str(field_of(response, "name") or UNNAMED)
            found.append((str(field_of(response, "id") or f"gemini:{position}:{index}:{name}"), name))
    return found
