"""Recognising credentials in values about to be journaled, so that they never are.

A credential is the value of a credential-like environment variable (OPENAI_API_KEY,
GITHUB_TOKEN, ...), or a string shaped like a vendor key or a bearer token. Pickles keep
strings as plain UTF-8, so looking in the pickled bytes finds them however deep they sit.
"""

from __future__ import annotations

import os
import re

_CREDENTIAL_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_KEY_SHAPES = re.compile(rb"(sk-[A-Za-z0-9_-]{16,}|AIza[0-9A-Za-z_-]{30,}|gh[pousr]_[A-Za-z0-9]{30,}"
                         rb"|xox[abprs]-[A-Za-z0-9-]{10,}|Bearer\s+[A-Za-z0-9._~+/=-]{8,})")
_MIN_LENGTH = 8  # shorter values ("1", "true") would match everywhere and protect nothing


def _environment_secrets() -> list[bytes]:
    return [value.encode() for name, value in os.environ.items()
            if _CREDENTIAL_NAME.search(name) and len(value) >= _MIN_LENGTH]


def holds_secret(data: bytes) -> bool:
    """Whether journaled bytes would carry a credential."""
    return _KEY_SHAPES.search(data) is not None or any(s in data for s in _environment_secrets())
