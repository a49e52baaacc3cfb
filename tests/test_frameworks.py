"""Agent frameworks inside %%durable with no glue: their model calls and their tools journaled and replayed.

Each test runs an agent with a side-effecting tool and a tool that returns the time in a real
kernel against the scripted server, then runs the same cell in a fresh kernel: no request is
sent, the side effect happened once, and the clock (journaled) does not turn the replay live.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Kernel, summaries

AGENTS_SETUP = """
%load_ext kernel_ext
import datetime
from openai import AsyncOpenAI
from agents import Agent, Runner, function_tool, OpenAIResponsesModel, set_tracing_disabled
from kernel_ext import tool
set_tracing_disabled(True)   # the SDK exports traces to the vendor otherwise, also during a replay
model = OpenAIResponsesModel(model="scripted-chat", openai_client=AsyncOpenAI())

@function_tool
def clock(city: str) -> str:
    \"\"\"The local time in a city.\"\"\"
    return f"{city}: {datetime.datetime.now().isoformat()}"

@function_tool
def refund(customer: str, amount_eur: int) -> str:
    \"\"\"Refund a customer.\"\"\"
    with open("ledger.txt", "a") as ledger:
        ledger.write(f"refund {customer} {amount_eur}\\n")
    return "refunded"

@function_tool
@tool(idempotent=True)
def note(text: str, idempotency_key: str) -> str:
    \"\"\"Write a note.\"\"\"
    with open("ledger.txt", "a") as ledger:
        ledger.write(f"note {idempotency_key}\\n")
    return "noted"

# The scripted server always calls an agent's first tool, so one agent per tool.
agents = [Agent(name=f"support-{t.name}", instructions="Help.", model=model, tools=[t]) for t in (clock, refund, note)]
"""

AGENTS_CELL = """%%durable support
answers = []
for agent, question in zip(agents, ("What time is it in Lisbon?", "Refund Ana 20 EUR", "Note that Ana called")):
    result = await Runner.run(agent, question)
    answers.append(result.final_output)
print(answers)
"""

PYDANTIC_SETUP = """
%load_ext kernel_ext
import datetime
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from kernel_ext import tool
model = OpenAIChatModel("scripted-chat", provider=OpenAIProvider(openai_client=AsyncOpenAI()))
# The scripted server always calls an agent's first tool, so one agent per tool.
timing, refunding = Agent(model, instructions="Help."), Agent(model, instructions="Help.")

@timing.tool_plain
def clock(city: str) -> str:
    \"\"\"The local time in a city.\"\"\"
    return f"{city}: {datetime.datetime.now().isoformat()}"

@refunding.tool
def refund(ctx, customer: str, amount_eur: int) -> str:
    \"\"\"Refund a customer.\"\"\"
    with open("ledger.txt", "a") as ledger:
        ledger.write(f"refund {customer} {amount_eur}\\n")
    return "refunded"

@tool
def note(text: str) -> str:
    \"\"\"Write a note.\"\"\"
    with open("ledger.txt", "a") as ledger:
        ledger.write("note\\n")
    return "noted"

noting = Agent(model, tools=[note])
"""

PYDANTIC_CELL = """%%durable support
answers = [(await timing.run("What time is it in Lisbon?")).output, (await refunding.run("Refund Ana 20 EUR")).output]
answers.append((await noting.run("Note that Ana called")).output)
print(answers)
"""


LANGCHAIN_SETUP = """
%load_ext kernel_ext
import datetime
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool as lc_tool
from langchain_openai import ChatOpenAI

@lc_tool
def clock(city: str) -> str:
    \"\"\"The local time in a city.\"\"\"
    return f"{city}: {datetime.datetime.now().isoformat()}"

@lc_tool
def refund(customer: str, amount_eur: int) -> str:
    \"\"\"Refund a customer.\"\"\"
    with open("ledger.txt", "a") as ledger:
        ledger.write(f"refund {customer} {amount_eur}\\n")
    return "refunded"

@lc_tool
async def note(text: str) -> str:
    \"\"\"Write a note.\"\"\"
    with open("ledger.txt", "a") as ledger:
        ledger.write("note\\n")
    return "noted"

async def ask(chosen, question):
    # The scripted server always calls a model's first tool, so one tool per question.
    llm = ChatOpenAI(model="scripted-chat").bind_tools([chosen])
    messages = [HumanMessage(question)]
    reply = await llm.ainvoke(messages)
    messages.append(reply)
    for call in reply.tool_calls:
        messages.append(chosen.invoke(call) if chosen is refund else await chosen.ainvoke(call))
    return (await llm.ainvoke(messages)).content
"""

LANGCHAIN_CELL = """%%durable support
answers = [await ask(clock, "What time is it in Lisbon?"), await ask(refund, "Refund Ana 20 EUR"),
           await ask(note, "Note that Ana called")]
print(answers)
"""


def _run_twice(kernel_env: dict[str, str], tmp_path: Path, setup: str, cell: str, server) -> tuple[list, list]:
    runs = []
    for _ in range(2):
        kernel = Kernel(kernel_env, tmp_path)  # the second run is a fresh kernel, as after a restart
        try:
            kernel.ok(setup)
            runs.append(kernel.ok(cell, timeout=120))
        finally:
            kernel.shutdown()
        if len(runs) == 1:
            sent = server.stats()["requests"]
    assert server.stats()["requests"] == sent  # the second run sent nothing
    return runs[0], runs[1]


def _printed(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("setup, cell", [(AGENTS_SETUP, AGENTS_CELL), (PYDANTIC_SETUP, PYDANTIC_CELL),
                                         (LANGCHAIN_SETUP, LANGCHAIN_CELL)],
                         ids=["openai-agents", "pydantic-ai", "langchain"])
def test_agent_tools_run_once_and_replay(kernel_env, tmp_path, model_server, setup, cell):
    first, second = _run_twice(kernel_env, tmp_path, setup, cell, model_server)
    assert model_server.stats()["requests"] == 6  # per question: a tool call, then the answer
    assert _printed(second) == _printed(first)  # the clock's recorded answer, so the same final output
    [live] = summaries(first)
    [replayed] = summaries(second)
    assert live["replayed"] == 0 and "warnings" not in live
    assert (replayed["replayed"], replayed["live"]) == (live["live"], 0)
    ledger = (tmp_path / "ledger.txt").read_text().splitlines()
    assert len(ledger) == 2 and ledger[0].startswith("refund ") and ledger[1].startswith("note")


DIES_INSIDE_A_TOOL = """
import asyncio, os, signal, sys
import kernel_ext
from kernel_ext import step
from openai import AsyncOpenAI
kernel_ext.session("frameworks", journal=sys.argv[1])
framework, ledger, die = sys.argv[2], sys.argv[3], sys.argv[4] == "die"

def refund(customer: str) -> str:
    \"\"\"Refund a customer.\"\"\"
    with open(ledger, "a") as f:
        f.write(customer + "\\n")
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    return "refunded"

if framework == "agents":
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    set_tracing_disabled(True)
    model = OpenAIResponsesModel(model="scripted-chat", openai_client=AsyncOpenAI())
    agent = Agent(name="a", model=model, tools=[function_tool(refund)])
    ask = lambda: Runner.run(agent, "refund ana")
else:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    agent = Agent(OpenAIChatModel("scripted-chat", provider=OpenAIProvider(openai_client=AsyncOpenAI())),
                  tools=[refund])
    ask = lambda: agent.run("refund ana")

async def main():
    with step("support"):
        await ask()
    print("done")

asyncio.run(main())
"""


@pytest.mark.parametrize("framework", ["agents", "pydantic-ai"])
def test_a_framework_tool_killed_inside_is_in_doubt(kernel_env, tmp_path, framework):
    import signal
    import subprocess
    import sys

    journal, ledger = tmp_path / "j.duckdb", tmp_path / "ledger"

    def run(die: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", DIES_INSIDE_A_TOOL, str(journal), framework, str(ledger), die],
                              capture_output=True, text=True, timeout=120, env=kernel_env, cwd=tmp_path)

    assert run("die").returncode == -signal.SIGKILL
    again = run("live")
    assert again.returncode == 1 and "InDoubtError" in again.stderr and "settle" in again.stderr, again.stderr[-2000:]
    assert len(ledger.read_text().splitlines()) == 1  # not run blindly a second time
