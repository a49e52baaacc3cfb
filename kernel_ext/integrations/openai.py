"""The `openai` client: every request, sync or async, streamed or not, journaled at its HTTP send.

Chat completions, responses, embeddings and anything else the client sends end in
`SyncAPIClient._send_request` / `AsyncAPIClient._send_request`, once per attempt, right where
the HTTP request leaves. Wrapping them on the base classes covers clients created before and
after the extension loads, and libraries that drive the client (LiteLLM's OpenAI provider,
Pydantic AI, the Agents SDK, LangChain's ChatOpenAI).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..runtime import active_step
from . import Integration, Unsupported, _http

_originals: dict[type, Callable[..., Any]] = {}


def install(module: ModuleType) -> None:
    sync_client, async_client = module.SyncAPIClient, module.AsyncAPIClient
    for cls in (sync_client, async_client):
        if "_send_request" not in cls.__dict__:
            raise Unsupported(f"this openai release has no {cls.__name__}._send_request")
    if sync_client in _originals:
        return
    _originals[sync_client] = sync_send = sync_client._send_request
    _originals[async_client] = async_send = async_client._send_request

    def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        active = active_step()
        if active is None:
            return sync_send(self, request, stream=stream, **kwargs)
        return _http.send(active, self.base_url, request, stream,
                          lambda: sync_send(self, request, stream=stream, **kwargs))

    async def _async_send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        active = active_step()
        if active is None:
            return await async_send(self, request, stream=stream, **kwargs)
        return await _http.send_async(active, self.base_url, request, stream,
                                      lambda: async_send(self, request, stream=stream, **kwargs))

    sync_client._send_request = _send_request
    async_client._send_request = _async_send_request


def uninstall() -> None:
    for cls, original in _originals.items():
        cls._send_request = original
    _originals.clear()


INTEGRATION = Integration("openai", ("openai._base_client",), install, uninstall)
