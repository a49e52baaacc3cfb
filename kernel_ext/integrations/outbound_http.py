"""Outbound HTTP that no integration journaled: named in the step's summary, never silent.

A request sent inside a durable step through httpx, httpx2, `requests` / `urllib3` / `urllib`
(all three end in `http.client`) or aiohttp, that is not part of a journaled call (a model SDK
call, a `@tool`, a framework tool), goes live on every run. The step's summary says how many went
to which host, and that a `@tool` around them makes them run once. Such a request from a thread
no step can claim, while a step is open, is reported as not attributable. This module is also
where httpx-based SDKs without a send seam of their own (anthropic) get journaled.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from ..runtime import active_step, in_journaled_call, outside_steps
from . import Integration, _http
from ._patch import Patches

_patches = Patches()


def report(host: str) -> None:
    """Count one request to `host` that left without being journaled."""
    if in_journaled_call():
        return
    active = active_step()
    what = f"{{n}} HTTP request{{s}} to {host or 'an unknown host'}"
    if active is not None:
        active.warn(f"{what} {{were}} not journaled (sent live on every run); wrap them in a @tool")
    else:
        outside_steps(what)


def install(module: ModuleType) -> None:
    name = module.__name__
    if name in ("httpx", "httpx2"):
        _wrap_httpx(module)
    elif name == "http.client":
        _patches.wrap(module.HTTPConnection, "putrequest", _putrequest)
    elif name == "aiohttp.client":
        _patches.wrap(module.ClientSession, "_request", _aiohttp_request)


def _wrap_httpx(module: ModuleType) -> None:
    def sync(original: Callable[..., Any]) -> Callable[..., Any]:
        def send(self: Any, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
            active, sdk = active_step(), _http.sending.get()
            if active is not None and sdk is not None and not in_journaled_call():
                return _http.send(active, sdk.base_url, request, stream,
                                  lambda: original(self, request, stream=stream, **kwargs))
            report(request.url.host)
            return original(self, request, stream=stream, **kwargs)

        return send

    def asynchronous(original: Callable[..., Any]) -> Callable[..., Any]:
        async def send(self: Any, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
            active, sdk = active_step(), _http.sending.get()
            if active is not None and sdk is not None and not in_journaled_call():
                return await _http.send_async(active, sdk.base_url, request, stream,
                                              lambda: original(self, request, stream=stream, **kwargs))
            report(request.url.host)
            return await original(self, request, stream=stream, **kwargs)

        return send

    _patches.wrap(module.Client, "send", sync)
    _patches.wrap(module.AsyncClient, "send", asynchronous)


def _putrequest(original: Callable[..., Any]) -> Callable[..., Any]:
    def putrequest(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        report(getattr(self, "host", ""))
        return original(self, method, url, *args, **kwargs)

    return putrequest


def _aiohttp_request(original: Callable[..., Any]) -> Callable[..., Any]:
    async def request(self: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        report(urlsplit(str(url)).hostname or "")
        return await original(self, method, url, *args, **kwargs)

    return request


INTEGRATION = Integration("outbound_http", ("httpx", "httpx2", "http.client", "aiohttp.client"), install,
                          _patches.undo)
