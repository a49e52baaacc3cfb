"""LangGraph's checkpointers: a graph's saved state is read and written through journaled calls.

A graph with a checkpointer (`SqliteSaver` on a file, `InMemorySaver` in a kernel, Postgres, ...) starts
each `invoke` from the thread's saved state. When a step runs again, that state already holds its first
run: every request then differs from its recording, goes live, and every tool runs again. So the
checkpointer's reads (`get_tuple`) return, on replay, what the first run read, and its writes (`put`,
`put_writes`) are journaled once: a replay writes nothing. A call is known by its thread and namespace
(and the checkpoint it names), not by the checkpoint's contents, whose ids and times are new on every
run. Writes are taken as idempotent (a checkpoint written again after a crash is the same state).

Every saver subclasses `BaseCheckpointSaver` and overrides these methods: each subclass is wrapped,
also those defined after the extension loads.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..runtime import active_step, in_journaled_call
from ..tools import acall_tool, call_tool
from . import Integration, Tested, Unsupported
from ._patch import Patches

_METHODS = ("get_tuple", "put", "put_writes")
_patches = Patches()
_base: Any = None


def install(module: ModuleType) -> None:
    global _base
    base = getattr(module, "BaseCheckpointSaver", None)
    if base is None or any(name not in base.__dict__ for name in (*_METHODS, *(f"a{m}" for m in _METHODS))):
        raise Unsupported("this langgraph-checkpoint release has no BaseCheckpointSaver.get_tuple/put/put_writes")
    if _base is not None:
        return
    _base = base
    for saver in _family(base):
        _wrap(saver)
    if "__init_subclass__" in base.__dict__:
        raise Unsupported("this langgraph-checkpoint release defines BaseCheckpointSaver.__init_subclass__")

    def __init_subclass__(cls: type, **kwargs: Any) -> None:
        super(base, cls).__init_subclass__(**kwargs)
        _wrap(cls)  # a saver defined after the extension loaded

    base.__init_subclass__ = classmethod(__init_subclass__)


def uninstall() -> None:
    global _base
    if _base is not None:
        del _base.__init_subclass__
        _base = None
    _patches.undo()


def _family(cls: type) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _family(sub)
    return found


def _wrap(saver: type) -> None:
    for name in _METHODS:
        if name in saver.__dict__:
            _patches.wrap(saver, name, _journaled_sync(name))
        if f"a{name}" in saver.__dict__:
            _patches.wrap(saver, f"a{name}", _journaled_async(name))


def _identity(op: str, config: Any) -> dict[str, Any]:
    configurable = config.get("configurable", {}) if isinstance(config, dict) else {}
    known = {"op": op, "thread": str(configurable.get("thread_id")), "ns": str(configurable.get("checkpoint_ns", ""))}
    if op == "get_tuple" and configurable.get("checkpoint_id"):
        known["checkpoint"] = str(configurable["checkpoint_id"])
    return known


def _journaled_sync(op: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
            if active_step() is None or in_journaled_call():
                return original(self, config, *args, **kwargs)
            return call_tool(f"checkpoint.{op}", _identity(op, config),
                             lambda: original(self, config, *args, **kwargs), idempotent=True,
                             answers_model=False)

        return method

    return make


def _journaled_async(op: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        async def method(self: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
            if active_step() is None or in_journaled_call():
                return await original(self, config, *args, **kwargs)
            return await acall_tool(f"checkpoint.{op}", _identity(op, config),
                                    lambda: original(self, config, *args, **kwargs), idempotent=True,
                                    answers_model=False)

        return method

    return make


INTEGRATION = Integration("langgraph", ("langgraph.checkpoint.base",), install, uninstall,
                          Tested("langgraph-checkpoint", "4.3", "4.3"))
