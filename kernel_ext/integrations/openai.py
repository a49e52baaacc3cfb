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
from ._patch import Patches

_patches = Patches()


def install(module: ModuleType) -> None:
    for cls in (module.SyncAPIClient, module.AsyncAPIClient):
        if "_send_request" not in cls.__dict__:
            raise Unsupported(f"this openai release has no {cls.__name__}._send_request")
    _patches.wrap(module.SyncAPIClient, "_send_request", _journal_sync)
    _patches.wrap(module.AsyncAPIClient, "_send_request", _journal_async)


def _journal_sync(send: Callable[..., Any]) -> Callable[..., Any]:
    def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        active = active_step()
        if active is None:
            return send(self, request, stream=stream, **kwargs)
        return _http.send(active, self.base_url, request, stream, lambda: send(self, request, stream=stream, **kwargs))

    return _send_request


def _journal_async(send: Callable[..., Any]) -> Callable[..., Any]:
    async def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        active = active_step()
        if active is None:
            return await send(self, request, stream=stream, **kwargs)
        return await _http.send_async(active, self.base_url, request, stream,
                                      lambda: send(self, request, stream=stream, **kwargs))

    return _send_request


INTEGRATION = Integration("openai", ("openai._base_client",), install, _patches.undo)
