"""`now()`, `uuid()` and `random()`: values that replay identically, journaled like calls.

A step that stamps a record with the time or draws an id must produce the same stamp and
id when it is replayed, or everything downstream of it (prompts, tool arguments) changes
and goes live again. Outside a durable step these are the plain values.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TypeVar

from journal import Split, split_document
from journal._time import now as _journal_now

from . import stored
from .runtime import active_step, outside_steps

T = TypeVar("T")


def _journaled(name: str, produce: Callable[[], T]) -> T:
    active = active_step()
    if active is None:
        outside_steps(f"{{n}} call{{s}} of {name}()")
        return produce()
    request = Split()
    fingerprint = split_document({"value": name}, request)
    claim = active.claim(fingerprint, f"{name}()", kind="value")
    if claim.recorded is not None:  # the recording is loaded with its response blob
        return stored.load(claim.recorded.data, claim.recorded.meta.get("body"), f"the recorded value of {name}()",
                           active.session.journal.path)
    started = _journal_now()
    value = produce()
    response = Split()
    data, body = stored.dump(value)
    key = response.add(data)
    active.record(claim, kind="value", name=name, request=request, response=response, response_key=key,
                  meta={"body": body}, started_at=started)
    return value


def now() -> datetime:
    """The current time (UTC, timezone-aware); on replay, the time recorded the first time."""
    return _journaled("now", lambda: datetime.now(timezone.utc))


def uuid() -> _uuid.UUID:
    """A random UUID4; on replay, the one drawn the first time."""
    return _journaled("uuid", _uuid.uuid4)


def random() -> float:
    """A float in [0, 1); on replay, the one drawn the first time."""
    return _journaled("random", _random.random)


__all__ = ["now", "random", "uuid"]
