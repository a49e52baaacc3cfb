"""The OpenAI Responses API (``POST /v1/responses``) as the scripted stand-in speaks it. Not a model.

Tool rounds: when the request offers function tools (Responses shape, ``{"type": "function",
"name": ..., "parameters": {...}}``), ``tool_choice`` is not ``"none"`` and fewer
``function_call_output`` items follow the last ``role: "user"`` item than the round budget
(server ``tool_rounds`` or ``metadata.tool_rounds``), the answer is one ``function_call`` item;
otherwise it is a ``[scripted]`` text message. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .common import (
    DEFAULT_MODEL,
    BadRequest,
    chunks,
    created,
    pieces,
    reply_text,
    request_hash,
    schema_args,
    text_of,
    tool_rounds_for,
    words,
)


def _pick_function(body: dict[str, Any]) -> dict[str, Any] | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or choice == "none":
        return None
    fns = [t for t in tools if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)]
    if isinstance(choice, dict) and choice.get("type") == "function":
        fns = [t for t in fns if t["name"] == choice.get("name")] or fns
    return fns[0] if fns else None


def response(body: dict[str, Any], tool_rounds: int, reply_chars: int) -> dict[str, Any]:
    """The complete ``response`` object for ``body``; the streamed form is derived from it."""
    given = body.get("input")
    if isinstance(given, str):
        items: list[Any] = [{"role": "user", "content": given}]
    elif isinstance(given, list):
        items = [i for i in given if isinstance(i, dict)]
    else:
        raise BadRequest("'input' must be a string or a list of input items")
    texts = [text_of(i.get("content")) or text_of(i.get("output")) for i in items]
    h = request_hash(body)
    last_user = max((k for k, i in enumerate(items) if i.get("role") == "user"), default=-1)
    outputs = sum(i.get("type") in ("function_call_output", "local_shell_call_output")
                  for i in items[last_user + 1:])
    tool = _pick_function(body)
    shell = any(isinstance(t, dict) and t.get("type") == "local_shell" for t in body.get("tools") or [])
    item: dict[str, Any]
    if shell and tool is None and outputs < tool_rounds_for(body, tool_rounds):
        # A local shell command for the client to run (the Agents SDK's LocalShellTool runs it).
        produced = f"echo {h[:8]}"
        item = {"id": f"lsh_{h[:24]}", "type": "local_shell_call", "status": "completed", "call_id": f"call_{h[:12]}",
                "action": {"type": "exec", "command": ["sh", "-c", produced], "env": {}, "timeout_ms": None,
                           "user": None, "working_directory": None}}
    elif tool is not None and outputs < tool_rounds_for(body, tool_rounds):
        produced = json.dumps(schema_args(tool.get("parameters"), h))
        item = {"id": f"fc_{h[:24]}", "type": "function_call", "status": "completed",
                "call_id": f"call_{h[:12]}", "name": tool["name"], "arguments": produced}
    else:
        snippet = next((texts[k] for k in reversed(range(len(items)))
                        if items[k].get("role") == "user" or items[k].get("type") == "function_call_output"), "")
        produced = reply_text(h, snippet, reply_chars)
        item = {"id": f"msg_{h[:24]}", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": produced, "annotations": [], "logprobs": []}]}
    prompt, completion = words(text_of(body.get("instructions")), *texts), words(produced)
    return {
        "id": f"resp_{h[:24]}", "object": "response", "created_at": created(h), "status": "completed",
        "completed_at": created(h), "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {}, "model": body.get("model") or DEFAULT_MODEL,
        "output": [item], "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
        "temperature": body.get("temperature", 1.0), "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0), "truncation": "disabled", "user": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
                  "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }


def _item_events(item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    where = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "function_call":
        args = item["arguments"]
        return [
            # Arguments start empty: the SDK's accumulator appends each delta to the added item.
            ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress",
                                                                        "arguments": ""}}),
            *(("response.function_call_arguments.delta", {**where, "delta": c}) for c in chunks(args)),
            ("response.function_call_arguments.done", {**where, "arguments": args}),
            ("response.output_item.done", {"output_index": 0, "item": item}),
        ]
    part = item["content"][0]
    return [
        ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress",
                                                                    "content": []}}),
        ("response.content_part.added", {**where, "content_index": 0, "part": {**part, "text": ""}}),
        *(("response.output_text.delta", {**where, "content_index": 0, "delta": p, "logprobs": []})
          for p in pieces(part["text"])),
        ("response.output_text.done", {**where, "content_index": 0, "text": part["text"], "logprobs": []}),
        ("response.content_part.done", {**where, "content_index": 0, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
    ]


def response_events(done: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event name, payload)`` pairs streaming ``done``."""
    # The SDK's responses.stream() accumulator insists on this full lifecycle, in this order.
    pending = {**done, "status": "in_progress", "completed_at": None, "output": [], "usage": None}
    events = [("response.created", {"response": pending}), ("response.in_progress", {"response": pending}),
              *_item_events(done["output"][0]), ("response.completed", {"response": done})]
    for seq, (kind, payload) in enumerate(events):
        yield kind, {"type": kind, "sequence_number": seq, **payload}
