"""Features people reach for next, each killed after its first run and run again in a fresh kernel: LiteLLM's
`acompletion` and its `Router` (sync and async), google-genai chats. The second and third runs send nothing.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.harness import Kernel, summaries

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
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok(SETUP)
        first = kernel.ok(CELL)
        sent = model_server.stats()["requests"]
        assert sent == 5 and summaries(first)[0]["live"] == 5
        printed = "".join(o.get("text", "") for o in first if o["output_type"] == "stream")
        os.kill(kernel.pid, signal.SIGKILL)
        kernel.shutdown()
        for _ in range(2):
            kernel.start()
            kernel.ok(SETUP)
            again = kernel.ok(CELL)
            assert model_server.stats()["requests"] == sent and summaries(again)[0]["replayed"] == 5
            assert "".join(o.get("text", "") for o in again if o["output_type"] == "stream").endswith(
                printed.splitlines()[-1] + "\n")
            kernel.shutdown()
    finally:
        kernel.shutdown()


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
    kernel = Kernel(kernel_env, tmp_path)
    try:
        kernel.ok(AGENTS_SETUP)
        kernel.ok(AGENTS)
        sent, ledger = model_server.stats()["requests"], (tmp_path / "ledger.txt").read_text()
        assert sent > 0 and ledger.count("\n") >= 1
        os.kill(kernel.pid, signal.SIGKILL)
        kernel.shutdown()
        for _ in range(2):  # the session's memory file holds the first run's items: replay reads as it was
            kernel.start()
            kernel.ok(AGENTS_SETUP)
            again = kernel.ok(AGENTS)
            assert summaries(again)[0]["live"] == 0 and model_server.stats()["requests"] == sent
            assert (tmp_path / "ledger.txt").read_text() == ledger  # no refund twice
            kernel.shutdown()
    finally:
        kernel.shutdown()


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
    kernel = Kernel(kernel_env, tmp_path)
    try:
        kernel.ok(GRAPH_SETUP)
        kernel.ok(GRAPH)
        sent, ledger = model_server.stats()["requests"], (tmp_path / "ledger.txt").read_text()
        assert sent == 4 and ledger.count("\n") == 2
        # Run again in the same kernel: the in-memory saver holds the first run's state, as the file does.
        assert summaries(kernel.ok(GRAPH))[0]["live"] == 0
        os.kill(kernel.pid, signal.SIGKILL)
        kernel.shutdown()
        kernel.start()
        kernel.ok(GRAPH_SETUP)
        again = kernel.ok(GRAPH)
        assert summaries(again)[0]["live"] == 0 and model_server.stats()["requests"] == sent
        assert (tmp_path / "ledger.txt").read_text() == ledger  # no refund twice
    finally:
        kernel.shutdown()


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
    kernel = Kernel(kernel_env, tmp_path)
    try:
        kernel.ok(STREAMS_SETUP)
        first = kernel.ok(STREAMS)
        sent, ledger = model_server.stats()["requests"], (tmp_path / "ledger.txt").read_text()
        assert sent == 4 and ledger.count("\n") == 2
        os.kill(kernel.pid, signal.SIGKILL)
        kernel.shutdown()
        kernel.start()
        kernel.ok(STREAMS_SETUP)
        again = kernel.ok(STREAMS)
        assert summaries(again)[0]["live"] == 0 and model_server.stats()["requests"] == sent
        assert (tmp_path / "ledger.txt").read_text() == ledger
        shown = [o.get("text", "") for o in again if o["output_type"] == "stream"]
        assert shown == [o.get("text", "") for o in first if o["output_type"] == "stream"]
    finally:
        kernel.shutdown()
