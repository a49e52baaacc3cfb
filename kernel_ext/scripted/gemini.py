"""The Gemini API (``generateContent`` / ``streamGenerateContent``) as the scripted stand-in speaks it.

Not a model. ``google.genai.Client(http_options={"base_url": server.url})`` posts to
``{url}/{api_version}/models/{model}:generateContent`` and, for streams,
``...:streamGenerateContent?alt=sse``; the SDK's default api_version is ``v1``, and ``v1beta`` /
``v1alpha`` are served the same way. So it takes the server root (``ScriptedModelServer.url``).

Tool rounds: the current turn starts at the last user content (``role`` "user" or absent) that holds
no ``functionResponse`` part (a fresh prompt); the rounds used are the ``functionResponse`` parts
after it. While ``tools`` offer ``functionDeclarations``, ``toolConfig.functionCallingConfig.mode``
is not ``NONE`` and the rounds used are fewer than the budget (server ``tool_rounds`` or
``metadata.tool_rounds``, which the SDK can send through ``http_options.extra_body``), the answer is
one ``functionCall`` part; otherwise a ``[scripted]`` text part. Standard library only.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .common import (
    BadRequest,
    pieces,
    reply_text,
    request_hash,
    schema_args,
    tool_rounds_for,
    words,
)

PATH = re.compile(r"/(?P<version>v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)")
METHODS = ("generateContent", "streamGenerateContent")
_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
             500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
             529: "UNAVAILABLE"}


def owns(path: str) -> bool:
    """Whether errors for ``path`` should come in Google's shape rather than OpenAI's."""
    return path.startswith(("/v1beta/", "/v1alpha/")) or PATH.fullmatch(path) is not None


def error_body(status: int, message: str) -> dict[str, Any]:
    name = _STATUSES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return {"error": {"code": status, "message": message, "status": name}}


def _field(obj: dict[str, Any], camel: str) -> Any:
    # Google's JSON parser takes proto field names in either spelling, and the SDK sends some
    # snake_case (parameters_json_schema), so read both.
    snake = re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), camel)
    return obj.get(camel, obj.get(snake))


def _parts(content: dict[str, Any]) -> list[dict[str, Any]]:
    parts = content.get("parts")
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _part_text(part: dict[str, Any]) -> str:
    if isinstance(part.get("text"), str):
        return part["text"]
    call = _field(part, "functionResponse")
    if not isinstance(call, dict):
        return ""
    # The SDK wraps a Python tool's return value as {"result": value}; quote that value like chat
    # quotes a tool message, and anything richer as its JSON.
    answer = call.get("response")
    if isinstance(answer, dict) and len(answer) == 1 and isinstance(next(iter(answer.values())), str):
        return next(iter(answer.values()))
    return answer if isinstance(answer, str) else json.dumps(answer, sort_keys=True)


def _pick_function(body: dict[str, Any]) -> dict[str, Any] | None:
    tools, config = body.get("tools"), _field(body, "toolConfig")
    calling = _field(config, "functionCallingConfig") if isinstance(config, dict) else None
    calling = calling if isinstance(calling, dict) else {}
    if not isinstance(tools, list) or str(calling.get("mode", "")).upper() == "NONE":
        return None
    declared = [_field(t, "functionDeclarations") for t in tools if isinstance(t, dict)]
    fns = [d for ds in declared if isinstance(ds, list) for d in ds
           if isinstance(d, dict) and isinstance(d.get("name"), str)]
    allowed = _field(calling, "allowedFunctionNames")
    if isinstance(allowed, list):
        fns = [d for d in fns if d["name"] in allowed] or fns
    return fns[0] if fns else None


def generate(model: str, body: dict[str, Any], tool_rounds: int, reply_chars: int) -> dict[str, Any]:
    """The complete ``GenerateContentResponse`` for ``body``; the streamed chunks are cut from it."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
        raise BadRequest("Invalid JSON payload: 'contents' must be a list of Content objects.")
    # The model sits in the URL, not the body, so it joins the hash to keep answers per request.
    h = request_hash({"model": model, "request": body})
    users = [(i, _parts(c)) for i, c in enumerate(contents) if c.get("role", "user") == "user"]
    answered = [(i, [_field(p, "functionResponse") is not None for p in parts]) for i, parts in users]
    prompt_at = max((i for i, flags in answered if not any(flags)), default=-1)
    responses = sum(sum(flags) for i, flags in answered if i > prompt_at)
    fn = _pick_function(body)
    if fn is not None and responses < tool_rounds_for(body, tool_rounds):
        schema = _field(fn, "parametersJsonSchema")
        args = schema_args(fn.get("parameters") if schema is None else schema, h)
        part: dict[str, Any] = {"functionCall": {"name": fn["name"], "args": args}}
        produced = json.dumps(args)
    else:
        snippet = next((t for _, parts in reversed(users) for t in map(_part_text, reversed(parts)) if t), "")
        produced = reply_text(h, snippet, reply_chars)
        part = {"text": produced}
    system = _field(body, "systemInstruction")
    prompt = words(*(_part_text(p) for c in [system if isinstance(system, dict) else {}, *contents]
                     for p in _parts(c)))
    completion = words(produced)
    return {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion,
                              "totalTokenCount": prompt + completion},
            "modelVersion": model, "responseId": h[:24]}


def stream_chunks(done: dict[str, Any]) -> list[dict[str, Any]]:
    """``done`` cut into stream chunks: text in pieces, a function call whole (as Gemini sends it);
    only the last chunk carries ``finishReason`` and ``usageMetadata``."""
    candidate = done["candidates"][0]
    part = candidate["content"]["parts"][0]
    texts = pieces(part["text"]) if "text" in part else [None]
    out = []
    for k, text in enumerate(texts):
        chunk: dict[str, Any] = {"content": {"role": "model", "parts": [part if text is None else {"text": text}]},
                                 "index": 0}
        last = k == len(texts) - 1
        if last:
            chunk["finishReason"] = candidate["finishReason"]
        out.append({"candidates": [chunk], **({"usageMetadata": done["usageMetadata"]} if last else {}),
                    "modelVersion": done["modelVersion"], "responseId": done["responseId"]})
    return out
