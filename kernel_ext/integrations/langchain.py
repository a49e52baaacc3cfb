"""LangChain tools (`langchain_core`; also what LangGraph's ToolNode runs): journaled as tools.

Chat models of LangChain (ChatOpenAI, ChatAnthropic, ...) send through the vendor SDKs and are
journaled there. A tool runs through `BaseTool.run` / `BaseTool.arun` (`invoke` and `ainvoke`
call them), which turn the tool's errors into results as configured; the journaling wraps them
from outside, so a call in doubt stops the step as for a `@tool`. A LangChain tool run inside a
journaled call (a tool calling a tool, or `arun` running `run` in a thread) is part of that call.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..runtime import in_journaled_call
from ..tools import acall_tool, call_tool
from . import Integration, Tested, Unsupported
from ._patch import Patches

_patches = Patches()


def install(module: ModuleType) -> None:
    tool = getattr(module, "BaseTool", None)
    if tool is None or "run" not in tool.__dict__ or "arun" not in tool.__dict__:
        raise Unsupported("this langchain-core release has no BaseTool.run / arun")
    _patches.wrap(tool, "run", _journal_sync)
    _patches.wrap(tool, "arun", _journal_async)


def _journal_sync(run: Callable[..., Any]) -> Callable[..., Any]:
    def journaled(self: Any, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        if in_journaled_call():
            return run(self, tool_input, *args, **kwargs)
        return call_tool(self.name, _arguments(tool_input), lambda: run(self, tool_input, *args, **kwargs))

    return journaled


def _journal_async(arun: Callable[..., Any]) -> Callable[..., Any]:
    async def journaled(self: Any, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        if in_journaled_call():
            return await arun(self, tool_input, *args, **kwargs)
        return await acall_tool(self.name, _arguments(tool_input), lambda: arun(self, tool_input, *args, **kwargs))

    return journaled


def _arguments(tool_input: Any) -> dict[str, Any]:
    return tool_input if isinstance(tool_input, dict) else {"input": tool_input}


INTEGRATION = Integration("langchain", ("langchain_core.tools.base",), install, _patches.undo,
                          Tested("langchain-core", "1.8", "1.8"))
