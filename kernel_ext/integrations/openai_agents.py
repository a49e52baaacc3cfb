"""The OpenAI Agents SDK (`openai-agents`): its function tools journaled as tools, and its sessions' memory.

Its model calls go through the `openai` client and are journaled there. Its function tools
(`@function_tool`, and any `FunctionTool`) are run by one function of the SDK,
`_invoke_function_tool_with_metadata`, which other modules of the SDK import by name; every
module holding it gets the journaling version. A tool call is then journaled like a `@tool`
call: run once, its result (or its failure) replayed, in doubt if the process died inside it.
A `@function_tool` made from a `@tool` journals through that `@tool` (its own idempotency and
retries), not twice.

The SDK's tools that act on this machine through code it runs itself (ComputerTool, LocalShellTool,
ShellTool, ApplyPatchTool) are not journaled: what they do runs again on every replay, and the step's
summary says so on every run, naming them. Hosted tools (web and file search, code interpreter, hosted
MCP, image generation) run at the vendor inside the model call, whose answer is journaled: they replay.

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
_SESSION_MODULE = "agents.run_internal.session_persistence"
# The SDK's own helpers around a session's memory (SQLiteSession and the others): module-level functions
# that other modules import by name, as _SEAM is.
_SESSION_SEAMS = ("_session_get_items", "_session_add_items", "_session_pop_item")
_originals: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}  # name -> (the SDK's, ours)
_ACTIONS_MODULE = "agents.run_internal.tool_actions"
_LOCAL_TOOLS = {"ComputerAction": "ComputerTool", "LocalShellAction": "LocalShellTool", "ShellAction": "ShellTool",
                "ApplyPatchAction": "ApplyPatchTool"}
LOCAL_TOOL_RUNS = ("{n} call{s} of the Agents SDK's local tools ran on this machine unjournaled ({names}): what "
                   "they do runs again on every replay; do it in a @function_tool (journaled) instead")
_actions: dict[type, Any] = {}  # the SDK's action classes -> their own `execute`


def install(module: ModuleType) -> None:
    if module.__name__ == _SESSION_MODULE:
        _install_session_memory(module)
        return
    if module.__name__ == _ACTIONS_MODULE:
        _name_local_tools(module)
        return
    original = getattr(module, _SEAM, None)
    if original is None:
        raise Unsupported(f"this openai-agents release has no agents.tool.{_SEAM}")
    if _SEAM in _originals:
        return

    async def invoke_journaled(*, function_tool: Any, context: Any, arguments: str) -> Any:
        async def run() -> Any:
            return await original(function_tool=function_tool, context=context, arguments=arguments)

        if isinstance(getattr(function_tool, "__wrapped__", None), Tool):
            return await run()  # the @tool inside journals the call
        return await acall_tool(function_tool.name, _arguments(arguments), run)

    _originals[_SEAM] = (original, invoke_journaled)
    _replace(_SEAM, original, invoke_journaled)


def _name_local_tools(module: ModuleType) -> None:
    """Each run of a local tool inside a step is counted, for the line its summary shows."""
    from ..runtime import active_step

    for action, label in _LOCAL_TOOLS.items():
        cls = getattr(module, action, None)
        if cls is None or cls in _actions or "execute" not in vars(cls):
            continue
        original = vars(cls)["execute"]
        _actions[cls] = original
        cls.execute = classmethod(_counted(original.__func__, label, active_step))


def _counted(run: Callable[..., Any], label: str, active_step: Callable[[], Any]) -> Callable[..., Any]:
    async def execute(klass: type, *args: Any, **kwargs: Any) -> Any:
        active = active_step()
        if active is not None:
            active.warn_named(LOCAL_TOOL_RUNS, label)
        return await run(klass, *args, **kwargs)

    return execute


def _install_session_memory(module: ModuleType) -> None:
    """A session's memory is read and written as journaled calls: a replay reads what the first run read.

    Without this, a persistent session (a SQLiteSession file) holds the first run's items when the step
    runs again: every request then differs from its recording, goes live, and every tool runs again.
    Reads are journaled as idempotent calls, writes as calls that run once (a replay writes nothing).
    """
    missing = [name for name in _SESSION_SEAMS if not callable(getattr(module, name, None))]
    if missing:
        raise Unsupported(f"this openai-agents release has no {_SESSION_MODULE}.{missing[0]}: a session's "
                          "memory is read live on replay")
    for name in _SESSION_SEAMS:
        if name in _originals:
            continue
        original = getattr(module, name)
        _originals[name] = (original, _journaled_memory(name, original))
        _replace(name, *_originals[name])


def _journaled_memory(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    reads = name == "_session_get_items"
    what = "session." + name.removeprefix("_session_")

    async def memory(session: Any, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return await original(session, *args, **kwargs)

        arguments: dict[str, Any] = {"session": str(getattr(session, "session_id", type(session).__name__))}
        if args:
            arguments["args"] = _plain(args)
        limit = kwargs.get("limit")
        if isinstance(limit, int):
            arguments["limit"] = limit
        return await acall_tool(what, arguments, run, idempotent=reads, answers_model=False)

    return memory


def _plain(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return repr(value)


def uninstall() -> None:
    for name, (original, journaled) in list(_originals.items()):
        _replace(name, journaled, original)
    _originals.clear()
    for cls, original in list(_actions.items()):
        cls.execute = original
    _actions.clear()


def _replace(name: str, old: Callable[..., Any], new: Callable[..., Any]) -> None:
    # Modules of the SDK imported later take the new one from the module that defines it.
    for module_name, module in list(sys.modules.items()):
        if (module_name == "agents" or module_name.startswith("agents.")) and getattr(module, name, None) is old:
            setattr(module, name, new)


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {"$text": text}  # the SDK reports malformed arguments to the model; the call is still journaled


INTEGRATION = Integration("openai_agents", ("agents.tool", _SESSION_MODULE, _ACTIONS_MODULE), install, uninstall,
                          Tested("openai-agents", "0.24", "0.24"))
