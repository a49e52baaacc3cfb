"""The `google-genai` client: generate_content and friends journaled above its HTTP layer.

The SDK sends through httpx, aiohttp or google-auth's requests session depending on how it is set
up, so it is journaled one level up, at `BaseApiClient.request` / `request_streamed` and their
async twins, where a call is (method, path, request dict) and its answer is JSON text, or a
sequence of JSON chunks for a stream. A replayed call hands the SDK the recorded text, so it builds
exactly the types a live call returns; a recorded stream comes back chunk by chunk as a stream.
Retries happen below this level, so a call is journaled once, however many attempts it took.
Request headers (the API key travels in one) are never stored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

from journal import Split, join_document, split_document
from journal._time import now

from ..runtime import ActiveStep, Claim, active_step, journaled_call
from . import Integration, Unsupported

_METHODS = ("request", "request_streamed", "async_request", "async_request_streamed")
_originals: dict[str, Callable[..., Any]] = {}


class GenaiCall:
    """One call of the google-genai client, as the journal identifies and stores it."""

    def __init__(self, method: str, path: str, body: Any, stream: bool) -> None:
        # The request dict may hold enums and other values the SDK turns into JSON when it sends.
        document = json.loads(json.dumps(body, default=str))
        self.split = Split()
        self.document = {"method": method.upper(), "path": path, "body": document, "stream": stream}
        self.fingerprint = split_document(self.document, self.split)
        self.model, _, verb = path.partition(":")
        self.name = "genai." + (verb or path.replace("/", "."))
        self.model = self.model.rpartition("/")[2] or None

    def claim(self, active: ActiveStep) -> Claim:
        return active.claim(self.fingerprint, f"{self.name}, model {self.model}", self.document)

    def replayed_bodies(self, active: ActiveStep, claim: Claim) -> list[str]:
        recorded = claim.recorded
        active.mark_known(self.split)

        def fetch(key: str) -> bytes:
            return recorded.data if key == recorded.response and recorded.data is not None else (
                active.run.blobs.get(key) or active.fetch(key))

        return [json.dumps(chunk) for chunk in join_document(recorded.response, fetch)]

    def record(self, active: ActiveStep, claim: Claim, bodies: list[str], started: Any) -> None:
        if active.closed:
            return  # a stream read after its step ended goes live again next time
        chunks = [json.loads(body) if body else {} for body in bodies]
        response = Split()
        key = split_document(chunks, response)
        usage = next((c.get("usageMetadata") for c in reversed(chunks) if isinstance(c, dict)
                      and c.get("usageMetadata")), None) or {}
        active.record(claim, kind="llm", name=self.name, model=self.model, request=self.split, response=response,
                      response_key=key, started_at=started,
                      usage=(usage.get("promptTokenCount"), usage.get("candidatesTokenCount")),
                      meta={"status": 200, "stream": len(bodies) != 1 or self.document["stream"], "body": "chunks"})


def install(module: ModuleType) -> None:
    client = module.BaseApiClient
    missing = [name for name in _METHODS if name not in client.__dict__]
    if missing:
        raise Unsupported(f"this google-genai release has no BaseApiClient.{missing[0]}")
    if _originals:
        return
    _originals.update({name: client.__dict__[name] for name in _METHODS})
    response_type = module.SdkHttpResponse
    request, streamed = _originals["request"], _originals["request_streamed"]
    async_request, async_streamed = _originals["async_request"], _originals["async_request_streamed"]

    def answer(body: str) -> Any:
        return response_type(headers={"content-type": "application/json"}, body=body)

    def request_journaled(self: Any, method: str, path: str, body: Any, *args: Any, **kwargs: Any) -> Any:
        active = active_step()
        if active is None:
            return request(self, method, path, body, *args, **kwargs)
        call = GenaiCall(method, path, body, stream=False)
        claim = call.claim(active)
        if claim.recorded is not None:
            return answer(call.replayed_bodies(active, claim)[0])
        started = now()
        try:
            with journaled_call():
                response = request(self, method, path, body, *args, **kwargs)
        except BaseException:
            active.retry(claim)
            raise
        call.record(active, claim, [response.body or ""], started)
        return response

    def streamed_journaled(self: Any, method: str, path: str, body: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        active = active_step()
        if active is None:
            yield from streamed(self, method, path, body, *args, **kwargs)
            return
        call = GenaiCall(method, path, body, stream=True)
        claim = call.claim(active)
        if claim.recorded is not None:
            for chunk in call.replayed_bodies(active, claim):
                yield answer(chunk)
            return
        started, bodies = now(), []
        try:
            with journaled_call():
                chunks = streamed(self, method, path, body, *args, **kwargs)
                first = next(chunks, None)
        except BaseException:
            active.retry(claim)
            raise
        if first is not None:
            bodies.append(first.body)
            yield first
            for chunk in chunks:
                bodies.append(chunk.body)
                yield chunk
        call.record(active, claim, bodies, started)  # only a stream read to its end

    async def async_request_journaled(self: Any, method: str, path: str, body: Any, *args: Any,
                                      **kwargs: Any) -> Any:
        active = active_step()
        if active is None:
            return await async_request(self, method, path, body, *args, **kwargs)
        call = GenaiCall(method, path, body, stream=False)
        claim = call.claim(active)
        if claim.recorded is not None:
            return answer(call.replayed_bodies(active, claim)[0])
        started = now()
        try:
            with journaled_call():
                response = await async_request(self, method, path, body, *args, **kwargs)
        except BaseException:
            active.retry(claim)
            raise
        call.record(active, claim, [response.body or ""], started)
        return response

    async def async_streamed_journaled(self: Any, method: str, path: str, body: Any, *args: Any,
                                       **kwargs: Any) -> AsyncIterator[Any]:
        active = active_step()
        if active is None:
            return await async_streamed(self, method, path, body, *args, **kwargs)
        call = GenaiCall(method, path, body, stream=True)
        claim = call.claim(active)
        if claim.recorded is not None:
            return _replay_chunks([answer(chunk) for chunk in call.replayed_bodies(active, claim)])
        started = now()
        try:
            with journaled_call():
                chunks = await async_streamed(self, method, path, body, *args, **kwargs)
        except BaseException:
            active.retry(claim)
            raise
        return _record_chunks(chunks, lambda bodies: call.record(active, claim, bodies, started))

    client.request = request_journaled
    client.request_streamed = streamed_journaled
    client.async_request = async_request_journaled
    client.async_request_streamed = async_streamed_journaled


async def _replay_chunks(chunks: list[Any]) -> AsyncIterator[Any]:
    for chunk in chunks:
        yield chunk


async def _record_chunks(chunks: AsyncIterator[Any], done: Callable[[list[str]], None]) -> AsyncIterator[Any]:
    bodies = []
    async for chunk in chunks:
        bodies.append(chunk.body)
        yield chunk
    done(bodies)


def uninstall() -> None:
    if _originals:
        import google.genai._api_client as module

        for name, original in _originals.items():
            setattr(module.BaseApiClient, name, original)
        _originals.clear()


INTEGRATION = Integration("google_genai", ("google.genai._api_client",), install, uninstall)
