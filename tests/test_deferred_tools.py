"""Pydantic AI's approval-required tools as durable approvals (`approve_deferred`).

A real kernel runs an agent whose refund tool requires approval, against the scripted server over
loopback HTTP. The first run ends with the SDK's DeferredToolRequests and the step stops on an undecided
approval; `durable approve` decides it from another process; the cell run again replays the model call,
reads the decision and runs the tool once. After a restart the whole cell replays: no request, no second
refund. A rejection goes back to the model as the SDK's ToolDenied, and the tool never runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import Kernel

pytestmark = pytest.mark.slow

SETUP = """
%load_ext kernel_ext
%durable session {session}
from openai import AsyncOpenAI
from pydantic_ai import Agent, DeferredToolRequests
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from kernel_ext import approve_deferred

model = OpenAIChatModel("scripted-chat", provider=OpenAIProvider(openai_client=AsyncOpenAI(max_retries=0)))
agent = Agent(model, instructions="Help.", output_type=[str, DeferredToolRequests])

@agent.tool_plain(requires_approval=True)
def refund(customer: str) -> str:
    "Refund a customer."
    with open("ledger.txt", "a") as ledger:
        ledger.write(customer + "\\n")
    return "refunded"
"""
CELL = """%%durable refunds
first = await agent.run("Refund Ana")
decisions = approve_deferred(first.output)
second = await agent.run(message_history=first.all_messages(), deferred_tool_results=decisions)
print("FINAL", second.output)
"""


def _durable(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def _pending_key(env: dict[str, str], cwd: Path, session: str) -> str:
    listed = _durable(env, cwd, "sql", "SELECT key FROM approvals WHERE status = 'pending' AND session = "
                      f"'{session}'", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = __import__("json").loads(listed.stdout)
    return row["key"]


@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_an_approval_required_tool_is_a_durable_approval(verdict, kernel_env, tmp_path, model_server):
    model_server.configure(tool_rounds=1)
    session = f"deferred-{verdict}"
    kernel = Kernel(kernel_env, tmp_path)
    ledger = tmp_path / "ledger.txt"
    try:
        kernel.ok(SETUP.format(session=session))
        status, outputs = kernel.execute(CELL)
        said = str(outputs)
        assert "refund" in said and not ledger.exists()  # stopped on the undecided approval, tool not run
        key = _pending_key(kernel_env, tmp_path, session)
        assert key.startswith("refund:")
        flags = ["--reject"] if verdict == "reject" else []
        decided = _durable(kernel_env, tmp_path, "approve", session, key, *flags)
        assert decided.returncode == 0, decided.stderr
        sent = model_server.stats()["requests"]
        done = kernel.ok(CELL)
        text = "".join(o.get("text", "") for o in done)
        assert "FINAL" in text
        live_calls = model_server.stats()["requests"] - sent
        assert live_calls == 1  # the first call replayed; only the run with the decision went out
        kernel.restart()
        kernel.ok(SETUP.format(session=session))
        again = kernel.ok(CELL)
        assert "FINAL" in "".join(o.get("text", "") for o in again)
        assert model_server.stats()["requests"] == sent + live_calls  # everything replayed
    finally:
        kernel.shutdown()
    if verdict == "approve":
        assert len(ledger.read_text().split()) == 1  # once, however often the cell ran
    else:
        assert not ledger.exists()
