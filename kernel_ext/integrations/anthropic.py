"""The `anthropic` client: every attempt journaled at its HTTP send, sync or async, streamed or not.

The SDK builds and sends one HTTP attempt in `_attempt_request`, with no method of its own around
the send. So the attempt is marked with its client, and httpx's send (see outbound_http.py)
journals the marked request exactly as the openai client's is (see _http.py): the same replay
rule, the SDK's own parsing of a replayed response, streams replayed as streams, retries of
429/529 counted as attempts of one call.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import Integration, Unsupported, _http
from ._patch import Patches

_patches = Patches()


def install(module: ModuleType) -> None:
    for cls in (module.SyncAPIClient, module.AsyncAPIClient):
        if "_attempt_request" not in cls.__dict__:
            raise Unsupported(f"this anthropic release has no {cls.__name__}._attempt_request")
    _patches.wrap(module.SyncAPIClient, "_attempt_request", _mark_sync)
    _patches.wrap(module.AsyncAPIClient, "_attempt_request", _mark_async)


def _mark_sync(attempt: Callable[..., Any]) -> Callable[..., Any]:
    def _attempt_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _http.sending.set(self)
        try:
            return attempt(self, *args, **kwargs)
        finally:
            _http.sending.reset(token)

    return _attempt_request


def _mark_async(attempt: Callable[..., Any]) -> Callable[..., Any]:
    async def _attempt_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _http.sending.set(self)
        try:
            return await attempt(self, *args, **kwargs)
        finally:
            _http.sending.reset(token)

    return _attempt_request


INTEGRATION = Integration("anthropic", ("anthropic._base_client",), install, _patches.undo)
