"""The `anthropic` client: every attempt journaled at its HTTP send, sync or async, streamed or not.

The SDK builds and sends one HTTP attempt in `_attempt_request`, with no method of its own around
the send. So the attempt is marked with its client, and httpx's send (see outbound_http.py)
journals the marked request exactly as the openai client's is (see _http.py): the same replay
rule, the SDK's own parsing of a replayed response, streams replayed as streams, retries of
429/529 counted as attempts of one call.

The SDK's tool runner (`client.beta.messages.tool_runner`, with `@beta_tool` functions) runs each
tool through the runner's `_run_tool`, which turns any exception into an error result for the
model; the journaling wraps it from outside, so a call in doubt stops the step as for a `@tool`.

Above the HTTP path, a recorded plain `messages.create` (sync or async; not streamed, not raw) replays
as the SDK's `Message` rebuilt from its stored JSON, without building a request (see _rebuild.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ..errors import DurableError
from ..tools import Tool, acall_tool, call_tool
from . import Integration, Tested, Unsupported, _http, _rebuild
from ._patch import Patches

_patches = Patches()
_RUNNERS = ("BaseSyncToolRunner", "BaseAsyncToolRunner")
_MESSAGES = "anthropic.resources.messages.messages"


def install(module: ModuleType) -> None:
    if module.__name__.endswith("_beta_runner"):
        _install_tool_runner(module)
        return
    if module.__name__ == _MESSAGES:
        api = _rebuild.stainless("anthropic", module, "v1.messages", "Message", set_ids=_set_ids,
                                 dump_model=_dump_model)
        _rebuild.install_create(_patches, module, ("Messages", "AsyncMessages"), api)
        return
    for cls in (module.SyncAPIClient, module.AsyncAPIClient):
        if "_attempt_request" not in cls.__dict__:
            raise Unsupported(f"this anthropic release has no {cls.__name__}._attempt_request")
    _patches.wrap(module.SyncAPIClient, "_attempt_request", _mark_sync)
    _patches.wrap(module.AsyncAPIClient, "_attempt_request", _mark_async)


@contextmanager
def _attempt_of(client: Any) -> Iterator[None]:
    """One HTTP attempt of `client`: marked for the journaling send (see outbound_http)."""
    token = _http.sending.set(client)
    try:
        yield
    except Exception as error:
        # The runtime's own error (strict replay, a call in doubt), which the SDK wraps as a
        # connection error and would retry, must stop the step as it is.
        if isinstance(error.__cause__, DurableError):
            raise error.__cause__ from None
        raise
    finally:
        _http.sending.reset(token)


def _mark_sync(attempt: Callable[..., Any]) -> Callable[..., Any]:
    def _attempt_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _attempt_of(self):
            return attempt(self, *args, **kwargs)

    return _attempt_request


def _mark_async(attempt: Callable[..., Any]) -> Callable[..., Any]:
    async def _attempt_request(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _attempt_of(self):
            return await attempt(self, *args, **kwargs)

    return _attempt_request


def _set_ids(obj: Any, header: Callable[[str], str | None]) -> None:
    from anthropic._models import add_response_ids

    add_response_ids(obj, request_id=header("request-id"), workspace_id=header("anthropic-workspace-id"))


def _dump_model(model: Any) -> Any:
    from anthropic._utils._json import openapi_model_dump  # as the SDK sends one of its models

    return openapi_model_dump(model)


def _install_tool_runner(module: ModuleType) -> None:
    runners = [getattr(module, name, None) for name in _RUNNERS]
    if any(runner is None or "_run_tool" not in runner.__dict__ for runner in runners):
        raise Unsupported("this anthropic release has no tool runner with _run_tool")
    _patches.wrap(runners[0], "_run_tool", _journal_tool_sync)
    _patches.wrap(runners[1], "_run_tool", _journal_tool_async)


def _journal_tool_sync(run_tool: Callable[..., Any]) -> Callable[..., Any]:
    def _run_tool(self: Any, tool: Any, tool_use: Any) -> Any:
        if isinstance(getattr(tool, "func", None), Tool):
            return run_tool(self, tool, tool_use)  # the @tool inside journals the call
        return call_tool(tool.name, tool_use.input, lambda: run_tool(self, tool, tool_use))

    return _run_tool


def _journal_tool_async(run_tool: Callable[..., Any]) -> Callable[..., Any]:
    async def _run_tool(self: Any, tool: Any, tool_use: Any) -> Any:
        if isinstance(getattr(tool, "func", None), Tool):
            return await run_tool(self, tool, tool_use)
        return await acall_tool(tool.name, tool_use.input, lambda: run_tool(self, tool, tool_use))

    return _run_tool


INTEGRATION = Integration("anthropic", ("anthropic._base_client", "anthropic.lib.tools._beta_runner", _MESSAGES),
                          install, _patches.undo, Tested("anthropic", "2.14", "2.17"))
