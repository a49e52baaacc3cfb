"""The `google-genai` client: generate_content and friends journaled above its HTTP layer.

A recorded `generate_content` request replays higher still, above the SDK's conversions (see
_genai_above.py).

The SDK sends through httpx, aiohttp or google-auth's requests session depending on how it is set
up, so it is journaled one level up, at `BaseApiClient.request` / `request_streamed` and their
async twins, where a call is (method, path, request dict) and its answer is JSON text, or a
sequence of JSON chunks for a stream. A replayed call hands the SDK the recorded text, so it builds
exactly the types a live call returns; a recorded stream comes back chunk by chunk as a stream.
Retries happen below this level, so a call is journaled once, however many attempts it took.
Request headers (the API key travels in one) are never stored.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

from journal import Split, join_document, split_document
from journal._time import now

from .. import limits
from ..plain_tools import check_offered
from ..runtime import ActiveStep, Claim, active_step
from . import Integration, Tested, Unsupported, _genai_above, _http, _rebuild
from ._patch import Patches

_METHODS = ("request", "request_streamed", "async_request", "async_request_streamed")
_patches = Patches()


class GenaiCall:
    """One call of the google-genai client, as the journal identifies and stores it."""

    def __init__(self, active: ActiveStep, method: str, path: str, body: Any, stream: bool) -> None:
        self.active = active
        # The request dict may hold enums and other values the SDK turns into JSON when it sends.
        document = json.loads(json.dumps(body, default=str))
        self.split = Split()
        self.document = {"method": method.upper(), "path": path, "body": document, "stream": stream}
        fingerprint = split_document(self.document, self.split)
        model, _, verb = path.partition(":")
        verb = verb.partition("?")[0]  # streamGenerateContent?alt=sse names the call streamGenerateContent
        self.name, self.model = "genai." + (verb or path.replace("/", ".")), model.rpartition("/")[2] or None
        self.above = _http.above.get()  # keyed above the SDK (_genai_above.py): its claim, its key
        describe = f"{self.name}, model {self.model}"
        if self.above is None:  # a call keyed above the SDK was checked there
            check_offered(active, document, describe)
        self.claim: Claim = _http.claim_below(active, self.above, fingerprint, describe, self.document)
        self.started = now()

    def recorded(self) -> list[str] | None:
        """The recorded answer's JSON texts (one, or a stream's chunks), or None: it goes live."""
        recorded = self.claim.recorded
        if recorded is None:
            return None
        self.active.mark_known(self.split)

        def fetch(key: str) -> bytes:
            if key == recorded.response and recorded.data is not None:
                return recorded.data
            return self.active.run.blobs.get(key) or self.active.fetch(key)

        return [json.dumps(chunk) for chunk in join_document(recorded.response, fetch)]

    def record(self, bodies: list[str]) -> None:
        if self.active.closed:
            return  # a stream read after its step ended goes live again next time
        chunks = [json.loads(body) if body else {} for body in bodies]
        response = Split()
        key = split_document(chunks, response)
        usage = next((c["usageMetadata"] for c in reversed(chunks) if isinstance(c, dict)
                      and c.get("usageMetadata")), {})
        self.active.record(self.claim, kind="llm", name=self.name, model=self.model, request=self.split,
                           response=response, response_key=key, started_at=self.started,
                           usage=(usage.get("promptTokenCount"), usage.get("candidatesTokenCount")),
                           meta={"status": 200, "stream": self.document["stream"], "body": "chunks",
                                 **({"kw": self.above.key} if self.above is not None else {})})


def install(module: ModuleType) -> None:
    if module.__name__ == "google.genai.models":
        _rebuild.install_create(_patches, module, ("Models", "AsyncModels"), _genai_above.api(module),
                                method="_generate_content")
        return
    client = module.BaseApiClient
    missing = [name for name in _METHODS if name not in client.__dict__]
    if missing:
        raise Unsupported(f"this google-genai release has no BaseApiClient.{missing[0]}")
    answer: Callable[[str], Any] = lambda body: module.SdkHttpResponse(  # noqa: E731
        headers={"content-type": "application/json"}, body=body)

    def request(original: Callable[..., Any]) -> Callable[..., Any]:
        def journaled(self: Any, method: str, path: str, body: Any, *args: Any, **kwargs: Any) -> Any:
            active = active_step()
            if active is None:
                return original(self, method, path, body, *args, **kwargs)
            call = GenaiCall(active, method, path, body, stream=False)
            if (recorded := call.recorded()) is not None:
                return answer(recorded[0])
            with limits.live_call(call.model), call.active.sending(call.claim):
                response = original(self, method, path, body, *args, **kwargs)
            call.record([response.body or ""])
            return response

        return journaled

    def request_streamed(original: Callable[..., Any]) -> Callable[..., Any]:
        def journaled(self: Any, method: str, path: str, body: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            active = active_step()
            if active is None:
                yield from original(self, method, path, body, *args, **kwargs)
                return
            call = GenaiCall(active, method, path, body, stream=True)
            if (recorded := call.recorded()) is not None:
                yield from map(answer, recorded)
                return
            with limits.live_call(call.model), call.active.sending(call.claim):  # sent at the first chunk asked for
                chunks = original(self, method, path, body, *args, **kwargs)
                first = next(chunks, None)
            bodies = []
            for chunk in [] if first is None else itertools.chain([first], chunks):
                bodies.append(chunk.body)
                yield chunk
            call.record(bodies)  # only a stream read to its end

        return journaled

    def async_request(original: Callable[..., Any]) -> Callable[..., Any]:
        async def journaled(self: Any, method: str, path: str, body: Any, *args: Any, **kwargs: Any) -> Any:
            active = active_step()
            if active is None:
                return await original(self, method, path, body, *args, **kwargs)
            call = GenaiCall(active, method, path, body, stream=False)
            if (recorded := call.recorded()) is not None:
                return answer(recorded[0])
            async with limits.live_call_async(call.model):
                with call.active.sending(call.claim):
                    response = await original(self, method, path, body, *args, **kwargs)
            call.record([response.body or ""])
            return response

        return journaled

    def async_request_streamed(original: Callable[..., Any]) -> Callable[..., Any]:
        async def journaled(self: Any, method: str, path: str, body: Any, *args: Any, **kwargs: Any) -> Any:
            active = active_step()
            if active is None:
                return await original(self, method, path, body, *args, **kwargs)
            call = GenaiCall(active, method, path, body, stream=True)
            if (recorded := call.recorded()) is not None:
                return _replayed(map(answer, recorded))
            async with limits.live_call_async(call.model):
                with call.active.sending(call.claim):
                    chunks = await original(self, method, path, body, *args, **kwargs)
            return _recorded(chunks, call.record)

        return journaled

    for name, make in zip(_METHODS, (request, request_streamed, async_request, async_request_streamed), strict=True):
        _patches.wrap(client, name, make)


async def _replayed(chunks: Iterator[Any]) -> AsyncIterator[Any]:
    for chunk in chunks:
        yield chunk


async def _recorded(chunks: AsyncIterator[Any], done: Callable[[list[str]], None]) -> AsyncIterator[Any]:
    bodies = []
    async for chunk in chunks:
        bodies.append(chunk.body)
        yield chunk
    done(bodies)


INTEGRATION = Integration("google_genai", ("google.genai._api_client", "google.genai.models"), install,
                          _patches.undo, Tested("google-genai", "3.6", "3.6"))
