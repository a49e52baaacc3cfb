"""Pydantic AI: its function tools (`@agent.tool`, `@agent.tool_plain`, `Tool(...)`) journaled as tools.

Its model calls go through the model SDK clients and are journaled there. Every function tool
runs through `FunctionToolset.call_tool(name, args, ctx, tool)`, so wrapping that method on the
class covers agents built before and after the extension loads. A call is journaled like a
`@tool` call: run once, its result (or its failure, `ModelRetry` included) replayed, in doubt if
the process died inside it. A tool whose function is a `@tool` journals through it, not twice.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..tools import Tool, acall_tool
from . import Integration, Tested, Unsupported
from ._patch import Patches

_patches = Patches()


def install(module: ModuleType) -> None:
    toolset = getattr(module, "FunctionToolset", None)
    if toolset is None or "call_tool" not in toolset.__dict__:
        raise Unsupported("this pydantic-ai release has no FunctionToolset.call_tool")
    _patches.wrap(toolset, "call_tool", _journal)


def _journal(original: Callable[..., Any]) -> Callable[..., Any]:
    async def call_tool(self: Any, name: str, tool_args: dict[str, Any], ctx: Any, tool: Any) -> Any:
        async def run() -> Any:
            return await original(self, name, tool_args, ctx, tool)

        held = self.tools.get(getattr(tool, "original_name", None) or name)
        if isinstance(getattr(held, "function", None), Tool):
            return await run()  # the @tool inside journals the call
        return await acall_tool(name, tool_args, run)

    return call_tool


INTEGRATION = Integration("pydantic_ai", ("pydantic_ai.toolsets.function",), install, _patches.undo,
                          Tested("pydantic-ai-slim", "2.60", "2.78"))
