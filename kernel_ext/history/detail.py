"""One call, readable: its request and response as a conversation (messages by role), tool arguments
and results as JSON, an approval's details and decision."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from journal import Journal

from .. import stored
from ..errors import StepError
from .model import CallView, SessionHistory

_MAX_TEXT = 2000  # characters of one message shown; the journal keeps everything
_MAX_MESSAGES = 8  # latest messages of a conversation shown under each call


@dataclass
class Message:
    role: str  # user, assistant, system, tool, ...
    text: str
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments as JSON) it asked for
    reply: bool = False  # the model's answer to this request, not part of what was sent
    about: str = ""  # the tool call a tool result answers


@dataclass
class CallDetail:
    title: str  # the call's one number: "step plan · call 2"
    subtitle: str  # what it was and how it went: "tool lookup · completed · replayed"
    journal_id: int
    shade: str = "live"
    conversation: list[Message] = field(default_factory=list)  # oldest first
    omitted: int = 0  # earlier messages not shown
    sections: list[tuple[str, str]] = field(default_factory=list)  # (heading, preformatted text)

    @property
    def heading(self) -> str:
        return f"{self.title} · {self.subtitle}"


def call_detail(journal: Journal, call: CallView) -> CallDetail:
    with journal.open() as store:
        document = store.call_documents(call.id)
    if document is None:
        raise StepError(f"no call with journal id {call.id} in {journal.path}")
    return _detail(call, document)


def all_details(journal: Journal, history: SessionHistory, limit: int | None = None) -> dict[int, CallDetail]:
    """The detail of each call drawn (the first rows of each step shown), read together in a few queries;
    `limit`: only the latest that many of them."""
    calls = [call for step in history.steps
             for call in (step.calls if history.rows is None else step.calls[:history.rows])]
    if limit is not None:
        calls = calls[len(calls) - limit:] if limit > 0 else []
    return details_of(journal, calls)


def details_of(journal: Journal, calls: list[CallView]) -> dict[int, CallDetail]:
    """The detail of each of `calls` (those the journal has), read together in a few queries."""
    with journal.open() as store:
        documents = store.calls_documents([call.id for call in calls])
    return {call.id: _detail(call, documents[call.id]) for call in calls if call.id in documents}


def _detail(view: CallView, call: dict[str, Any]) -> CallDetail:
    subtitle = " · ".join([view.what, view.state] + ([view.use] if view.kind != "approval" else []))
    detail = CallDetail(view.ref, subtitle, view.id, view.shade)
    meta, request, response = call["meta"], call["request"], call["response"]
    if call["kind"] == "llm":
        _llm_detail(detail, request, response, meta)
    elif call["kind"] == "tool":
        detail.sections.append(("arguments", _json(request.get("args") if isinstance(request, dict) else request)))
        detail.sections.append(_outcome(meta, response))
        if meta.get("idempotency_key"):
            detail.sections.append(("idempotency key", meta["idempotency_key"]))
        if view.in_doubt:
            settle = f"durable settle {shlex.quote(call['session'])} {view.id}"
            detail.sections.append(("settle it", f"{settle} --value JSON (it took effect) or --retry (it did not)"))
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
        system = body.get("system")  # anthropic sends it beside the messages
        if isinstance(system, str) and system:
            detail.conversation.append(Message("system", _clip(system)))
        detail.conversation += [_message(m) for m in shown]
    elif messages is not None:
        detail.sections.append(("input", _json(messages)))
    options = {k: v for k, v in body.items() if k not in ("messages", "input", "contents", "tools", "system")}
    if body.get("tools"):
        options["tools"] = [(t.get("function") or t).get("name") for t in body["tools"] if isinstance(t, dict)]
    detail.sections.append(("request options", _json(options)))
    reply = _reply(response)
    if reply is not None:
        reply.reply = True
        detail.conversation.append(reply)
    elif response is not None:
        detail.sections.append(("response", _clip(_json(response))))


def _message(message: dict[str, Any]) -> Message:
    role = str(message.get("role") or message.get("type") or "item")
    parts: list[str] = []
    calls: list[tuple[str, str]] = []
    content = message.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        parts += [c.get("text", "") if isinstance(c, dict) else str(c) for c in content]
    parts += [p["text"] for p in message.get("parts") or [] if isinstance(p, dict) and "text" in p]  # gemini
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        calls.append((str(function.get("name")), _pretty(function.get("arguments", ""))))
    if message.get("type") == "function_call":
        calls.append((str(message.get("name")), _pretty(message.get("arguments", ""))))
    if message.get("type") == "function_call_output":
        parts.append(str(message.get("output", "")))
    about = str(message.get("tool_call_id") or message.get("call_id") or "")
    if role in ("tool", "function_call_output"):
        role = "tool result"
    return Message(role, _clip("\n".join(p for p in parts if p)), calls, about=about)


def _reply(response: Any) -> Message | None:
    """The model's answer, from a JSON body or an assembled server-sent-event stream."""
    if isinstance(response, (bytes, bytearray)):
        response = _assemble_stream(bytes(response))
    if not isinstance(response, dict):
        return None
    if response.get("choices"):
        return _message({"role": "assistant", **(response["choices"][0].get("message") or {})})
    if isinstance(response.get("output"), list):
        items = [_message(item) for item in response["output"] if isinstance(item, dict)]
        return Message("assistant", "\n".join(m.text for m in items if m.text),
                       [c for m in items for c in m.tool_calls])
    if isinstance(response.get("content"), list):  # anthropic
        text = "\n".join(c.get("text", "") for c in response["content"] if isinstance(c, dict))
        calls = [(str(c.get("name")), _json(c.get("input"))) for c in response["content"]
                 if isinstance(c, dict) and c.get("type") == "tool_use"]
        return Message("assistant", _clip(text), calls)
    if isinstance(response.get("data"), list):
        return Message("assistant", f"{len(response['data'])} embeddings")
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
    if meta.get("body") in ("data", "pickle") and isinstance(response, bytes):
        # A view never loads a pickle (loading runs code): a value stored as data is shown as its JSON.
        shown = stored.show(response, meta["body"])
        return "result", _clip(shown if meta["body"] == "pickle" else _json(shown))
    return "result", _clip(_json(response))


def _pretty(text: Any) -> str:
    """Arguments a model sent as a JSON string, indented where they parse."""
    if not isinstance(text, str):
        return _json(text)
    try:
        return _json(json.loads(text))
    except ValueError:
        return text


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + f"… ({len(text) - _MAX_TEXT} more characters)"


def detail_text(detail: CallDetail) -> str:
    lines = [f"{detail.heading} (journal id {detail.journal_id})"]
    if detail.omitted:
        lines.append(f"  … {detail.omitted} earlier messages")
    for message in detail.conversation:
        role = message.role + (" · reply" if message.reply else "")
        lines.append(f"  [{role}] {message.text}")
        lines += [f"      asks to run {name}({arguments})" for name, arguments in message.tool_calls]
    lines += [f"  {heading}: {text}" for heading, text in detail.sections]
    return "\n".join(lines)
