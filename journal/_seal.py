"""Encryption at rest (opt-in): what the agent saw and made is sealed before it reaches a file.

With a key (`DURABLE_KEY`: the key itself or the path of a file holding it; the kernel's
`Durable.key` setting sets it too), every blob (requests, responses, tool results, values,
variables, outputs, cell sources) is compressed and sealed with AES-GCM wherever it is written:
the append logs, the replay packs and DuckDB. So are the fields of a call's record that hold
what a person or a tool wrote (an approval's prompt, details and comment, an error's message)
and a step run's error. The structure stays readable without the key (sessions, steps, call
kinds, names, models, tokens, times): `durable ls` answers, and what needs content says in one
line which setting is missing.

A sealed blob carries the id of its key, so a wrong key is told apart from damage. Blob digests
are computed over the plain content, as without a key (they are the journal's identities):
someone holding the journal and guessing a message word for word can confirm the guess, not
read anything. Sealing is idempotent: bytes already sealed pass through as they are, so the
absorb of a log into DuckDB and a pack written from DuckDB need no key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import threading
from pathlib import Path
from typing import Any

from ._blobs import compress, decompress
from .errors import JournalError

MAGIC = b"\x00DKE\x01"
_ID = 4
_NONCE = 12
TEXT = "$sealed:"
# Keys of a call's meta whose values are what someone wrote, not the journal's structure.
CONTENT_KEYS = frozenset({"prompt", "details", "comment", "message"})
ENV = "DURABLE_KEY"
_SETTING = "DURABLE_KEY (or %config Durable.key, or key in [tool.durable])"


class JournalKeyError(JournalError):
    """The journal holds sealed records and the key to open them is missing or is not theirs."""


class Key:
    def __init__(self, secret: bytes) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise JournalKeyError(f"{ENV} is set but the cipher library is missing: "
                                  "pip install 'durable-kernel[encryption]' (it adds cryptography)") from None
        self.id = hmac.new(secret, b"durable-kernel key id", hashlib.sha256).digest()[:_ID]
        self._aead = AESGCM(secret)

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return MAGIC + self.id + nonce + self._aead.encrypt(nonce, data, MAGIC + self.id)

    def open(self, data: bytes) -> bytes:
        start = len(MAGIC)
        if data[start:start + _ID] != self.id:
            raise JournalKeyError(f"the key in {_SETTING} does not open this journal: its records were sealed "
                                  "with another key")
        nonce = data[start + _ID:start + _ID + _NONCE]
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(nonce, data[start + _ID + _NONCE:], MAGIC + self.id)
        except InvalidTag:
            raise JournalKeyError("a sealed record of this journal fails its check: the file was changed or "
                                  "damaged") from None


_lock = threading.Lock()
_FROM_ENVIRONMENT = object()
_chosen: Key | None | object = _FROM_ENVIRONMENT  # the key use() set (None: none), or read DURABLE_KEY


def derive(material: str) -> bytes:
    """32 bytes of key from what the user gave: a key file's path, a base64 or hex key, or a passphrase."""
    path = Path(material).expanduser()
    if len(material) < 4096 and path.is_file():
        material = path.read_text().strip()
    material = material.strip()
    for decode in (lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), bytes.fromhex):
        try:
            raw = decode(material)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == 32:
            return raw
    # A passphrase: stretched, so that guessing one costs what guessing a key file cannot.
    return hashlib.scrypt(material.encode(), salt=b"durable-kernel journal key", n=2 ** 14, r=8, p=1, dklen=32)


_derived: dict[str, Key] = {}


def _key_of(material: str | None) -> Key | None:
    if not material:
        return None
    with _lock:
        if material not in _derived:
            _derived[material] = Key(derive(material))
        return _derived[material]


def use(material: str | None) -> None:
    """Seal with `material` (None: go back to reading DURABLE_KEY); checks it at once."""
    global _chosen
    _chosen = _FROM_ENVIRONMENT if material is None else _key_of(material)


def current() -> Key | None:
    if _chosen is not _FROM_ENVIRONMENT:
        return _chosen  # type: ignore[return-value]
    return _key_of(os.environ.get(ENV) or None)


def is_sealed(data: bytes) -> bool:
    return data[:len(MAGIC)] == MAGIC


def _require() -> Key:
    key = current()
    if key is None:
        raise JournalKeyError(f"this journal's content is encrypted: set {_SETTING} to its key or key file "
                              "(`durable ls` shows its structure without it)")
    return key


def seal_blob(data: bytes) -> bytes:
    """`data` compressed and sealed, where a key is set; else as it is."""
    key = current()
    if key is None or is_sealed(data):
        return data
    # Compressed here, alone: sealed bytes do not compress, so a pack of them stays as large as this.
    codec, packed = compress(data)
    return key.seal(bytes([codec]) + packed)


def open_blob(data: bytes) -> bytes:
    if not is_sealed(data):
        return data
    plain = _require().open(bytes(data))
    try:
        return decompress(plain[0], plain[1:])
    except ValueError as exc:
        raise JournalKeyError(f"a sealed record: {exc}") from None


def open_blobs(blobs: dict[str, bytes]) -> dict[str, bytes]:
    return {key: open_blob(data) for key, data in blobs.items()}


def seal_value(value: Any) -> Any:
    key = current()
    if key is None or value is None or (isinstance(value, str) and value.startswith(TEXT)):
        return value
    sealed = key.seal(json.dumps(value, ensure_ascii=False).encode())
    return TEXT + base64.b64encode(sealed).decode()


def open_value(value: Any) -> Any:
    if not (isinstance(value, str) and value.startswith(TEXT)):
        return value
    return json.loads(_require().open(base64.b64decode(value[len(TEXT):])))


def seal_meta(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """`meta` with the values of its content keys sealed, at any depth (no copy without a key)."""
    if not meta or current() is None:
        return meta
    return {k: seal_value(v) if k in CONTENT_KEYS else seal_meta(v) if isinstance(v, dict) else v
            for k, v in meta.items()}


def open_meta(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if not meta:
        return meta
    return {k: open_value(v) if k in CONTENT_KEYS else open_meta(v) if isinstance(v, dict) else v
            for k, v in meta.items()}
