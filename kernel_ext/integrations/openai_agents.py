"""The OpenAI Agents SDK (`openai-agents`): its function tools journaled as tools.

Its model calls go through the `openai` client and are journaled there. Its function tools
(`@function_tool`, and any `FunctionTool`) are run by one function of the SDK,
`_invoke_function_tool_with_metadata`, which other modules of the SDK import by name; every
module holding it gets the journaling version. A tool call is then journaled like a `@tool`
call: run once, its result (or its failure) replayed, in doubt if the process died inside it.
A `@function_tool` made from a `@tool` journals through that `@tool` (its own idempotency and
retries), not twice.

Known traps, said in the README: the SDK exports traces to the vendor, also during a replay
(`set_tracing_disabled(True)` or `OPENAI_AGENTS_DISABLE_TRACING=1` turns it off; the step's
summary names those requests otherwise), and `Runner.run_sync` cannot run inside a notebook's
event loop (use `await Runner.run(...)`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..tools import Tool, acall_tool
from . import Integration, Tested, Unsupported

_SEAM = "_invoke_function_tool_with_metadata"
_originals: dict[str, Callable[..., Any]] = {}


def install(module: ModuleType) -> None:
    original = getattr(module, _SEAM, None)
    if original is None:
        raise Unsupported(f"this openai-agents release has no agents.tool.{_SEAM}")
    if _originals:
        return
    _originals[_SEAM] = original

    async def invoke_journaled(*, function_tool: Any, context: Any, arguments: str) -> Any:
        async def run() -> Any:
            return await original(function_tool=function_tool, context=context, arguments=arguments)

        if isinstance(getattr(function_tool, "__wrapped__", None), Tool):
            return await run()  # the @tool inside journals the call
        return await acall_tool(function_tool.name, _arguments(arguments), run)

    _replace(original, invoke_journaled)


def uninstall() -> None:
    original = _originals.pop(_SEAM, None)
    if original is not None:
        import agents.tool

        _replace(getattr(agents.tool, _SEAM), original)


def _replace(old: Callable[..., Any], new: Callable[..., Any]) -> None:
    # Modules of the SDK imported later take the new one from agents.tool.
    for name, module in list(sys.modules.items()):
        if (name == "agents" or name.startswith("agents.")) and getattr(module, _SEAM, None) is old:
            setattr(module, _SEAM, new)


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {"$text": text}  # the SDK reports malformed arguments to the model; the call is still journaled


INTEGRATION = Integration("openai_agents", ("agents.tool",), install, uninstall,
                          Tested("openai-agents", "0.24", "0.24"))
