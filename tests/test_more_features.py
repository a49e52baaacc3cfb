"""Features people reach for next, each killed after its first run and run again in a fresh kernel: LiteLLM's
`acompletion` and its `Router` (sync and async), google-genai chats. The second and third runs send nothing.
"""

from __future__ import annotations

import json

import pytest

from tests.harness import Kernel, summaries


def _ledger(tmp_path) -> str:
    path = tmp_path / "ledger.txt"
    return path.read_text() if path.exists() else ""


def _killed_and_run_again(env, tmp_path, server, setup: str, cell: str, *, again: int = 1, same_kernel: bool = False):
    """Run `cell`, SIGKILL the kernel, run it `again` times in fresh kernels: nothing is sent, no tool runs.

    Returns the first run's outputs, the last run's, the requests sent and the ledger of tool effects.
    """
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok(setup)
        first = kernel.ok(cell)
        sent, ledger = server.stats()["requests"], _ledger(tmp_path)
        if same_kernel:  # run again before the kill too: state kept in the kernel must not change the replay
            assert summaries(kernel.ok(cell))[0]["live"] == 0
        kernel.kill()
        last = first
        for _ in range(again):
            kernel.start()
            kernel.ok(setup)
            last = kernel.ok(cell)
            assert summaries(last)[0]["live"] == 0 and server.stats()["requests"] == sent
            assert _ledger(tmp_path) == ledger  # no tool ran twice
            kernel.shutdown()
        return first, last, sent, ledger
    finally:
        kernel.shutdown()

SETUP = """
%load_ext kernel_ext
import os
import litellm
from google import genai
BASE = os.environ["OPENAI_BASE_URL"]
router = litellm.Router(model_list=[{"model_name": "chat", "litellm_params": {
    "model": "openai/scripted-chat", "api_base": BASE, "api_key": "unused"}}])
gemini = genai.Client(api_key="unused", http_options={"base_url": BASE.removesuffix("/v1")})
"""
CELL = """%%durable features
direct = await litellm.acompletion(model="openai/scripted-chat", api_base=BASE, api_key="unused",
                                   messages=[{"role": "user", "content": "direct"}])
routed = router.completion(model="chat", messages=[{"role": "user", "content": "routed"}])
arouted = await router.acompletion(model="chat", messages=[{"role": "user", "content": "async routed"}])
chat = gemini.chats.create(model="gemini-scripted")
first, second = chat.send_message("hello").text, chat.send_message("and again").text
print(direct.choices[0].message.content, routed.choices[0].message.content, arouted.choices[0].message.content,
      first, second, sep="\\n")
"""


@pytest.mark.slow
def test_litellm_router_and_genai_chats_replay_after_a_kill(kernel_env, tmp_path, model_server):
    env = {**kernel_env, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    first, last, sent, _ = _killed_and_run_again(env, tmp_path, model_server, SETUP, CELL, again=2)
    assert sent == 5 and summaries(first)[0]["live"] == 5 and summaries(last)[0]["replayed"] == 5
    printed = "".join(o.get("text", "") for o in first if o["output_type"] == "stream")
    assert "".join(o.get("text", "") for o in last if o["output_type"] == "stream").endswith(
        printed.splitlines()[-1] + "\n")


AGENTS_SETUP = """
%load_ext kernel_ext
from agents import (Agent, GuardrailFunctionOutput, Runner, SQLiteSession, function_tool, input_guardrail,
                    set_tracing_disabled)
set_tracing_disabled(True)

@function_tool
def refund(customer: str) -> str:
    "Refund a customer."
    with open("ledger.txt", "a") as ledger:
        ledger.write(customer + "\\n")
    return "refunded"

@input_guardrail
async def polite(context, agent, given):
    return GuardrailFunctionOutput(output_info="ok", tripwire_triggered=False)

helper = Agent(name="helper", instructions="Refund people.", model="scripted-chat", tools=[refund])
main = Agent(name="main", instructions="Route.", model="scripted-chat", input_guardrails=[polite],
             tools=[helper.as_tool(tool_name="ask_helper", tool_description="Ask the helper.")])
memory = SQLiteSession("support", "memory.sqlite")   # a file: it outlives the kernel
"""
AGENTS = """%%durable support
first = await Runner.run(main, "Refund Ana", session=memory)
second = await Runner.run(main, "And Bo", previous_response_id=first.last_response_id)
print(first.final_output, second.final_output, sep="\\n")
"""


@pytest.mark.slow
def test_agents_sdk_sessions_guardrails_and_agents_as_tools_replay_after_a_kill(kernel_env, tmp_path, model_server):
    model_server.configure(tool_rounds=1)
    # The session's memory file holds the first run's items: a replay reads it as the first run did.
    _, _, sent, ledger = _killed_and_run_again(kernel_env, tmp_path, model_server, AGENTS_SETUP, AGENTS, again=2)
    assert sent > 0 and ledger.count("\n") >= 1


GRAPH_SETUP = """
%load_ext kernel_ext
import sqlite3
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.prebuilt import create_react_agent

@tool
def refund(customer: str) -> str:
    "Refund a customer."
    with open("ledger.txt", "a") as ledger:
        ledger.write(customer + "\\n")
    return "refunded"

saved = SqliteSaver(sqlite3.connect("graph.sqlite", check_same_thread=False))   # a file: it outlives the kernel
on_file = create_react_agent(ChatOpenAI(model="m"), [refund], checkpointer=saved)
in_memory = create_react_agent(ChatOpenAI(model="m"), [refund], checkpointer=InMemorySaver())
"""
GRAPH = """%%durable graph
thread = {"configurable": {"thread_id": "support"}}
first = on_file.invoke({"messages": [("user", "Refund Ana")]}, thread)
second = in_memory.invoke({"messages": [("user", "Refund Bo")]}, thread)
print(first["messages"][-1].content, second["messages"][-1].content, sep="\\n")
"""


@pytest.mark.slow
def test_langgraph_checkpointers_replay_after_a_kill_and_in_the_same_kernel(kernel_env, tmp_path, model_server):
    model_server.configure(tool_rounds=1)
    _, _, sent, ledger = _killed_and_run_again(kernel_env, tmp_path, model_server, GRAPH_SETUP, GRAPH,
                                               same_kernel=True)
    assert sent == 4 and ledger.count("\n") == 2


STREAMS_SETUP = """
%load_ext kernel_ext
import sqlite3
from typing import TypedDict
from pydantic_ai import Agent
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

agent = Agent("openai:scripted-chat")

@agent.tool_plain
def refund(customer: str) -> str:
    "Refund a customer."
    with open("ledger.txt", "a") as ledger:
        ledger.write(customer + "\\n")
    return "refunded"

class Ask(TypedDict):
    amount: int
    approved: bool

def ask(state):
    return {"approved": interrupt({"refund": state["amount"]})}

graph = StateGraph(Ask)
graph.add_node("ask", ask)
graph.add_edge(START, "ask")
graph.add_edge("ask", END)
graph = graph.compile(checkpointer=SqliteSaver(sqlite3.connect("graph.sqlite", check_same_thread=False)))
"""
STREAMS = """%%durable streams
async with agent.iter("Refund Ana") as run:
    async for node in run:
        pass
async with agent.run_stream_events("Refund Bo") as events:
    kinds = [type(event).__name__ async for event in events]
thread = {"configurable": {"thread_id": "approval"}}
asked = graph.invoke({"amount": 20}, thread)["__interrupt__"][0].value
decided = graph.invoke(Command(resume=True), thread)
print(run.result.output, asked, decided["approved"], sep="\\n")
"""


@pytest.mark.slow
def test_pydantic_ai_iter_and_stream_events_and_a_langgraph_interrupt_replay_after_a_kill(kernel_env, tmp_path,
                                                                                         model_server):
    model_server.configure(tool_rounds=1)
    first, last, sent, ledger = _killed_and_run_again(kernel_env, tmp_path, model_server, STREAMS_SETUP, STREAMS)
    assert sent == 4 and ledger.count("\n") == 2
    shown = [o.get("text", "") for o in last if o["output_type"] == "stream"]
    assert shown == [o.get("text", "") for o in first if o["output_type"] == "stream"]


SHELL_SETUP = """
%load_ext kernel_ext
from agents import Agent, LocalShellTool, Runner, set_tracing_disabled
set_tracing_disabled(True)

def run_here(request):
    with open("shell-ledger.txt", "a") as ledger:
        ledger.write(" ".join(request.data.action.command) + "\\n")
    return "done"

shelly = Agent(name="shelly", instructions="Tidy up.", model="scripted-chat",
               tools=[LocalShellTool(executor=run_here)])
"""
SHELL = """%%durable shell
result = await Runner.run(shelly, "Clean the temporary folder")
print(result.final_output)
"""


@pytest.mark.slow
def test_an_agents_sdk_local_tool_is_named_on_every_run_as_not_journaled(kernel_env, tmp_path, model_server):
    model_server.configure(tool_rounds=1)
    kernel = Kernel(kernel_env, tmp_path)
    try:
        kernel.ok(SHELL_SETUP)
        first = kernel.ok(SHELL)
        sent = model_server.stats()["requests"]
        kernel.restart()
        kernel.ok(SHELL_SETUP)
        again = kernel.ok(SHELL)
    finally:
        kernel.shutdown()
    assert model_server.stats()["requests"] == sent  # the model calls replayed
    for outputs in (first, again):  # live and replayed alike, the line names the tool
        said = json.dumps(outputs)
        assert "local tools ran on this machine unjournaled (LocalShellTool)" in said, said
    assert len((tmp_path / "shell-ledger.txt").read_text().splitlines()) == 2  # what the line warns of
