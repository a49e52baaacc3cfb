"""What a session did, for people: its steps and calls, and each call's request and response.

One model (`SessionHistory`, `CallDetail`) feeds the history widget, the HTML rendering used
where widgets cannot render (nbclient output, a notebook on a code host), and plain text.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

from journal import Journal

from .errors import StepError

_MAX_TEXT = 2000  # characters of one message shown; the journal keeps everything
_MAX_MESSAGES = 8  # latest messages of a conversation shown under each call


@dataclass
class CallView:
    id: int
    seq: int
    kind: str
    name: str
    model: str | None
    status: str
    attempts: int
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    currency: str | None
    live: bool  # recorded by the step's last run
    # What the step's last run did with it: live, replayed, not used by the last run (an edit changed
    # the request at its place, or a failed call was made again; kept as history), or recorded earlier
    # (a run of an older release, which did not say which calls it replayed).
    use: str = "live"

    def label(self) -> str:
        head = f"{self.seq}. {self.kind} {self.name}" + (f" [{self.model}]" if self.model else "")
        if self.kind == "approval":  # a person's decision: neither live nor replayed, and its time is theirs
            state = "decided" if self.status == "completed" else "waiting for a person"
            waited = f"waited {self.latency_ms / 1000:.0f} s" if self.latency_ms is not None else None
            return " · ".join(p for p in (head, state, waited) if p)
        parts = [head, self.status, self.use]
        if self.attempts > 1:
            parts.append(f"{self.attempts} attempts")
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.0f} ms")
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            parts.append(f"{self.prompt_tokens or 0}+{self.completion_tokens or 0} tokens")
        if self.cost is not None:
            parts.append(_money(self.cost, self.currency))
        return " · ".join(parts)


@dataclass
class StepView:
    name: str
    status: str
    runs: int
    seconds: float | None
    live: int | None
    replayed: int | None
    tokens: int
    cost: float | None
    calls: list[CallView] = field(default_factory=list)

    def label(self) -> str:
        mark = {"completed": "✓", "failed": "✗", "suspended": "⏸", "running": "…", "interrupted": "■"}.get(
            self.status, "·")
        parts = [f"{mark} {self.name}", self.status, _count(len(self.calls), "call")]
        if self.live is not None:
            parts.append(f"last run {self.replayed} replayed, {self.live} live")
        if self.seconds is not None:
            parts.append(f"{self.seconds:.1f} s")
        if self.tokens:
            parts.append(f"{self.tokens:,} tokens")
        if self.cost is not None:
            parts.append(_money(self.cost, self.calls[0].currency if self.calls else None))
        return " · ".join(parts)


@dataclass
class SessionHistory:
    session: str
    journal: str
    steps: list[StepView]

    def totals(self) -> str:
        calls = sum(len(s.calls) for s in self.steps)
        tokens = sum(s.tokens for s in self.steps)
        costs = [s.cost for s in self.steps if s.cost is not None]
        cost = f", {_money(sum(costs), None)} where priced" if costs else ""
        return (f"session {self.session!r}: {_count(len(self.steps), 'step')}, {_count(calls, 'call')}, "
                f"{tokens:,} tokens{cost}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _money(value: float, currency: str | None) -> str:
    return f"{value:.4f} {currency or ''}".rstrip()


def load_history(journal: Journal, session: str) -> SessionHistory:
    with journal.open() as store:
        steps = store.steps_of(session)
        if not steps and session not in {s["session"] for s in store.sessions_overview()}:
            known = ", ".join(s["session"] for s in store.sessions_overview()) or "none"
            raise StepError(f"no session {session!r} in {journal.path}; sessions: {known}")
        calls = store.session_calls(session)
    views = []
    for s in steps:
        step_calls = [CallView(c["id"], c["seq"], c["kind"], c["name"], c["model"], c["status"],
                               c["attempts"] or 1, c["latency_ms"], c["prompt_tokens"], c["completion_tokens"],
                               c["cost"], c["currency"], c["run_id"] == s["last_run_id"],
                               _use(c, s["last_run_id"], s["last_run_replayed_calls"]))
                      for c in calls.get(s["name"], [])]
        views.append(StepView(s["name"], s["status"], s["runs"], s["last_run_seconds"], s["last_run_live"],
                              s["last_run_replayed"], int(s["tokens"] or 0), s["cost"], step_calls))
    return SessionHistory(session, str(journal.path), views)


def _use(call: dict[str, Any], last_run: int | None, replayed: set[int] | None) -> str:
    if call["run_id"] == last_run:
        return "live"
    if replayed is None:
        return "recorded earlier"
    return "replayed" if call["id"] in replayed else "not used by the last run"


# -- one call, readable ---------------------------------------------------------------------------

@dataclass
class CallDetail:
    title: str
    conversation: list[tuple[str, str]] = field(default_factory=list)  # (role, text), oldest first
    omitted: int = 0  # earlier messages not shown
    sections: list[tuple[str, str]] = field(default_factory=list)  # (heading, preformatted text)


def call_detail(journal: Journal, call_id: int) -> CallDetail:
    with journal.open() as store:
        call = store.call_documents(call_id)
    if call is None:
        raise StepError(f"no call {call_id} in {journal.path}")
    return _detail(call)


def all_details(journal: Journal, history: SessionHistory) -> dict[int, CallDetail]:
    with journal.open() as store:
        return {call.id: _detail(store.call_documents(call.id)) for step in history.steps for call in step.calls}


def _detail(call: dict[str, Any]) -> CallDetail:
    detail = CallDetail(f"call {call['id']}: {call['kind']} {call['name']}"
                        + (f" [{call['model']}]" if call["model"] else "") + f" ({call['status']})")
    meta, request, response = call["meta"], call["request"], call["response"]
    if call["kind"] == "llm":
        _llm_detail(detail, request, response, meta)
    elif call["kind"] == "tool":
        detail.sections.append(("arguments", _json(request.get("args") if isinstance(request, dict) else request)))
        detail.sections.append(_outcome(meta, response))
        if meta.get("idempotency_key"):
            detail.sections.append(("idempotency key", meta["idempotency_key"]))
    elif call["kind"] == "approval":
        detail.sections.append(("asked", meta.get("prompt") or ""))
        if meta.get("details") is not None:
            detail.sections.append(("details", _json(meta["details"])))
        detail.sections.append(("decision", _json(response) if response is not None else "pending"))
    else:
        detail.sections.append(_outcome(meta, response))
    return detail


def _llm_detail(detail: CallDetail, request: Any, response: Any, meta: dict[str, Any]) -> None:
    body = request.get("body") if isinstance(request, dict) else None
    if not isinstance(body, dict):
        detail.sections.append(("request", _json(request)))
        return
    messages = body.get("messages", body.get("input", body.get("contents")))  # openai, anthropic; gemini
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        shown = messages[-_MAX_MESSAGES:]
        detail.omitted = len(messages) - len(shown)
        detail.conversation = [(_role(m), _message_text(m)) for m in shown]
    elif messages is not None:
        detail.sections.append(("input", _json(messages)))
    options = {k: v for k, v in body.items() if k not in ("messages", "input", "contents", "tools")}
    if body.get("tools"):
        options["tools"] = [(t.get("function") or t).get("name") for t in body["tools"] if isinstance(t, dict)]
    detail.sections.append(("request options", _json(options)))
    reply = _reply(response, meta)
    if reply is not None:
        detail.conversation.append(("assistant (reply)", reply))
    elif response is not None:
        detail.sections.append(("response", _clip(_json(response))))


def _role(message: dict[str, Any]) -> str:
    role = message.get("role") or message.get("type") or "item"
    return f"tool result ({message['tool_call_id']})" if role == "tool" and "tool_call_id" in message else role


def _message_text(message: dict[str, Any]) -> str:
    parts = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        parts += [c.get("text", "") if isinstance(c, dict) else str(c) for c in content]
    parts += [p["text"] for p in message.get("parts") or [] if isinstance(p, dict) and "text" in p]  # gemini
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        parts.append(f"→ {function.get('name')}({function.get('arguments', '')})")
    if message.get("type") == "function_call":
        parts.append(f"→ {message.get('name')}({message.get('arguments', '')})")
    if message.get("type") == "function_call_output":
        parts.append(str(message.get("output", "")))
    return _clip("\n".join(p for p in parts if p))


def _reply(response: Any, meta: dict[str, Any]) -> str | None:
    """The model's answer, from a JSON body or an assembled server-sent-event stream."""
    if isinstance(response, (bytes, bytearray)):
        response = _assemble_stream(bytes(response))
    if not isinstance(response, dict):
        return None
    if response.get("choices"):
        message = response["choices"][0].get("message") or {}
        return _message_text(message)
    if isinstance(response.get("output"), list):
        return "\n".join(_message_text(item) for item in response["output"] if isinstance(item, dict))
    if isinstance(response.get("data"), list):
        return f"{len(response['data'])} embeddings"
    return None


def _assemble_stream(body: bytes) -> dict[str, Any] | None:
    content: list[str] = []
    tools: dict[int, dict[str, str]] = {}
    for line in body.splitlines():
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        if event.get("type") == "response.completed":
            return event.get("response")
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or []:
                slot = tools.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
    if not content and not tools:
        return None
    message = {"content": "".join(content),
               "tool_calls": [{"function": tools[i]} for i in sorted(tools)]}
    return {"choices": [{"message": message}]}


def _outcome(meta: dict[str, Any], response: Any) -> tuple[str, str]:
    if meta.get("error"):
        return "raised", f"{meta['error'].get('type')}: {meta['error'].get('message')}"
    if response is None:
        return "result", "none yet (started, no outcome recorded: in doubt)"
    if meta.get("body") == "pickle" and isinstance(response, bytes):
        try:
            import cloudpickle

            value = cloudpickle.loads(response)
        except Exception:  # noqa: BLE001 - a class this process cannot import
            return "result", f"(a pickled value of {len(response)} bytes)"
        try:  # JSON where the value is JSON data, as the README promises; Python's repr for the rest
            return "result", _clip(json.dumps(value, indent=2, ensure_ascii=False))
        except (TypeError, ValueError):
            return "result", _clip(repr(value))
    return "result", _clip(_json(response))


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + f"… ({len(text) - _MAX_TEXT} more characters)"


# -- renderings -----------------------------------------------------------------------------------

_CSS = ("font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;"
        "border-left:3px solid #888;padding-left:8px;margin:4px 0")


def detail_html(detail: CallDetail) -> str:
    parts = [f"<div><b>{html.escape(detail.title)}</b></div>"]
    if detail.omitted:
        parts.append(f"<div style='opacity:.6'>… {detail.omitted} earlier messages</div>")
    for role, text in detail.conversation:
        parts.append(f"<div style='{_CSS}'><div style='opacity:.7'>{html.escape(role)}</div>"
                     f"<div style='white-space:pre-wrap'>{html.escape(text)}</div></div>")
    for heading, text in detail.sections:
        parts.append(f"<div><i>{html.escape(heading)}</i><pre style='margin:2px 0'>{html.escape(text)}</pre></div>")
    return "".join(parts)


def detail_text(detail: CallDetail) -> str:
    lines = [detail.title]
    if detail.omitted:
        lines.append(f"  … {detail.omitted} earlier messages")
    lines += [f"  [{role}] {text}" for role, text in detail.conversation]
    lines += [f"  {heading}: {text}" for heading, text in detail.sections]
    return "\n".join(lines)


def history_html(history: SessionHistory, details: dict[int, CallDetail]) -> str:
    """The whole history as nested <details>: steps, their calls, each call's request and response."""
    parts = [f"<div class='durable-history'><b>{html.escape(history.totals())}</b>"]
    for step in history.steps:
        parts.append(f"<details><summary>{html.escape(step.label())}</summary><div style='margin-left:1em'>")
        for call in step.calls:
            inner = detail_html(details[call.id]) if call.id in details else ""
            parts.append(f"<details><summary>{html.escape(call.label())}</summary>"
                         f"<div style='margin-left:1em'>{inner}</div></details>")
        parts.append("</div></details>")
    parts.append("</div>")
    return "".join(parts)


def history_text(history: SessionHistory) -> str:
    lines = [history.totals()]
    for step in history.steps:
        lines.append(f"  {step.label()}")
        lines += [f"      {call.label()}" for call in step.calls]
    return "\n".join(lines)


class HistoryDocument:
    """The history where widgets cannot render: HTML for notebooks and code hosts, text for terminals."""

    def __init__(self, history: SessionHistory, details: dict[int, CallDetail]) -> None:
        self.history, self.details = history, details

    def _repr_html_(self) -> str:
        return history_html(self.history, self.details)

    def __repr__(self) -> str:
        return history_text(self.history)


# The widget lives in the `widgets` package, which depends on this one; it registers itself.
presenters: dict[str, Any] = {}


def history_view(journal: Journal, session: str) -> Any:
    """`%durable history`: the widget where ipywidgets is installed, else the HTML/text document."""
    history = load_history(journal, session)
    show = presenters.get("history")
    if show is not None:
        return show(journal, history)
    return HistoryDocument(history, all_details(journal, history))
