"""A LangGraph `interrupt()` decided by a durable approval, as docs/integrations/langchain.md shows it.

A real kernel runs a StateGraph (model node through langchain-openai against the scripted server over
loopback HTTP, then an `interrupt()`, then a node that pays a refund, a LangChain `@tool` writing to a
ledger file, only if resumed with True). The documented cell asks `approve()` for each interrupt: the
first run stops on the undecided approval, `durable approve` decides it from another process, the cell
run again resumes the graph with the decision. After a SIGKILL, and again after a restart, the whole
cell replays: no request reaches the model server, nobody is asked again, and the refund is never paid
twice (never at all when rejected).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Kernel, summaries

pytestmark = pytest.mark.slow

TIMEOUT = 240  # two busy cores: a kernel's first langgraph import alone can take many seconds

SETUP = """
%load_ext kernel_ext
%durable session {session}
from typing import Annotated, TypedDict
from langchain_core.tools import tool as lc_tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt

LEDGER = {ledger!r}
model = ChatOpenAI(model="scripted-chat", max_retries=0)

class Refund(TypedDict, total=False):
    messages: Annotated[list, add_messages]
    approved: bool

def draft(state):
    return {{"messages": [model.invoke(state["messages"])]}}

def ask(state):
    return {{"approved": interrupt("refund 20 EUR to Ana")}}

@lc_tool
def refund(customer: str, amount_eur: int) -> str:
    "Refund a customer."
    with open(LEDGER, "a") as ledger:
        ledger.write(f"refund {{customer}} {{amount_eur}} EUR\\n")
    return "refunded"

def pay(state):
    # Through a journaled tool: a node's plain code runs again on every replay, a tool's effect once.
    if state["approved"] is True:
        refund.invoke({{"customer": "Ana", "amount_eur": 20}})
    return {{}}

builder = StateGraph(Refund)
builder.add_node("draft", draft)
builder.add_node("ask", ask)
builder.add_node("pay", pay)
builder.add_edge(START, "draft")
builder.add_edge("draft", "ask")
builder.add_edge("ask", "pay")
builder.add_edge("pay", END)
graph = builder.compile(checkpointer=InMemorySaver())
thread = {{"configurable": {{"thread_id": "refund-ana"}}}}
"""
# The documented cell, word for word, then a line that shows how the graph ended.
CELL = """%%durable refund-with-approval
from langgraph.types import Command
from kernel_ext import approve
paused = graph.invoke({"messages": [("user", "Refund Ana")]}, thread)
for asked in paused.get("__interrupt__", []):
    decision = approve(f"Go on with: {asked.value}?", key=f"graph:{asked.value}")
    paused = graph.invoke(Command(resume=decision.approved), thread)
print("ENDED approved =", paused.get("approved"), "pending =", len(paused.get("__interrupt__", [])))
"""


def _durable(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=TIMEOUT)


def _approvals(env: dict[str, str], cwd: Path, session: str) -> list[dict[str, str]]:
    listed = _durable(env, cwd, "sql", f"SELECT key, status FROM approvals WHERE session = '{session}' ORDER BY key",
                      "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def _printed(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


def _ledger(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _decided_then_replayed(verdict: str, kernel_env: dict[str, str], tmp_path: Path, server) -> tuple[str, list[str]]:
    """Ask, decide with the CLI, resume; then kill and replay twice. Returns what the last run printed and the ledger.

    Every replay is checked here: no request to the model server, no new approval, an unchanged ledger.
    """
    session = f"graph-{verdict}"
    ledger = tmp_path / "ledger.txt"
    setup = SETUP.format(session=session, ledger=str(ledger))
    kernel = Kernel(kernel_env, tmp_path)
    try:
        kernel.ok(setup, timeout=TIMEOUT)
        status, first = kernel.execute(CELL, timeout=TIMEOUT)
        assert status == "error", first  # the cell stops on the undecided approval, it does not run on
        assert summaries(first)[-1]["state"] == "suspended", first
        assert "ENDED" not in _printed(first) and not ledger.exists()
        assert server.stats()["requests"] == 1  # the draft node's one model call
        (asked,) = _approvals(kernel_env, tmp_path, session)
        assert asked["status"] == "pending" and asked["key"].startswith("graph:"), asked

        flags = ["--reject"] if verdict == "reject" else []
        decided = _durable(kernel_env, tmp_path, "approve", session, asked["key"], *flags)
        assert decided.returncode == 0, decided.stdout + decided.stderr

        status, resumed = kernel.execute(CELL, timeout=TIMEOUT)
        # Named apart from other failures: a re-run that asks again (under another key) never resumes the graph.
        assert status == "ok", (f"the re-run after {asked['key']} was decided did not go on: "
                                f"{[o.get('evalue') for o in resumed if o['output_type'] == 'error']}")
        expected = "True" if verdict == "approve" else "False"
        assert f"ENDED approved = {expected} pending = 0" in _printed(resumed), resumed
        sent, paid = server.stats()["requests"], _ledger(ledger)
        assert sent == 1  # the model's answer came from the journal on the re-run
        # A second approval would mean the re-run asked again instead of going on from the decision.
        assert [a["key"] for a in _approvals(kernel_env, tmp_path, session)] == [asked["key"]]

        kernel.kill()
        last = resumed
        for _ in range(2):  # after the kill, and after a plain restart: a fresh kernel's empty InMemorySaver each time
            kernel.start()
            kernel.ok(setup, timeout=TIMEOUT)
            last = kernel.ok(CELL, timeout=TIMEOUT)
            assert summaries(last)[-1]["live"] == 0, last
            assert server.stats()["requests"] == sent
            assert _ledger(ledger) == paid  # the refund node's effect did not happen again
            assert [a["key"] for a in _approvals(kernel_env, tmp_path, session)] == [asked["key"]]
            kernel.shutdown()
        return _printed(last), paid
    finally:
        kernel.shutdown()


def test_an_approved_graph_interrupt_pays_once_over_reruns_a_kill_and_a_restart(kernel_env, tmp_path, model_server):
    printed, paid = _decided_then_replayed("approve", kernel_env, tmp_path, model_server)
    assert "ENDED approved = True pending = 0" in printed
    assert paid == ["refund Ana 20 EUR"]


def test_a_rejected_graph_interrupt_never_pays(kernel_env, tmp_path, model_server):
    printed, paid = _decided_then_replayed("reject", kernel_env, tmp_path, model_server)
    assert "ENDED approved = False pending = 0" in printed
    assert paid == []
