"""MCP tool calls (the `mcp` SDK's client): journaled once, whatever framework makes them.

Python's MCP clients all end in `mcp.ClientSession.call_tool`: the SDK's own `Client`, fastmcp's
`Client` (and so Pydantic AI's `MCPToolset`), the Agents SDK's `MCPServerStdio` and its HTTP
siblings. Wrapping that method on the class covers sessions opened before and after the extension
loads, over any transport. A call is journaled like a `@tool` call named after the MCP tool: run
once, its `CallToolResult` (stored as data) or its error replayed, and in doubt if the process died
while it ran, since nothing says a server's tool is idempotent (`idempotentHint` is the server's
hint, not a promise).

A call made inside a journaled call is part of that call, not a second one: the Agents SDK's MCP
tools are journaled as its function tools (openai_agents.py), and a `@tool` may call an MCP server.
The protocol's other requests (initialize, list_tools, ...) are neither model calls nor effects: they
stay live, and their HTTP requests are not reported as having escaped the journal. A tool that asks
the client for input (`InputRequiredResult`) is journaled round by round, in order; a replay asks the
client's callbacks again between the recorded rounds.

A server the client starts over stdio is its transport, not a child process whose calls escape the
journal (child_processes.py), so starting it is not reported. The SDK hands that server the client's
`sys.stderr` for its log, and fails with `fileno` in a notebook, whose `sys.stderr` has no file
descriptor (modelcontextprotocol/python-sdk#156): the server then writes to the kernel process's
own stderr instead, as it would from a terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..runtime import in_journaled_call, journaled_call
from ..tools import acall_tool
from . import Integration, Tested, Unsupported
from ._patch import Patches

_SPAWN = "_create_platform_compatible_process"  # what stdio_client starts its server with
_SENDS = ("send_request", "send_notification", "send_discover")  # all a session sends goes through these
_patches = Patches()


def install(module: ModuleType) -> None:
    # Without the transports' places below, a stdio server is merely reported as a child process, and
    # the close of an HTTP session as an HTTP request that escaped the journal.
    if module.__name__ == "mcp.client.stdio":
        if _SPAWN in module.__dict__:
            _patches.wrap(module, _SPAWN, _transport)
        return
    if module.__name__ == "mcp.client.streamable_http":
        transport = getattr(module, "StreamableHTTPTransport", None)
        if transport is not None and "terminate_session" in transport.__dict__:
            _patches.wrap(transport, "terminate_session", _protocol)
        return
    session = getattr(module, "ClientSession", None)
    if session is None or "call_tool" not in session.__dict__:
        raise Unsupported("this mcp release has no ClientSession.call_tool")
    _patches.wrap(session, "call_tool", _journal)
    for method in _SENDS:
        if method in session.__dict__:
            _patches.wrap(session, method, _protocol)


def _journal(original: Callable[..., Any]) -> Callable[..., Any]:
    async def call_tool(self: Any, name: str, arguments: dict[str, Any] | None = None, *args: Any,
                        **kwargs: Any) -> Any:
        async def run() -> Any:
            return await original(self, name, arguments, *args, **kwargs)

        if in_journaled_call():
            return await run()  # a framework's tool seam, or a @tool, journals the call
        return await acall_tool(name, arguments or {}, run)

    return call_tool


def _protocol(send: Callable[..., Any]) -> Callable[..., Any]:
    async def sent_live(self: Any, *args: Any, **kwargs: Any) -> Any:
        # The SDK sends each message in its sender's context, so HTTP transports see this mark.
        with journaled_call():
            return await send(self, *args, **kwargs)

    return sent_live


def _transport(spawn: Callable[..., Any]) -> Callable[..., Any]:
    async def start_server(*args: Any, **kwargs: Any) -> Any:
        if "errlog" in kwargs and not _has_descriptor(kwargs["errlog"]):
            kwargs["errlog"] = None  # inherited: the kernel process's own stderr
        with journaled_call():
            return await spawn(*args, **kwargs)

    return start_server


def _has_descriptor(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return False
    return True


INTEGRATION = Integration("mcp", ("mcp.client.session", "mcp.client.stdio", "mcp.client.streamable_http"), install,
                          _patches.undo, Tested("mcp", "2.3", "2.3"))
