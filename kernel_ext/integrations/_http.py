"""HTTP-level journaling shared by the model SDKs built on httpx (openai, anthropic, and so on).

An integration hands over one HTTP attempt, right where the SDK sends it, and a way to send it
live. A replayed call is the recorded HTTP response handed back to the SDK, so it returns exactly
the Python type a live call returns, and a recorded stream is parsed again as a stream. The SDKs
retry 429/5xx and timeouts themselves, one attempt at a time; a failed attempt gives its place
back so that the retry is the same call (see ActiveStep.retry).

What is stored: the request's method, path (relative to the client's base URL), query (minus
anything that looks like a credential) and JSON body; the response status, a few harmless
headers and the body. Request headers are never stored: they carry the API key.

A call that an integration already claimed above the SDK (see _rebuild.py) arrives here with that
claim and the key of its arguments: its first attempt uses the claim, and a live response is
recorded with the key, so that the next replay can rebuild it without coming down here.
"""

from __future__ import annotations

import contextvars
import json
import re
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zstandard

try:
    from orjson import loads as _loads  # a request body is parsed on every call: twice as fast
except ImportError:  # pragma: no cover - orjson is optional
    _loads = json.loads
from journal import RecordedCall, Split, join_document, split_document
from journal._time import now

from .. import limits
from ..errors import VendorStateLost
from ..plain_tools import check_offered
from ..runtime import ActiveStep, Claim, uninterrupted

_KEPT_HEADERS = frozenset({"content-type", "content-encoding", "x-request-id", "request-id", "openai-model",
                           "openai-processing-ms", "openai-version", "anthropic-workspace-id"})
_CREDENTIAL = re.compile(r"key|token|secret|sig|auth|password", re.IGNORECASE)
REPLAYED_HEADER = "x-durable-replayed"


def send(active: ActiveStep, base_url: Any, request: Any, stream: bool, live: Callable[[], Any]) -> Any:
    """Journal one HTTP attempt of a model SDK, or replay it: `live()` sends it for real."""
    call = HttpCall(base_url, request)
    claim = call.claim(active)
    if claim.recorded is not None:
        return call.replay(active, claim.recorded, stream)
    with limits.live_call(call.model):
        started = now()
        with active.sending(claim):
            response = live()
    with uninterrupted():  # the answer is paid for: an interrupt waits until it is journaled
        return call.finish(active, claim, response, stream, started, asynchronous=False)


async def send_async(active: ActiveStep, base_url: Any, request: Any, stream: bool,
                     live: Callable[[], Awaitable[Any]]) -> Any:
    call = HttpCall(base_url, request)
    claim = call.claim(active)
    if claim.recorded is not None:
        return call.replay(active, claim.recorded, stream)
    async with limits.live_call_async(call.model):
        started = now()
        with active.sending(claim):
            response = await live()
    with uninterrupted():
        return call.finish(active, claim, response, stream, started, asynchronous=True)


def _load_body(content: bytes) -> Any:
    try:
        return _loads(content)
    except ValueError:  # orjson refuses what json reads (integers past 64 bits, NaN): json decides
        return json.loads(content)


class HttpCall:
    """One HTTP request of a model SDK, as the journal identifies and stores it."""

    def __init__(self, base_url: Any, request: Any) -> None:
        self.request = request
        self.http = sys.modules[type(request).__module__.partition(".")[0]]  # httpx or httpx2
        base = str(base_url).rstrip("/") + "/"
        url = str(request.url).partition("?")[0]
        path = url[len(base):] if url.startswith(base) else request.url.path.lstrip("/")
        query = [(k, v) for k, v in request.url.params.multi_items() if not _CREDENTIAL.search(k)]
        content = request.content
        try:
            body: Any = _load_body(content) if content else None
        except ValueError:
            body = None
        self.split = Split()
        if body is None and content:
            body = {"$bytes": self.split.add(content)}
        self.document = {"method": request.method, "path": path, "query": query, "body": body}
        self.fingerprint = split_document(self.document, self.split)
        self.name = path.replace("/", ".") or request.method
        self.model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
        self.above = above.get()

    def claim(self, active: ActiveStep) -> Claim:
        describe = self.name + (f", model {self.model}" if self.model else "")
        if self.above is None:  # a call keyed above the SDK was checked there
            check_offered(active, self.document["body"], describe)
        return claim_below(active, self.above, self.fingerprint, describe, self.document)

    def replay(self, active: ActiveStep, recorded: RecordedCall, stream: bool) -> Any:
        if recorded.fingerprint == self.fingerprint:
            active.mark_known(self.split)  # it matched a recording, so its blobs are stored
        meta = recorded.meta
        if meta.get("body") == "json":
            body = json.dumps(recorded_document(active, recorded)).encode()
        else:
            body = stored_fetch(active, recorded)(recorded.response)
        if (made := _VENDOR_ID.search(body)) is not None:
            note_vendor_state(active, made[1].decode(), recorded.seq)
        headers = {**meta.get("headers", {}), REPLAYED_HEADER: recorded.ended_at.isoformat() + "Z"}
        http = self.http
        if stream:
            return http.Response(meta["status"], headers=headers, stream=http.ByteStream(body), request=self.request)
        return http.Response(meta["status"], headers=headers, content=body, request=self.request)

    def finish(self, active: ActiveStep, claim: Claim, response: Any, stream: bool, started: Any, *,
               asynchronous: bool) -> Any:
        """Journal a live response (a stream once it has been read to its end) and return it."""
        if not response.is_success:
            active.retry(claim)  # the SDK may retry it; it is the same call
            if response.status_code in (400, 404):
                _refuse_lost_state(active, self.document["body"], f"call {claim.seq} ({self.name})")
            return response

        def record(body: bytes, decoded: bool) -> None:
            self._record(active, claim, response, body, decoded, stream, started)

        if not stream:
            record(response.content, True)
        else:
            # Built on the HTTP library of the client that sent it (LiteLLM hands the openai client an
            # httpx client, where the SDK's own is httpx2; each library accepts only its own stream
            # types), and chosen by the path the call took.
            response.stream = _tee(self.http, asynchronous)(response.stream, record)
        return response

    def _record(self, active: ActiveStep, claim: Claim, response: Any, body: bytes,
                decoded: bool, stream: bool, started: Any) -> None:
        if active.closed:
            return  # the stream was read after its step ended; the step will send it live next time
        headers = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
        # Whether the answer is a stream is the server's word (an event stream), not how the SDK read it:
        # anthropic >= 2.17 reads every response as a stream and its JSON answers must stay JSON, or the
        # replay above the SDK (which rebuilds from JSON) and the token counts are lost.
        events = "event-stream" in response.headers.get("content-type", "")
        if stream and not events and not decoded:
            plain = _decoded(body, response.headers.get("content-encoding", ""))
            if plain is not None:
                body, decoded = plain, True
        if decoded:
            headers.pop("content-encoding", None)
        split = Split()
        parsed = _json_or_none(body) if decoded and not events else None
        if parsed is not None:
            key, kind = split_document(parsed, split), "json"
        else:
            key, kind = split.add(body), "raw"
        usage = _usage(parsed if parsed is not None else _stream_usage(body))
        active.record(
            claim, kind="llm", name=self.name, model=self.model, request=self.split, response=split,
            response_key=key, started_at=started, usage=usage,
            meta={"status": response.status_code, "headers": headers, "stream": stream and events, "body": kind,
                  **({"kw": self.above.key} if self.above is not None else {})},
        )


# State a vendor keeps for a response (OpenAI's stored responses and conversations): a later request may name it.
_VENDOR_ID = re.compile(rb'"id"\s*:\s*"((?:resp|conv)_[A-Za-z0-9_-]+)"')


def note_vendor_state(active: ActiveStep, reference: str, seq: int) -> None:
    """A replayed answer names state its vendor kept: remember which call made it, should the vendor lose it."""
    active.session.vendor_state[reference] = (active.name, seq)


def _refuse_lost_state(active: ActiveStep, body: Any, call: str) -> None:
    """A refused request that names vendor state a replayed call made: the vendor lost it; say how to go on."""
    if not isinstance(body, dict):
        return
    conversation = body.get("conversation")
    for reference in (body.get("previous_response_id"),
                      conversation.get("id") if isinstance(conversation, dict) else conversation):
        made_by = active.session.vendor_state.get(reference) if isinstance(reference, str) else None
        if made_by is not None:
            raise VendorStateLost(active.name, call, reference, made_by)


def stored_fetch(active: ActiveStep, recorded: RecordedCall) -> Callable[[str], bytes]:
    """How the blobs of a recorded response are read: preloaded when the step began, else from the journal."""
    root, preloaded = recorded.data, active.run.blobs

    def fetch(key: str) -> bytes:
        if key == recorded.response and root is not None:
            return root
        return preloaded[key] if key in preloaded else active.fetch(key)

    return fetch


def recorded_document(active: ActiveStep, recorded: RecordedCall) -> Any:
    """The JSON body of a recorded response (one stored with `"body": "json"` in its meta)."""
    return join_document(recorded.response, stored_fetch(active, recorded))


def _decoded(body: bytes, encoding: str) -> bytes | None:
    """A body read as it came over the wire, without its content encoding; None for an encoding not known here."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:  # servers send both the zlib and the raw form under this name
                return zlib.decompress(body, -zlib.MAX_WBITS)
        if encoding == "zstd":
            return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    except (zlib.error, zstandard.ZstdError):
        return None
    return None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _stream_usage(body: bytes) -> Any:
    """The usage of a recorded server-sent-event stream, from every event that carries some.

    OpenAI sends it once, in the last chunk (or `response.completed`); Anthropic sends the input
    tokens in `message_start` and the output tokens, counted so far, in each `message_delta`: later
    counts replace earlier ones, field by field.
    """
    merged: dict[str, Any] = {}
    for line in body.splitlines():
        if line.startswith(b"data:") and b'"usage"' in line:
            event = _json_or_none(line[5:].strip())
            if isinstance(event, dict):
                found = (event.get("usage") or (event.get("response") or {}).get("usage")
                         or (event.get("message") or {}).get("usage"))
                if isinstance(found, dict):
                    merged.update({k: v for k, v in found.items() if v is not None})
    return {"usage": merged} if merged else None


def _usage(document: Any) -> tuple[int | None, int | None]:
    usage = document.get("usage") if isinstance(document, dict) else None
    if not isinstance(usage, dict):
        return None, None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return prompt, completion


class _Tee:
    """Passes a live stream through and journals it once it is complete.

    The SDK stops reading at the end-of-stream event and closes the response, so "complete"
    means: read to its end, or closed after its final event. A stream abandoned midway is
    not journaled; the call goes live again on the next run.
    """

    _FINAL_EVENTS = (b"data: [DONE]", b"event: response.completed", b"event: response.incomplete",
                     b"event: response.failed", b"event: message_stop")

    def __init__(self, inner: Any, on_complete: Callable[[bytes, bool], None]) -> None:
        self.inner, self.on_complete = inner, on_complete
        self.chunks: list[bytes] = []
        self.done = False

    def _finish(self, ended: bool) -> None:
        if self.done:
            return
        body = b"".join(self.chunks)
        if ended or any(marker in body[-4096:] for marker in self._FINAL_EVENTS):
            self.done = True
            self.on_complete(body, False)


class _SyncTee(_Tee):
    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.chunks.append(chunk)
            yield chunk
        self._finish(True)

    def close(self) -> None:
        self._finish(False)
        self.inner.close()


class _AsyncTee(_Tee):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.chunks.append(chunk)
            yield chunk
        self._finish(True)

    async def aclose(self) -> None:
        self._finish(False)
        await self.inner.aclose()


_tees: dict[tuple[str, bool], type] = {}


def _tee(http: Any, asynchronous: bool) -> type:
    """The tee class for httpx or httpx2: each checks that a stream is its own ByteStream type."""
    key = (http.__name__, asynchronous)
    if key not in _tees:
        bases = (_AsyncTee, http.AsyncByteStream) if asynchronous else (_SyncTee, http.SyncByteStream)
        _tees[key] = type(bases[0].__name__, bases, {})
    return _tees[key]


# The model SDK client whose HTTP attempt is being sent, for SDKs whose send has no seam of its own
# (see anthropic.py): the HTTP library's send journals it (see outbound_http.py).
sending: contextvars.ContextVar[Any] = contextvars.ContextVar("durable_sdk_sending", default=None)


@dataclass
class Above:
    """A model call claimed above its SDK (see _rebuild.py), on its way down to the HTTP send."""

    key: str  # the key of its arguments, recorded with its response
    claim: Claim | None  # claimed by that key, for its first attempt; None: the attempt claims by its request


def claim_below(active: ActiveStep, handed_down: Above | None, fingerprint: str, describe: str,
                document: Any) -> Claim:
    """Claim a call where the SDK sends it: with the claim made above the SDK, if any, else by its request."""
    handed = handed_down.claim if handed_down is not None else None
    if handed is not None:
        handed_down.claim = None  # the first attempt's: a retry claims its own place
        if handed.recorded is not None or handed.fingerprint == fingerprint:
            return handed
        # Claimed live by its arguments' key, but the SDK built another request than the one
        # recorded under that key (a changed SDK or client): it takes its place by its request.
        active.retry(handed)
    return active.claim(fingerprint, describe, document)


# Set while the SDK sends a call that an integration keyed above it (see _rebuild.py).
above: contextvars.ContextVar[Above | None] = contextvars.ContextVar("durable_sdk_above", default=None)
