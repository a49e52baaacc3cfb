"""The tool loop the vendors' docs teach, with plain functions as tools: durable without a code change.

Each loop sends the model's tool calls to plain functions (`available[name](**args)`) and the results back, as
the OpenAI, Anthropic and LiteLLM docs write it. A plain function of the notebook under the name of a tool the
step offered the model is adopted: its calls are journaled tool calls, so after a kill nothing runs twice and
nothing is said. A function that cannot be adopted (here a closure from a factory) runs again on every run, so
every run (the first included, live or replayed) names those tools under the cell, with counts; the same line
reaches `durable run`'s summary, and `durable run --strict` fails on it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.harness import Kernel, summaries

SETUP = """
%load_ext kernel_ext
import json
from kernel_ext import tool
SERVER = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
LEDGER = "ledger.txt"

def send_sms(to: str) -> str:
    with open(LEDGER, "a") as ledger:
        ledger.write("send_sms\\n")
    return "sent"

available = {"send_sms": send_sms}
"""
DECORATED = "send_sms = tool(send_sms)\navailable = {'send_sms': send_sms}\n"
# A closure cannot be adopted: its code cannot be swapped for a trampoline that keeps its cells.
CLOSURE = """
def make_sender(ledger):
    def send_sms(to: str) -> str:
        with open(ledger, "a") as file:
            file.write("send_sms\\n")
        return "sent"
    return send_sms

available = {"send_sms": make_sender(LEDGER)}
"""

OPENAI = """%%durable loop
from openai import OpenAI
client = OpenAI()
tools = [{"type": "function", "function": {"name": "send_sms", "parameters": {
    "type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}}}]
messages = [{"role": "user", "content": "Text Ana and Bo"}]
while True:
    reply = client.chat.completions.create(model="m", messages=messages, tools=tools, metadata={"tool_rounds": "2"})
    message = reply.choices[0].message
    messages.append(message)
    if not message.tool_calls:
        break
    for call in message.tool_calls:
        result = available[call.function.name](**json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
print(message.content)
"""

ANTHROPIC = """%%durable loop
import anthropic
client = anthropic.Anthropic(base_url=SERVER, api_key="unused")
tools = [{"name": "send_sms", "input_schema": {"type": "object", "properties": {"to": {"type": "string"}},
                                               "required": ["to"]}}]
messages = [{"role": "user", "content": "Text Ana and Bo"}]
while True:
    reply = client.messages.create(model="claude-scripted", max_tokens=100, messages=messages, tools=tools,
                                   metadata={"tool_rounds": "2"})
    messages.append({"role": "assistant", "content": reply.content})
    if reply.stop_reason != "tool_use":
        break
    results = [{"type": "tool_result", "tool_use_id": block.id, "content": available[block.name](**block.input)}
               for block in reply.content if block.type == "tool_use"]
    messages.append({"role": "user", "content": results})
print(reply.content[0].text)
"""

LITELLM = """%%durable loop
import litellm
tools = [{"type": "function", "function": {"name": "send_sms", "parameters": {
    "type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}}}]
messages = [{"role": "user", "content": "Text Ana and Bo"}]
while True:
    reply = litellm.completion(model="openai/scripted-chat", messages=messages, tools=tools,
                               api_base=os.environ["OPENAI_BASE_URL"], metadata={"tool_rounds": "2"})
    message = reply.choices[0].message
    messages.append(message.model_dump())
    if not message.tool_calls:
        break
    for call in message.tool_calls:
        result = available[call.function.name](**json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
print(message.content)
"""

LOOPS = {"openai": OPENAI, "anthropic": ANTHROPIC, "litellm": LITELLM}
def _line(n: int) -> str:
    named = "send_sms" if n == 1 else f"send_sms \u00d7{n}"
    return (f"{n} tool result{'' if n == 1 else 's'} sent to the model came from functions that are not "
            f"journaled ({named})")


@pytest.fixture
def env(kernel_env: dict[str, str]) -> dict[str, str]:
    return {**kernel_env, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def _warnings(outputs: list[dict]) -> list[str]:
    return [w for mark in summaries(outputs) for w in mark.get("warnings", ())]


def _ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger.txt"
    return path.read_text().split() if path.exists() else []


def _requests(model_server) -> int:
    return model_server.stats()["requests"]


@pytest.mark.slow
@pytest.mark.parametrize("sdk", list(LOOPS))
def test_a_plain_function_loop_runs_each_tool_once_across_a_kill(sdk, env, tmp_path, model_server):
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok("import os\n" + SETUP)
        first = kernel.ok(LOOPS[sdk])
        ran = len(_ledger(tmp_path))  # LiteLLM keeps `metadata` to itself: the server's one round
        assert ran >= 1 and _ledger(tmp_path) == ["send_sms"] * ran
        assert _warnings(first) == [], "an adopted function is journaled: nothing to name"
        assert summaries(first)[0]["live"] == 2 * ran + 1, "each model call and each tool call journaled"
        sent = _requests(model_server)
        assert sent == ran + 1
        os.kill(kernel.pid, signal.SIGKILL)  # as an OOM kill: the next run starts from the journal
        kernel.shutdown()
        kernel.start()
        kernel.ok("import os\n" + SETUP)
        again = kernel.ok(LOOPS[sdk])
        assert summaries(again)[0]["live"] == 0 and _requests(model_server) == sent
        assert _ledger(tmp_path) == ["send_sms"] * ran, "no tool ran twice"
        assert _warnings(again) == []
        kernel.restart()
        kernel.ok("import os\n" + SETUP)
        third = kernel.ok(LOOPS[sdk])
        assert summaries(third)[0]["replayed"] == 2 * ran + 1 and _requests(model_server) == sent
        assert _ledger(tmp_path) == ["send_sms"] * ran
    finally:
        kernel.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_function_that_cannot_be_adopted_is_named_on_every_run(sdk, env, tmp_path, model_server):
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok("import os\n" + SETUP + CLOSURE)
        first = kernel.ok(LOOPS[sdk])
        ran = len(_ledger(tmp_path))
        assert ran == 2 and any(_line(ran) in w for w in _warnings(first)), first
        sent = _requests(model_server)
        os.kill(kernel.pid, signal.SIGKILL)
        kernel.shutdown()
        kernel.start()
        kernel.ok("import os\n" + SETUP + CLOSURE)
        again = kernel.ok(LOOPS[sdk])
        assert summaries(again)[0]["live"] == 0 and _requests(model_server) == sent
        # The function ran again, and the line says so again.
        assert any(_line(ran) in w for w in _warnings(again)) and _ledger(tmp_path) == ["send_sms"] * 2 * ran
    finally:
        kernel.shutdown()


@pytest.mark.slow
def test_the_same_loop_with_tool_runs_each_tool_once_and_says_nothing(env, tmp_path, model_server):
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok("import os\n" + SETUP + DECORATED)
        assert _warnings(kernel.ok(OPENAI)) == []
        kernel.restart()
        kernel.ok("import os\n" + SETUP + DECORATED)
        assert _warnings(kernel.ok(OPENAI)) == []
        assert _ledger(tmp_path) == ["send_sms"] * 2 and model_server.stats()["requests"] == 3
    finally:
        kernel.shutdown()


@pytest.mark.slow
def test_durable_run_names_the_tools_and_strict_fails_on_them(env, tmp_path, model_server):
    notebook = tmp_path / "loop.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("import os\n" + SETUP + CLOSURE), new_code_cell(OPENAI)]),
                   notebook)
    journal = tmp_path / "journal.duckdb"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "run", str(notebook), "--journal",
                               str(journal), *extra], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)

    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"warning, step loop: {_line(2)}" in done.stdout
    strict = run("--strict")
    assert strict.returncode == 1 and "failed (strict)" in strict.stdout
    assert "send_sms" in strict.stdout and "decorate them with @tool" in strict.stdout
