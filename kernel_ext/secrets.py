"""Recognising credentials in what is about to be journaled, so that they never are.

A credential is: the value of a credential-like environment variable (OPENAI_API_KEY,
GITHUB_TOKEN, ...); the `api_key` of a model SDK client the notebook holds; a string shaped
like a vendor key or a bearer token; or the value of an auth header or key field (a mapping
key such as Authorization, x-api-key, api_key, token, secret, password). Pickles keep strings as
plain UTF-8, so looking in the pickled bytes finds them however deep inside a value they sit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"
_CREDENTIAL_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_KEY_SHAPE = (r"sk-[A-Za-z0-9_-]{16,}|AIza[0-9A-Za-z_-]{30,}|gh[pousr]_[A-Za-z0-9]{30,}"
              r"|xox[abprs]-[A-Za-z0-9-]{10,}|Bearer\s+[A-Za-z0-9._~+/=-]{8,}")
_KEY_SHAPES = re.compile(_KEY_SHAPE.encode())
_KEY_SHAPES_TEXT = re.compile(_KEY_SHAPE)
_FIELD = (r"[A-Za-z0-9_-]*(?:[Aa]uthorization|[Aa][Pp][Ii][-_]?[Kk][Ee][Yy]|[Tt]oken|[Ss]ecret|[Pp]assword)"
          r"[A-Za-z0-9_-]*")
# In a pickle, a mapping's string key directly followed by a string value: {"Authorization": "..."}.
_PICKLED_FIELD = re.compile(rb"\x8c.(?:" + _FIELD.encode() + rb")\x94?\x8c", re.DOTALL)
_FIELD_NAME = re.compile(_FIELD)
_MIN_LENGTH = 8  # shorter values ("1", "true") would match everywhere and protect nothing


def secret_values(namespace: Mapping[str, Any] | None = None) -> list[str]:
    """Credential values known here: the environment's, and the api_key of clients in `namespace`."""
    found = list(_environment_secrets())
    for value in (namespace or {}).values():
        key = getattr(value, "api_key", None) if not isinstance(value, type) else None
        if isinstance(key, str) and len(key) >= _MIN_LENGTH:
            found.append(key)
    return found


_seen_environment: tuple[dict[Any, Any], list[str]] = ({}, [])


def _environment_secrets() -> list[str]:
    # Asked for every journaled call: the environment is scanned again only when it changed
    # (os.environ decodes every entry it yields, ~100 us for a usual environment).
    global _seen_environment
    raw = getattr(os.environ, "_data", None)
    if raw is not None and raw == _seen_environment[0]:
        return _seen_environment[1]
    found = [value for name, value in os.environ.items()
             if _CREDENTIAL_NAME.search(name) and len(value) >= _MIN_LENGTH]
    if raw is not None:
        _seen_environment = (dict(raw), found)
    return found


def holds_secret(data: bytes, known: Iterable[str] = ()) -> bool:
    """Whether pickled bytes about to be journaled would carry a credential."""
    if _KEY_SHAPES.search(data) or _PICKLED_FIELD.search(data):
        return True
    return any(value.encode() in data for value in known)


def redact_text(text: str, known: Iterable[str] | None = None) -> str:
    """Source text with credentials replaced by <redacted> (cell sources are kept for export)."""
    text = _KEY_SHAPES_TEXT.sub(REDACTED, text)
    for value in sorted(secret_values() if known is None else known, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def redact_document(value: Any, known: Iterable[str] | None = None) -> Any:
    """A JSON document (a tool's arguments) with credential values replaced by <redacted>."""
    known = list(secret_values() if known is None else known)
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(v, str) and _FIELD_NAME.fullmatch(str(k)) and v
                else redact_document(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_document(v, known) for v in value]
    if isinstance(value, str):
        return redact_text(value, known)
    return value
