"""MCP tools journaled once at the MCP client, whatever the framework: real kernels, real stdio MCP servers.

The tool is `send_note` of tests/fixtures/mcp_server.py, a server the client starts over stdio; it
leaves a line in a ledger each time it really runs. An agent (or the SDK's own client, with no agent)
calls it in a cell that runs in three kernels, each killed with SIGKILL after it: the tool ran once,
and only the first run sent requests to the scripted model server. Killed while the tool runs, the
call is in doubt: the next run stops instead of sending the note again. Over streamable HTTP the tool
runs once too, and the protocol's own requests, live by design, are not reported as escaped.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Kernel, summaries

SERVER = Path(__file__).resolve().parent / "fixtures" / "mcp_server.py"

PYDANTIC_SETUP = f"""
%load_ext kernel_ext
%durable session notes
import os, sys
from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
server = MCPToolset(StdioTransport(command=sys.executable, args=[{str(SERVER)!r}],
                                   env={{"MCP_LEDGER": os.environ["MCP_LEDGER"]}}))
agent = Agent("openai:scripted-chat", toolsets=[server])
"""

PYDANTIC_CELL = """%%durable send
result = await agent.run("Send a note to Ana")
print(result.output)
"""

AGENTS_SETUP = f"""
%load_ext kernel_ext
%durable session notes
import os, sys
from openai import AsyncOpenAI
from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from agents.mcp import MCPServerStdio
set_tracing_disabled(True)   # the SDK exports traces to the vendor otherwise, also during a replay
server = MCPServerStdio(params={{"command": sys.executable, "args": [{str(SERVER)!r}],
                                "env": {{"MCP_LEDGER": os.environ["MCP_LEDGER"]}}}}, cache_tools_list=True)
model = OpenAIResponsesModel(model="scripted-chat", openai_client=AsyncOpenAI())
agent = Agent(name="notes", instructions="Help.", model=model, mcp_servers=[server])
"""

AGENTS_CELL = """%%durable send
async with server:
    result = await Runner.run(agent, "Send a note to Ana")
print(result.final_output)
"""

CLIENT_SETUP = f"""
%load_ext kernel_ext
%durable session notes
import os, sys
from mcp import Client, StdioServerParameters, stdio_client
params = StdioServerParameters(command=sys.executable, args=[{str(SERVER)!r}],
                               env={{k: os.environ[k] for k in ("MCP_LEDGER", "MCP_SLOW") if k in os.environ}})
"""

CLIENT_CELL = """%%durable send
async with Client(stdio_client(params)) as client:
    result = await client.call_tool("send_note", {"to": "Ana"})
print(type(result).__name__, result.content[0].text)
"""


def _printed(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


def _tool_calls(env: dict[str, str], cwd: Path) -> list[tuple[str, str]]:
    shown = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "show", "notes", "--json"],
                           capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    [step] = json.loads(shown.stdout)["steps"]
    return [(call["kind"], call["name"]) for call in step["calls"] if call["kind"] != "llm"]


@pytest.mark.slow
@pytest.mark.parametrize("setup, cell, requests", [(PYDANTIC_SETUP, PYDANTIC_CELL, 2), (AGENTS_SETUP, AGENTS_CELL, 2),
                                                   (CLIENT_SETUP, CLIENT_CELL, 0)],
                         ids=["pydantic-ai", "openai-agents", "mcp-client"])
def test_an_mcp_tool_runs_once_across_killed_kernels(kernel_env, tmp_path, model_server, setup, cell, requests):
    ledger = tmp_path / "ledger.txt"
    env = {**kernel_env, "MCP_LEDGER": str(ledger)}
    runs, sent = [], []
    for _ in range(3):
        kernel = Kernel(env, tmp_path)  # a fresh kernel each time, as after a crash
        try:
            kernel.ok(setup)
            runs.append(kernel.ok(cell, timeout=120))
        finally:
            kernel.kill()
        sent.append(model_server.stats()["requests"])
        assert len(ledger.read_text().splitlines()) == 1  # the tool ran in the first kernel, and only there

    assert sent == [requests] * 3  # an agent's: a tool call, then the answer; nothing after the first run
    assert _printed(runs[1]) == _printed(runs[2]) == _printed(runs[0])
    live, *replays = (summary for outputs in runs for summary in summaries(outputs))
    assert live["replayed"] == 0 and "warnings" not in live, live
    for replay in replays:
        assert (replay["replayed"], replay["live"]) == (live["live"], 0), replay
    # Journaled once: as an MCP call (Pydantic AI, the SDK's client), or as the Agents SDK's function tool around it.
    assert _tool_calls(env, tmp_path) == [("tool", "send_note")]


@pytest.mark.slow
def test_an_mcp_call_killed_in_flight_is_in_doubt(kernel_env, tmp_path):
    ledger = tmp_path / "ledger.txt"
    env = {**kernel_env, "MCP_LEDGER": str(ledger), "MCP_SLOW": "60"}
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok(CLIENT_SETUP)
        kernel.kc.execute(CLIENT_CELL)  # not waited for: the kernel dies while the server runs the tool
        deadline = time.monotonic() + 60
        while not (ledger.exists() and ledger.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        kernel.kill()
    assert len(ledger.read_text().splitlines()) == 1

    kernel = Kernel({**env, "MCP_SLOW": "0"}, tmp_path)
    try:
        kernel.ok(CLIENT_SETUP)
        status, outputs = kernel.execute(CLIENT_CELL)
    finally:
        kernel.shutdown()
    # The SDK's client runs the session in a task group, which reports the error inside an ExceptionGroup.
    shown = _printed(outputs) + "".join(f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error")
    assert status == "error" and "InDoubtError: step 'send': call 1 (tool send_note" in shown, shown
    assert len(ledger.read_text().splitlines()) == 1  # the note was not sent a second time


OVER_HTTP = """
import asyncio, sys
import kernel_ext
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

kernel_ext.session("notes", journal=sys.argv[1])

async def main():
    with kernel_ext.step("send") as step:
        async with Client(streamable_http_client(sys.argv[2]), mode=sys.argv[3]) as client:
            result = await client.call_tool("send_note", {"to": "Ana"})
    print(step.live, step.replayed, step.warning_lines(), result.content[0].text)

asyncio.run(main())
"""


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ledger = tmp_path / "ledger.txt"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(SERVER), str(port)], env={"MCP_LEDGER": str(ledger)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the MCP server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", ledger
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # the 2026 protocol (discover), and initialize with a session
def test_an_mcp_tool_over_http_runs_once_and_its_protocol_is_not_reported(tmp_path, http_server, mode):
    url, ledger = http_server
    runs = [subprocess.run([sys.executable, "-c", OVER_HTTP, str(tmp_path / "j.duckdb"), url, mode],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path) for _ in range(2)]
    assert [run.returncode for run in runs] == [0, 0], runs[-1].stderr
    # Live, then replayed; no warning: the discover / initialize, listing and close requests stay live by design.
    assert [run.stdout.strip() for run in runs] == ["1 0 [] note sent to Ana", "0 1 [] note sent to Ana"]
    assert ledger.read_text().splitlines() == ["note to Ana"]
