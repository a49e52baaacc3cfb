"""How a Python value the agent made is stored in the journal, and loaded back: as data, else as a sealed pickle.

The one place a recorded value (a tool's result or error, `now()`/`uuid()`/`random()`, a settled call's
value) becomes bytes and back. Its body, in the call's meta, says which: "data" (codec.py: JSON with type
tags, which loading cannot execute) or "pickle" (trust.py: loaded only if this user wrote or trusted it).
"""

from __future__ import annotations

from typing import Any

from . import codec, trust
from .errors import RecordedValueError


def dump(value: Any) -> tuple[bytes, str]:
    """(the stored bytes, their body) of `value`. A value with no data form that cannot be pickled raises."""
    try:
        return codec.encode(value), "data"
    except codec.NotData:
        return trust.seal(value), "pickle"


def load(blob: bytes, body: str | None, what: str, journal: Any = None) -> Any:
    """The value stored as `blob`; `what` names it in the one-line error of a pickle that is not loaded."""
    if body == "data":
        try:
            return codec.decode(blob)
        except LookupError as error:
            raise RecordedValueError(f"{what}: {error}") from None
    return trust.unseal(blob, what, journal)


def show(blob: bytes, body: str | None) -> Any:
    """What a view shows of a stored value, never by loading a pickle: the data form as JSON, else a note."""
    if body == "data":
        return codec.display(blob)
    return trust.describe(blob)
