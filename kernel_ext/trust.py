"""Which pickles may be loaded: those this user wrote, and those this user trusted on purpose.

Loading a pickle runs code (`__reduce__`), and journals travel. So a pickle is written sealed: an
HMAC-SHA256 of its bytes, under a key of this user's kept outside any journal (0600, in the folder
`$DURABLE_HOME`, else `$XDG_DATA_HOME/durable-kernel`, else `~/.local/share/durable-kernel`), goes in
front of it. A journal cannot carry a valid seal without the key. A pickle whose seal does not check
(another user's, or one written before pickles were sealed) is loaded only if its digest under this
user's key is in the trusted list beside the key, which `durable trust JOURNAL` fills after the user
checked where the journal came from; the journal itself is never changed by trusting it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cloudpickle

from journal import make_dirs, open_file

from .errors import DurableError, UntrustedPickleError

_SEAL = b"\x00DK1"  # never the start of a pickle (b"\x80" + protocol)
_TAG = 32  # bytes of HMAC-SHA256
_KEY_BYTES = 32


def home() -> Path:
    """The folder of this user's key and trusted list."""
    if os.environ.get("DURABLE_HOME"):
        return Path(os.environ["DURABLE_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "durable-kernel"


_keys: dict[tuple[str, str], bytes] = {}  # by the settings that choose the folder: read on every seal
_trusted: dict[Path, set[str]] = {}


def _key() -> bytes:
    chosen = (os.environ.get("DURABLE_HOME", ""), os.environ.get("XDG_DATA_HOME", ""))
    key = _keys.get(chosen)
    if key is None:
        path = home() / "key"
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = _new_key(path)
        if len(key) < _KEY_BYTES:
            raise DurableError(f"the signing key {path} is damaged ({len(key)} bytes); remove it, then "
                               "`durable trust` the journals that are yours")
        _keys[chosen] = key
    return key


def _new_key(path: Path) -> bytes:
    make_dirs(path.parent)
    key = secrets.token_bytes(_KEY_BYTES)
    partial = path.with_name(f"key.{os.getpid()}.new")
    partial.unlink(missing_ok=True)
    with os.fdopen(open_file(partial, os.O_WRONLY, new=True), "wb") as out:
        out.write(key)
        out.flush()
        os.fsync(out.fileno())
    try:
        os.link(partial, path)  # fails if another process made the key first: then theirs is the key
    except FileExistsError:
        key = path.read_bytes()
    finally:
        os.unlink(partial)
    return key


def _digest(data: bytes) -> bytes:
    return hmac.digest(_key(), data, hashlib.sha256)


def seal(value: Any) -> bytes:
    """`value` pickled, with this user's seal in front."""
    return seal_pickle(cloudpickle.dumps(value))


def seal_pickle(data: bytes) -> bytes:
    """A pickle made here, with this user's seal in front."""
    return _SEAL + _digest(data) + data


def sealed(data: bytes) -> bool:
    return data.startswith(_SEAL)


def unseal(blob: bytes, what: str, journal: Any = None) -> Any:
    """The value of a stored pickle, if this user wrote or trusted it; else UntrustedPickleError naming `what`."""
    data, tag = _parts(blob)
    digest = _digest(data)
    if tag is not None and hmac.compare_digest(tag, digest):
        return cloudpickle.loads(data)
    if digest.hex() in _trusted_list():
        return cloudpickle.loads(data)
    where = f" {journal}" if journal is not None else " JOURNAL"
    why = ("was written before pickles were sealed" if tag is None
           else "was not written by this user")
    raise UntrustedPickleError(f"{what} is a pickle that {why}, so it is not loaded (loading runs code); if the "
                          f"journal is yours or you checked where it came from: durable trust{where}")


def describe(blob: bytes) -> str:
    """What a view shows for a stored pickle: never its value (a view does not load pickles)."""
    data, tag = _parts(blob)
    whose = "unsealed" if tag is None else "sealed"
    return f"(a {whose} pickle of {len(data):,} bytes; views do not load pickles)"


def trust(pickles: Iterable[bytes]) -> int:
    """Add these stored pickles to this user's trusted list; returns how many were new."""
    known = _trusted_list()
    new = [d for d in dict.fromkeys(_digest(_parts(blob)[0]).hex() for blob in pickles) if d not in known]
    if new:
        path = home() / "trusted"
        make_dirs(path.parent)
        with os.fdopen(open_file(path, os.O_WRONLY | os.O_APPEND), "a") as out:
            out.write("".join(d + "\n" for d in new))
        known.update(new)
    return len(new)


def _parts(blob: bytes) -> tuple[bytes, bytes | None]:
    """(the pickle, its seal or None)."""
    if blob.startswith(_SEAL):
        return blob[len(_SEAL) + _TAG:], blob[len(_SEAL):len(_SEAL) + _TAG]
    return blob, None


def _trusted_list() -> set[str]:
    folder = home()
    if folder not in _trusted:
        try:
            lines = (folder / "trusted").read_text().split()
        except FileNotFoundError:
            lines = []
        _trusted[folder] = set(lines)
    return _trusted[folder]
