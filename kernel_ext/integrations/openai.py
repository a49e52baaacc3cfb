"""The `openai` client: every request, sync or async, streamed or not, journaled at its HTTP send.

Chat completions, responses, embeddings and anything else the client sends end in
`SyncAPIClient._send_request` / `AsyncAPIClient._send_request`, once per attempt, right where
the HTTP request leaves. Wrapping them on the base classes covers clients created before and
after the extension loads, and libraries that drive the client (LiteLLM's OpenAI provider,
Pydantic AI, the Agents SDK, LangChain's ChatOpenAI).

Above that, `create` of chat completions, responses and embeddings (sync and async) replays a
recorded call without the SDK's HTTP path: the object is rebuilt from its stored JSON as the SDK
builds it (see _rebuild.py). Streams, `with_raw_response`, `with_streaming_response`, `.parse()`
and calls with extra headers, query or body keep the HTTP path.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..runtime import active_step
from . import Integration, Slower, Tested, Unsupported, _http, _rebuild
from ._patch import Patches

_patches = Patches()

# The resources whose `create` replays above the SDK: module -> (sync class, async class, API, result type).
_RESOURCES = {
    "openai.resources.chat.completions.completions": ("Completions", "AsyncCompletions", "chat.completions",
                                                      "ChatCompletion"),
    "openai.resources.responses.responses": ("Responses", "AsyncResponses", "responses", "Response"),
    "openai.resources.embeddings": ("Embeddings", "AsyncEmbeddings", "embeddings", "CreateEmbeddingResponse"),
}


def install(module: ModuleType) -> None:
    if module.__name__ in _RESOURCES:
        _install_above(module, *_RESOURCES[module.__name__])
        return
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


def _install_above(module: ModuleType, sync: str, asynchronous: str, name: str, result: str) -> None:
    post_parse = None
    if name == "embeddings":
        try:
            from openai._types import omit
            from openai.lib._parsing._embeddings import parse_embedding_response
        except ImportError as error:  # an SDK release that decodes embeddings its own way
            raise Slower(f"this openai release decodes embeddings another way ({error})") from None

        def post_parse(obj: Any, kwargs: dict[str, Any]) -> Any:
            # Unless a format was asked for, the SDK asks for base64 and decodes it after parsing.
            return parse_embedding_response(obj, encoding_format=kwargs.get("encoding_format", omit))

    api = _rebuild.stainless("openai", module, name, result, set_ids=_set_ids, dump_model=_dump_model,
                             post_parse=post_parse, deployment="_azure_deployment")
    _rebuild.install_create(_patches, module, (sync, asynchronous), api)


def _set_ids(obj: Any, header: Callable[[str], str | None]) -> None:
    from openai._models import add_request_id

    add_request_id(obj, header("x-request-id"))


def _dump_model(model: Any) -> Any:
    from openai._compat import model_dump

    # As the SDK sends one of its models found among the arguments (see openai._utils._transform).
    return model_dump(model, exclude_unset=True, mode="json", exclude=getattr(model, "__api_exclude__", None))


INTEGRATION = Integration("openai", ("openai._base_client", *_RESOURCES), install, _patches.undo,
                          Tested("openai", "3.30", "3.63"))
