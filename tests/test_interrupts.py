"""Kernel -> Interrupt stops a %%durable cell at once, as it stops a plain cell, and the journal says so.

The interrupt is the real one (SIGINT through the kernel manager). "At once" is shown without a clock:
the cell has stopped while the model call it was waiting for is still held by the server, or while
the tool it was running still had most of a minute to sleep.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from journal import Journal
from tests.harness import Kernel

SETUP = """
%load_ext kernel_ext
import asyncio, os, time
from openai import OpenAI, AsyncOpenAI
from kernel_ext import tool
client, aclient = OpenAI(max_retries=0), AsyncOpenAI(max_retries=0)

def mark():
    open("tool-started", "w").close()

@tool
def slow_sync(n: int) -> str:
    mark(); time.sleep(60)
    return "slept"

@tool
async def slow_async(n: int) -> str:
    mark(); await asyncio.sleep(60)
    return "slept"
"""

MODEL_CELLS = {
    "sync": """%%durable chat
answers = [client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
           for i in range(3)]
print("DONE", len(answers))
""",
    "async": """%%durable chat
answers = [await aclient.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
           for i in range(3)]
print("DONE", len(answers))
""",
}

TOOL_CELLS = {
    "sync": """%%durable work
first = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "before"}])
print(slow_sync(1))
""",
    "async": """%%durable work
first = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "before"}])
print(await slow_async(1))
""",
}


def _interrupt_while(kernel: Kernel, cell: str, ready) -> tuple[str, list]:
    """Run `cell`, interrupt it once `ready()` holds, and return what the cell ended with."""
    result: dict[str, object] = {}
    runner = threading.Thread(target=lambda: result.update(out=kernel.execute(cell, timeout=120)), daemon=True)
    runner.start()
    while not ready():
        time.sleep(0.05)
    kernel.km.interrupt_kernel()
    runner.join(timeout=120)
    assert "out" in result, "the cell did not stop after the interrupt"
    return result["out"]  # type: ignore[return-value]


def _step_status(journal: Path, step: str) -> str:
    with Journal(journal).open() as store:
        return {s["name"]: s["status"] for s in store.steps_of("interrupts")}[step]


def _error(outputs: list) -> str:
    return next(o["ename"] for o in outputs if o["output_type"] == "error")


def _summary_text(outputs: list) -> str:
    return "".join(o["data"]["text/plain"] for o in outputs if "durable" in o.get("metadata", {}))


@pytest.fixture
def kernel(kernel_env, tmp_path):
    k = Kernel({**kernel_env, "DURABLE_SESSION": "interrupts"}, tmp_path)
    k.ok(SETUP)
    yield k
    k.shutdown()


@pytest.mark.parametrize("client", ["sync", "async"])
def test_interrupt_during_a_held_model_call(kernel, model_server, tmp_path, client):
    model_server.configure(hold_request=2)
    status, outputs = _interrupt_while(kernel, MODEL_CELLS[client], lambda: model_server.stats()["requests"] >= 2)
    assert status == "error" and _error(outputs) == "KeyboardInterrupt"
    assert model_server.wait_for_held(timeout=1) == 2  # the call it waited for is still held: it stopped at once
    model_server.release()
    # The call in flight gave its place back: it is not journaled and goes live again.
    assert "interrupted after 1 call (0 replayed, 1 live and journaled)" in _summary_text(outputs)
    assert _step_status(tmp_path / "journal.duckdb", "chat") == "interrupted"

    again = kernel.ok(MODEL_CELLS[client])
    assert any("DONE 3" in o.get("text", "") for o in again)
    assert model_server.stats()["requests"] == 4  # call 1 replayed; call 2 (interrupted) sent again, then 3


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_interrupt_inside_a_tool_leaves_it_in_doubt_saying_so(kernel, model_server, tmp_path, kind):
    status, outputs = _interrupt_while(kernel, TOOL_CELLS[kind], lambda: (tmp_path / "tool-started").exists())
    assert status == "error" and _error(outputs) == "KeyboardInterrupt"
    assert "interrupted after 2 calls (0 replayed, 1 live and journaled, 1 in flight when it stopped)" in (
        _summary_text(outputs))
    assert _step_status(tmp_path / "journal.duckdb", "work") == "interrupted"

    status, again = kernel.execute(TOOL_CELLS[kind])
    assert status == "error" and _error(again) == "InDoubtError"
    message = next(o["evalue"] for o in again if o["output_type"] == "error")
    assert "it was interrupted inside it" in message and "settle" in message
    assert model_server.stats()["requests"] == 1  # the model call before the tool replayed


def test_a_step_whose_kernel_died_reads_as_interrupted(kernel, model_server, tmp_path, kernel_env):
    import json
    import subprocess
    import sys

    model_server.configure(hold_request=2)
    runner = threading.Thread(target=lambda: kernel.execute(MODEL_CELLS["sync"], timeout=120), daemon=True)
    runner.start()
    assert model_server.wait_for_held(timeout=60) == 2
    kernel.kill()  # the kernel dies inside the step: its row still says 'running'
    model_server.release()

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args, "--journal",
                               str(tmp_path / "journal.duckdb"), "--json"], capture_output=True, text=True,
                              timeout=120, env=kernel_env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    [listed] = json.loads(cli("ls"))
    assert listed["status"] == "interrupted"
    shown = json.loads(cli("show", "interrupts"))
    assert [step["status"] for step in shown["steps"]] == ["interrupted"]
