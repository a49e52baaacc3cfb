"""Deterministic pieces shared by every API the scripted stand-in speaks. Not a model.

Each function is a pure function of its arguments, so whatever an API module builds from a request
body is the same bytes every time that body arrives. Standard library only, like the server itself:
the stand-in must not share code with the clients it tests.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

VOCAB = ("lisbon", "amber", "cobalt", "delta", "ember", "fjord", "granite", "harbor",
         "indigo", "juniper", "kestrel", "lumen", "meadow", "nimbus", "orchid", "pylon")
DEFAULT_MODEL = "scripted-chat"
# Fields that change framing, not meaning: a streamed answer must equal the non-streamed one.
TRANSPORT_KEYS = frozenset({"stream", "stream_options"})
ARG_CHUNK = 12  # characters of tool-call arguments per streamed delta, in every API


class BadRequest(Exception):
    """The body is not one the API accepts; the server answers 400 in that API's error shape."""


def request_hash(body: Any) -> str:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in TRANSPORT_KEYS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def created(h: str) -> int:
    # Derived from the hash rather than the clock so identical requests stay byte-identical.
    return 1_700_000_000 + int(h[:6], 16)


def word(seed: str) -> str:
    d = hashlib.sha256(seed.encode()).hexdigest()
    return f"{VOCAB[int(d[:2], 16) % len(VOCAB)]}-{d[2:6]}"


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def words(*texts: str) -> int:
    return max(1, sum(len(t.split()) for t in texts))


def reply_text(h: str, snippet: str, reply_chars: int) -> str:
    out = [f"[scripted] reply {h[:8]} to: {snippet[:60]}"]
    size = len(out[0])
    while size < reply_chars:
        out.append(VOCAB[hashlib.sha256(f"{h}/pad/{len(out)}".encode()).digest()[0] % len(VOCAB)])
        size += 1 + len(out[-1])
    text = " ".join(out)
    return text[:reply_chars] if reply_chars > 0 else text


def pieces(text: str, per: int = 3) -> list[str]:
    # Every character lands in exactly one token, so "".join(pieces) == text.
    tokens = re.findall(r"\S+\s*|\s+", text)
    return ["".join(tokens[i:i + per]) for i in range(0, len(tokens), per)]


def chunks(text: str, size: int = ARG_CHUNK) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def schema_value(schema: Any, seed: str) -> Any:
    schema = schema if isinstance(schema, dict) else {}
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "string")
    if isinstance(kind, list):  # ["string", "null"]: nullable, prefer the concrete type
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()  # Gemini's own schema dialect spells types "STRING", "OBJECT", ...
    small = int(hashlib.sha256(seed.encode()).hexdigest()[:4], 16)
    simple = {"integer": 1 + small % 9, "number": 1 + (small % 900) / 100, "boolean": True,
              "array": [], "object": {}, "null": None}
    return simple[kind] if kind in simple else word(seed)


def schema_args(params: Any, h: str) -> dict[str, Any]:
    """Arguments for a tool whose parameters are the JSON schema ``params``: every required property
    (all of them when ``required`` is absent), each filled with a value of its declared type."""
    params = params if isinstance(params, dict) else {}
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    names = params["required"] if isinstance(params.get("required"), list) else list(props)
    return {name: schema_value(props.get(name), f"{h}/{name}") for name in names}


def tool_rounds_for(body: dict[str, Any], default: int) -> int:
    """The server's tool_rounds, unless the request carries ``metadata.tool_rounds`` (a digit string,
    since OpenAI metadata values must be strings); every API reads the same override."""
    meta = body.get("metadata")
    if isinstance(meta, dict) and str(meta.get("tool_rounds", "")).isdigit():
        return int(meta["tool_rounds"])
    return default
