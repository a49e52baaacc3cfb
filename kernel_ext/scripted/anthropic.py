"""The Anthropic Messages API (``POST /v1/messages``) as the scripted stand-in speaks it. Not a model.

The ``anthropic`` SDK appends ``/v1/messages`` to its base URL, so it takes the server root
(``ScriptedModelServer.url``), not ``base_url``.

Tool rounds: the current turn starts at the last user message that holds no ``tool_result``
block (a fresh prompt); the rounds used are the ``tool_result`` blocks in user messages after it.
While tools are offered (``{"name", "input_schema", ...}``), ``tool_choice`` is not
``{"type": "none"}`` and the rounds used are fewer than the budget (server ``tool_rounds`` or
``metadata.tool_rounds``), the answer is one ``tool_use`` block with ``stop_reason: "tool_use"``;
otherwise a ``[scripted]`` text block with ``stop_reason: "end_turn"``. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .common import (
    DEFAULT_MODEL,
    BadRequest,
    chunks,
    pieces,
    reply_text,
    request_hash,
    schema_args,
    text_of,
    tool_rounds_for,
    words,
)

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _block_text(block: dict[str, Any]) -> str:
    if block.get("type") == "tool_result":
        return text_of(block.get("content"))
    return block["text"] if block.get("type") == "text" and isinstance(block.get("text"), str) else ""


def _pick_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    # Server tools (web search and the like) carry no input_schema; only client tools get called.
    fns = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
           and isinstance(t.get("input_schema"), dict)]
    if isinstance(choice, dict) and choice.get("type") == "tool":
        fns = [t for t in fns if t["name"] == choice.get("name")] or fns
    return fns[0] if fns else None


def message(body: dict[str, Any], tool_rounds: int, reply_chars: int) -> dict[str, Any]:
    """The complete ``message`` object for ``body``; the streamed form is derived from it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages: Input should be a valid list of message objects")
    h = request_hash(body)
    users = [(i, _blocks(m)) for i, m in enumerate(messages) if m.get("role") == "user"]
    prompt_at = max((i for i, blocks in users if all(b.get("type") != "tool_result" for b in blocks)), default=-1)
    results = sum(b.get("type") == "tool_result" for i, blocks in users if i > prompt_at for b in blocks)
    tool = _pick_tool(body)
    content: list[dict[str, Any]]
    if tool is not None and results < tool_rounds_for(body, tool_rounds):
        args = schema_args(tool["input_schema"], h)
        content = [{"type": "tool_use", "id": f"toolu_{h[:24]}", "name": tool["name"], "input": args}]
        stop, produced = "tool_use", json.dumps(args)
    else:
        snippet = next((t for _, blocks in reversed(users) for t in map(_block_text, reversed(blocks)) if t), "")
        produced = reply_text(h, snippet, reply_chars)
        content, stop = [{"type": "text", "text": produced}], "end_turn"
    prompt = words(text_of(body.get("system")), *(_block_text(b) for m in messages for b in _blocks(m)))
    return {"id": f"msg_{h[:24]}", "type": "message", "role": "assistant",
            "model": body.get("model") or DEFAULT_MODEL, "content": content, "stop_reason": stop,
            "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": words(produced),
                                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def message_events(done: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event name, payload)`` pairs streaming ``done``, in the order the Messages API sends them."""
    usage = done["usage"]
    yield "message_start", {"type": "message_start", "message": {
        **done, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}}
    yield "ping", {"type": "ping"}  # the real API sends one too; clients must skip it
    for index, block in enumerate(done["content"]):
        if block["type"] == "tool_use":
            start = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": c} for c in chunks(json.dumps(block["input"]))]
        else:
            start = {**block, "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
        for delta in deltas:
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": done["stop_reason"], "stop_sequence": None},
                            "usage": {"output_tokens": usage["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}
