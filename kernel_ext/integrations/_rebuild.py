"""Replay above the SDK: a recorded model call returns the SDK's own object, rebuilt from its stored JSON.

Replayed through the SDK's HTTP path (see _http.py), a call still builds its HTTP request and parses an
HTTP response: >= 1.85 ms a call with the openai client. Rebuilt from the recorded body above the SDK, it
costs tens of microseconds. So an integration also wraps the plain `create` methods of an SDK, and this
module decides there, before the SDK builds anything:

- A call is known by the key of its arguments: a digest of the API's name, the client settings that shape
  its request, and its keyword arguments, when they are plain JSON data (the SDK's own models count as the
  JSON the SDK sends for them). Other arguments, streams, raw responses and extra headers, query or body
  keep the HTTP path, unchanged.
- A call that goes live goes down the HTTP path as before, and its recording carries the key (meta "kw").
- On replay the step maps the key to the request recorded with it and claims the call as that request
  (ActiveStep.claim_alias). So the replay rule is the one of `ActiveStep.claim`, and ordinals among identical
  requests, strict mode, tokens and progress are those of the HTTP path, which may claim other calls of the
  same step.
- The integration rebuilds a replayed call from its stored JSON. One it cannot rebuild is replayed by the
  HTTP path instead, as is a call whose key no recording has (new, edited, or recorded before keys were).
  A claim that goes live is handed down to the HTTP path, so that a call is claimed once.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from journal import RecordedCall, digest

from ..plain_tools import check_offered
from ..runtime import ActiveStep, Claim, active_step
from . import Slower, _http, replays_slower
from ._patch import Patches

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional. json is slower, and spells a few floats
    orjson = None    # otherwise: a key made by the other then misses, and the call takes the HTTP path.

_OPTIONS = frozenset({"timeout"})  # how a request is sent, not what it asks
_EXTRAS = frozenset({"extra_headers", "extra_query", "extra_body"})  # also how raw responses are asked for


class CannotRebuild(Exception):
    """This recorded call is replayed through the HTTP path instead (the SDK parses its response)."""


@dataclass(frozen=True)
class Api:
    """One `create` of an SDK, as this module needs to know it."""

    sdk: str  # the integration's name, for the line that says its replay is slower
    name: str  # as the HTTP path names the call (its path): "chat.completions"
    # The client settings that shape the request beyond the arguments, as JSON data, from the resource.
    shape: Callable[[Any], Any]
    # (resource, kwargs, stored JSON body, stored headers) -> the object a live call returns; may raise CannotRebuild.
    rebuild: Callable[[Any, dict[str, Any], Any, dict[str, str]], Any]
    omitted: Callable[[Any], bool]  # an argument value the SDK leaves out of the request (its "not given")
    # The JSON the SDK sends for one of its own objects among the arguments; TypeError for anything else.
    plain: Callable[[Any], Any]
    body: str = "json"  # how the HTTP path stores the answers it replays (its meta "body")
    # Arguments that ask for something a rebuilt object cannot give (say, the raw HTTP response).
    refuse: Callable[[dict[str, Any]], bool] = lambda kwargs: False


if orjson is not None:
    _DUMPS_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
                      | orjson.OPT_PASSTHROUGH_SUBCLASS)

    def _dumps(value: Any, default: Callable[[Any], Any]) -> bytes:
        return orjson.dumps(value, default=default, option=_DUMPS_OPTIONS)
else:  # pragma: no cover
    def _dumps(value: Any, default: Callable[[Any], Any]) -> bytes:
        return json.dumps(value, default=default, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()


def key_of(api: Api, resource: Any, kwargs: dict[str, Any]) -> str | None:
    """The key of a call's arguments, or None if the call keeps the HTTP path."""
    if api.refuse(kwargs):
        return None
    args = {}
    for name, value in kwargs.items():
        if name in _OPTIONS:
            continue
        if name in _EXTRAS:
            if value is None:
                continue
            return None
        if not api.omitted(value):
            args[name] = value
    if args.get("stream"):
        return None
    try:
        return digest(_dumps([api.name, api.shape(resource), args], api.plain))
    except (TypeError, ValueError):  # not plain JSON data (orjson's error is a TypeError)
        return None


def _describe(api: Api, kwargs: dict[str, Any]) -> str:
    model = kwargs.get("model")
    return api.name + (f", model {model}" if isinstance(model, str) else "")


def _replayed(api: Api, active: ActiveStep, resource: Any, kwargs: dict[str, Any], recorded: RecordedCall) -> Any:
    meta = recorded.meta
    if meta.get("body") != api.body or meta.get("stream"):
        # Keyed, so recorded by a plain `create`, yet not as the JSON it rebuilds from: the SDK release that
        # recorded it read its answer another way than this module knows.
        replays_slower(api.sdk, f"{api.name} answers were recorded as {meta.get('body')} bodies, not JSON")
        raise CannotRebuild
    document = _http.recorded_document(active, recorded)
    if isinstance(document, dict) and isinstance(document.get("id"), str) and document["id"].startswith("resp_"):
        _http.note_vendor_state(active, document["id"], recorded.seq)
    return api.rebuild(resource, kwargs, document, meta.get("headers") or {})


_UNKEYED = object()  # a call that keeps the HTTP path: its arguments have no key


def _claim(api: Api, active: ActiveStep, resource: Any, kwargs: dict[str, Any]) -> Any:
    """The rebuilt object of a replayed call; else _UNKEYED, or what the HTTP path needs to know (an Above)."""
    key = key_of(api, resource, kwargs)
    if key is None:
        return _UNKEYED
    check_offered(active, kwargs, _describe(api, kwargs))
    claim = active.claim_alias(key, _describe(api, kwargs))
    if claim is not None and claim.recorded is not None:
        try:
            return _replayed(api, active, resource, kwargs, claim.recorded)
        except CannotRebuild:
            pass
    return _http.Above(key, claim)


def _give_back(active: ActiveStep, handed: _http.Above) -> None:
    """A live claim the SDK never sent (it failed before sending): its place goes to the next call."""
    claim: Claim | None = handed.claim
    if claim is not None and claim.recorded is None:
        handed.claim = None
        active.retry(claim)


def wrap_sync(api: Api) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(create: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(create)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            active = active_step()
            if active is None or args:
                return create(self, *args, **kwargs)
            handed = _claim(api, active, self, kwargs)
            if handed is _UNKEYED:
                return create(self, *args, **kwargs)
            if not isinstance(handed, _http.Above):
                return handed  # replayed
            token = _http.above.set(handed)
            try:
                return create(self, *args, **kwargs)
            finally:
                _http.above.reset(token)
                _give_back(active, handed)

        return wrapper

    return make


def wrap_async(api: Api) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(create: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(create)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            active = active_step()
            if active is None or args:
                return await create(self, *args, **kwargs)
            handed = _claim(api, active, self, kwargs)
            if handed is _UNKEYED:
                return await create(self, *args, **kwargs)
            if not isinstance(handed, _http.Above):
                return handed  # replayed
            token = _http.above.set(handed)
            try:
                return await create(self, *args, **kwargs)
            finally:
                _http.above.reset(token)
                _give_back(active, handed)

        return wrapper

    return make


def header(headers: dict[str, str], name: str) -> str | None:
    """A stored response header, by its name in any case."""
    if name in headers:
        return headers[name]
    return next((v for k, v in headers.items() if k.lower() == name), None)


def stainless(sdk: str, module: ModuleType, name: str, result: str, *,
              set_ids: Callable[[Any, Callable[[str], str | None]], None],
              dump_model: Callable[[Any], Any],
              post_parse: Callable[[Any, dict[str, Any]], Any] | None = None,
              deployment: str | None = None) -> Api:
    """`create` of an SDK generated the way openai's and anthropic's are, whose result type `module.result` is.

    `set_ids(obj, header)` sets what the SDK sets on its result from the response's headers; `dump_model`
    is the JSON the SDK sends for one of its models; `post_parse(obj, kwargs)` what the SDK does to the
    parsed result; `deployment` the client attribute that routes a request (Azure). Raises Slower where
    this SDK release differs from what is known here: its HTTP path then serves alone.
    """
    try:
        import pydantic

        construct_type = importlib.import_module(f"{sdk}._models").construct_type
        types = importlib.import_module(f"{sdk}._types")
        sentinels = (types.NotGiven, types.Omit)
    except (ImportError, AttributeError) as error:
        raise Slower(f"this {sdk} release lacks what replay above it needs ({error})") from None
    cast_to = getattr(module, result, None)
    if not isinstance(cast_to, type) or not issubclass(cast_to, pydantic.BaseModel):
        raise Slower(f"this {sdk} release has no model {module.__name__}.{result}")

    def rebuild(resource: Any, kwargs: dict[str, Any], document: Any, headers: dict[str, str]) -> Any:
        if resource._client._strict_response_validation:
            raise CannotRebuild  # the SDK validates the response and raises its own error
        # As the SDK's own parsing builds it (`construct_type`, unchecked), only faster: data that validates
        # strictly gives the same object; anything else (say, a value this SDK release does not know) is
        # built by `construct_type` itself.
        try:
            obj = cast_to.model_validate(document, strict=True)
        except pydantic.ValidationError:
            obj = construct_type(type_=cast_to, value=document)
        if post_parse is not None:
            obj = post_parse(obj, kwargs)
        set_ids(obj, lambda name: header(headers, name))
        return obj

    def shape(resource: Any) -> Any:
        # What shapes the request beyond its arguments: the kind of client (Azure, Bedrock and Vertex route
        # their own way), its deployment, its default query (Azure's api-version).
        client = resource._client
        return [type(client).__name__.removeprefix("Async"), getattr(client, deployment, None) if deployment else None,
                dict(client._custom_query)]

    def plain(value: Any) -> Any:
        if isinstance(value, pydantic.BaseModel):
            return dump_model(value)
        raise TypeError(type(value).__name__)

    return Api(sdk, name, shape, rebuild, lambda value: isinstance(value, sentinels), plain)


def install_create(patches: Patches, module: ModuleType, classes: tuple[str, str], api: Api,
                   method: str = "create") -> None:
    """Replay `method` of a resource (its sync and async class) above the SDK."""
    sync, asynchronous = (getattr(module, name, None) for name in classes)
    for name, cls in zip(classes, (sync, asynchronous), strict=True):
        if cls is None or method not in cls.__dict__:
            raise Slower(f"this {api.sdk} release has no {module.__name__}.{name}.{method}")
    patches.wrap(sync, method, wrap_sync(api))
    patches.wrap(asynchronous, method, wrap_async(api))
