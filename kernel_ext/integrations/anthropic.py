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

_originals: dict[type, Callable[..., Any]] = {}


def install(module: ModuleType) -> None:
    sync_client, async_client = module.SyncAPIClient, module.AsyncAPIClient
    for cls in (sync_client, async_client):
        if "_attempt_request" not in cls.__dict__:
            raise Unsupported(f"this anthropic release has no {cls.__name__}._attempt_request")
    if sync_client in _originals:
        return
    _originals[sync_client] = sync_attempt = sync_client._attempt_request
    _originals[async_client] = async_attempt = async_client._attempt_request

    def _attempt_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _http.sending.set(self)
        try:
            return sync_attempt(self, *args, **kwargs)
        finally:
            _http.sending.reset(token)

    async def _async_attempt_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _http.sending.set(self)
        try:
            return await async_attempt(self, *args, **kwargs)
        finally:
            _http.sending.reset(token)

    sync_client._attempt_request = _attempt_request
    async_client._attempt_request = _async_attempt_request


def uninstall() -> None:
    for cls, original in _originals.items():
        cls._attempt_request = original
    _originals.clear()


INTEGRATION = Integration("anthropic", ("anthropic._base_client",), install, uninstall)
