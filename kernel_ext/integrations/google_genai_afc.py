"""google-genai's automatic function calling: the Python functions it calls journaled as tools.

Given Python functions as tools, the SDK calls them itself between two model requests, through
`invoke_function_from_dict_args` (and its async twin). Each call is journaled like a `@tool`
call: run once, its result replayed. The SDK turns any exception of a tool into an error message
for the model, which would hide the runtime's own errors (a call in doubt, a strict replay that
would go live), so those are kept aside and raised once the SDK has its answers; the step stops
as it does for a `@tool`. A function that is a `@tool` journals through its own options.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ..errors import DurableError
from ..tools import Tool, acall_tool, call_tool
from . import Integration, Tested, Unsupported
from ._patch import Patches

_SEAMS = ("invoke_function_from_dict_args", "invoke_function_from_dict_args_async",
          "get_function_response_parts", "get_function_response_parts_async")
_patches = Patches()
_stopped: contextvars.ContextVar[list[DurableError] | None] = contextvars.ContextVar("durable_afc", default=None)


def install(module: ModuleType) -> None:
    missing = [name for name in _SEAMS if name not in module.__dict__]
    if missing:
        raise Unsupported(f"this google-genai release has no _extra_utils.{missing[0]}")
    _patches.wrap(module, _SEAMS[0], _invoke)
    _patches.wrap(module, _SEAMS[1], _invoke_async)
    _patches.wrap(module, _SEAMS[2], _answers)
    _patches.wrap(module, _SEAMS[3], _answers_async)


def _invoke(original: Callable[..., Any]) -> Callable[..., Any]:
    def invoke(args: dict[str, Any], function: Callable[..., Any]) -> Any:
        if isinstance(function, Tool):
            return original(args, function)
        with _kept_aside():
            return call_tool(_name(function), args, lambda: original(args, function))

    return invoke


def _invoke_async(original: Callable[..., Any]) -> Callable[..., Any]:
    async def invoke(args: dict[str, Any], function: Callable[..., Any]) -> Any:
        if isinstance(function, Tool):
            return await original(args, function)
        with _kept_aside():
            return await acall_tool(_name(function), args, lambda: original(args, function))

    return invoke


def _answers(original: Callable[..., Any]) -> Callable[..., Any]:
    def answers(*args: Any, **kwargs: Any) -> Any:
        with _raising_kept_aside():
            return original(*args, **kwargs)

    return answers


def _answers_async(original: Callable[..., Any]) -> Callable[..., Any]:
    async def answers(*args: Any, **kwargs: Any) -> Any:
        with _raising_kept_aside():
            return await original(*args, **kwargs)

    return answers


@contextmanager
def _raising_kept_aside() -> Iterator[None]:
    """Around the SDK's answering of the model's function calls: the runtime's error it swallowed is raised."""
    stopped: list[DurableError] = []
    token = _stopped.set(stopped)
    try:
        yield
    finally:
        _stopped.reset(token)
    if stopped:
        raise stopped[0]


@contextmanager
def _kept_aside() -> Iterator[None]:
    """Keep the runtime's own error for after the SDK's catch-all (it is raised here too)."""
    try:
        yield
    except DurableError as error:
        stopped = _stopped.get()
        if stopped is not None:
            stopped.append(error)
        raise


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__name__", type(function).__name__)


INTEGRATION = Integration("google_genai_afc", ("google.genai._extra_utils",), install, _patches.undo,
                          Tested("google-genai", "3.6", "3.6"))
