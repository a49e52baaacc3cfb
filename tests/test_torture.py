"""Crash torture: SIGKILL an agent notebook at 34 points (model calls in flight, inside tools before
and after their side effect, random moments) and run it again until it completes. Some schedules
then also tear the killed kernel's last log record (as a kill in the middle of an append does), or
SIGKILL `durable ls` processes while they absorb its log, before the run that completes.

For every schedule: no tool's effect happens twice (the ledger holds each idempotency key once and
the same keys as an uninterrupted run), an in-doubt non-idempotent tool stops the step with
InDoubtError (the test then settles it by looking at the ledger, as a person would look at the
payment provider), the final answer equals an uninterrupted run's, and the journal always reopens.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import AsyncKernelManager
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbformat.v4 import new_code_cell, new_notebook

from journal import Journal
from journal._log import logs_dir, logs_in
from kernel_ext.scripted.server import ScriptedModelServer
from tests.conftest import API_KEY
from tests.harness import run_notebook

TURNS = 26  # model calls; every other one asks for a tool: 26 + 13 = 39 journaled calls
TOOL_CALLS = TURNS // 2
SESSION = "ledger_agent"

SETUP = '''
import json, os, signal
from openai import OpenAI
from kernel_ext import run_tool_calls, tool

client = OpenAI(max_retries=3)
LEDGER = os.environ["LEDGER"]
KILL_AT = os.environ.get("KILL_AT_TOOL", "")  # "N:before" or "N:after": die in the N-th live tool run
live_runs = [0]


def ledger_keys():
    with open(LEDGER, "a+") as f:
        f.seek(0)
        return {json.loads(line)["key"] for line in f if line.strip()}


def effect(kind, result, key, deduplicate):
    live_runs[0] += 1
    n, _, phase = KILL_AT.partition(":")
    if n and int(n) == live_runs[0] and phase == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    if not (deduplicate and key in ledger_keys()):  # an idempotent API ignores a key it has seen
        with open(LEDGER, "a") as f:
            f.write(json.dumps({"kind": kind, "key": key, "result": result}) + "\\n")
            f.flush()
            os.fsync(f.fileno())
    if n and int(n) == live_runs[0] and phase == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result


@tool
def book_hotel(city: str, day: int, idempotency_key: str) -> dict:
    """Book a hotel room (charges a card: not idempotent)."""
    return effect("booking", {"booked": city, "day": day}, idempotency_key, deduplicate=False)


@tool(idempotent=True)
def reserve_table(city: str, day: int, idempotency_key: str) -> dict:
    """Reserve a restaurant table (the provider deduplicates by key: idempotent)."""
    return effect("table", {"table": city, "day": day}, idempotency_key, deduplicate=True)
'''

AGENT = f'''%%durable agent
TOOLS = [book_hotel, reserve_table]
messages = [{{"role": "user", "content": "Plan and book a long trip"}}]
for turn in range({TURNS}):
    offered = TOOLS if turn % 4 < 2 else TOOLS[::-1]  # the scripted model calls the first tool offered
    reply = client.chat.completions.create(model="m", messages=messages, tools=[t.schema for t in offered])
    message = reply.choices[0].message
    messages.append(message)
    if message.tool_calls:
        messages += run_tool_calls(message, TOOLS)
    else:
        messages.append({{"role": "user", "content": f"Continue with part {{turn}}"}})
'''

ANSWER = '''%%durable answer
final = client.chat.completions.create(model="m", messages=messages + [{"role": "user", "content": "Summarise"}])
print("ANSWER", final.choices[0].message.content, len(messages))
'''


def _write_notebook(path: Path) -> Path:
    cells = [new_code_cell("%load_ext kernel_ext"), new_code_cell(f"%durable session {SESSION}"),
             new_code_cell(SETUP), new_code_cell(AGENT), new_code_cell(ANSWER)]
    nbformat.write(new_notebook(cells=cells), path)
    return path


class Trial:
    def __init__(self, root: Path, server: ScriptedModelServer, notebook: Path) -> None:
        root.mkdir(parents=True)
        self.root, self.server, self.notebook = root, server, notebook
        self.ledger = root / "ledger.jsonl"
        self.journal = root / "journal.duckdb"
        self.in_doubt = 0

    def env(self, **extra: str) -> dict[str, str]:
        return dict(os.environ, OPENAI_BASE_URL=self.server.base_url, OPENAI_API_KEY=API_KEY,
                    DURABLE_JOURNAL=str(self.journal), LEDGER=str(self.ledger), **extra)

    def run_killed(self, kill: tuple[str, float]) -> None:
        """The first run, killed at the chosen point (or completed, if the point comes too late)."""
        kind, point = kill
        km = AsyncKernelManager(kernel_name="python3")
        errors: list[BaseException] = []
        env = self.env(KILL_AT_TOOL=point) if kind == "tool" else self.env()
        if kind == "llm":
            self.server.configure(hold_request=int(point))

        def target() -> None:
            try:
                run_notebook(self.notebook, env, self.root, km=km)
            except BaseException as exc:  # noqa: BLE001 - the kill surfaces here
                errors.append(exc)

        runner = threading.Thread(target=target)
        runner.start()
        if kind == "llm":
            self.server.wait_for_held(timeout=120)
            os.kill(km.provisioner.process.pid, signal.SIGKILL)
            self.server.release()
        elif kind == "random":
            runner.join(timeout=float(point))
            # Killed mid-run, or (a late point) idle after its last cell: nbclient leaves a kernel it
            # did not start running, as a notebook server does.
            if km.provisioner is not None and km.provisioner.process.poll() is None:
                os.kill(km.provisioner.process.pid, signal.SIGKILL)
        runner.join(timeout=180)
        assert not runner.is_alive()
        self.server.configure(hold_request=None)
        if kind != "random":
            assert errors and isinstance(errors[0], DeadKernelError), errors

    def tear_last_record(self) -> None:
        """Cut the killed kernel's last log record short, as a kill in the middle of its append would."""
        logs = sorted(logs_in(logs_dir(self.journal)), key=lambda log: log.stat().st_mtime)
        assert logs, "the killed kernel's latest records should still be in its log"
        with open(logs[-1], "r+b") as file:
            file.truncate(logs[-1].stat().st_size - 7)

    def kill_absorbing_readers(self, seed: int) -> None:
        """`durable ls` processes SIGKILLed at random moments: opening, absorbing the killed log, after."""
        assert list(logs_in(logs_dir(self.journal))), "the killed kernel's records should be in its log"
        rng = random.Random(seed)
        for _ in range(4):
            reader = subprocess.Popen([sys.executable, "-m", "kernel_ext.cli.main", "ls", "--journal",
                                       str(self.journal)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 1.0))
            reader.send_signal(signal.SIGKILL)
            reader.wait(timeout=60)

    def run_to_completion(self) -> nbformat.NotebookNode:
        for _ in range(4):
            with Journal(self.journal).open():  # the journal always reopens after a kill
                pass
            try:
                return run_notebook(self.notebook, self.env(), self.root)
            except CellExecutionError as exc:
                assert exc.ename == "InDoubtError", exc
                self.settle(int(re.search(r"settle (\d+)", exc.evalue).group(1)))
        raise AssertionError("the session did not complete after settling")

    def settle(self, call_id: int) -> None:
        """Decide an in-doubt booking the way its owner would: look at the provider's ledger."""
        self.in_doubt += 1
        with Journal(self.journal).open() as store:
            call = store.call(call_id)
            assert call["name"] == "book_hotel", call  # only the non-idempotent tool is ever in doubt
            key = json.loads(call["meta"])["idempotency_key"]
        booked = [e["result"] for e in self.entries() if e["key"] == key]
        import kernel_ext

        kernel_ext.session(SESSION, journal=self.journal)
        if booked:
            kernel_ext.settle(call_id, value=booked[0])
        else:
            kernel_ext.settle(call_id, retry=True)

    def entries(self) -> list[dict]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]


def _answer(nb: nbformat.NotebookNode) -> str:
    texts = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return next(line for t in texts for line in t.splitlines() if line.startswith("ANSWER"))


def _schedules() -> list[tuple[str, str]]:
    chosen = [("llm", str(k)) for k in (1, 2, 9, 18, TURNS, TURNS + 1)]
    chosen += [("tool", f"{n}:{phase}") for n in (1, 2, 7, TOOL_CALLS) for phase in ("before", "after")]
    rng = random.Random(20261122)
    chosen += [("tool", f"{rng.randint(3, TOOL_CALLS - 1)}:{rng.choice(['before', 'after'])}") for _ in range(4)]
    chosen += [("random", f"{rng.uniform(1.2, 4.2):.2f}") for _ in range(12)]  # run lasts ~4 s
    # After a kill with the model call in flight, the last record is a finished call: tear it.
    chosen += [("torn", str(k)) for k in (9, 18)]
    chosen += [("absorb", "7:after"), ("absorb", str(TURNS))]
    return chosen


SCHEDULES = _schedules()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    with ScriptedModelServer() as server:
        trial = Trial(root / "run", server, _write_notebook(root / "agent.ipynb"))
        nb = trial.run_to_completion()
        assert server.stats()["requests"] == TURNS + 1
    keys = [e["key"] for e in trial.entries()]
    assert len(keys) == TOOL_CALLS and len(set(keys)) == TOOL_CALLS
    return _answer(nb), set(keys)


@pytest.mark.slow
@pytest.mark.parametrize("kill", SCHEDULES, ids=[f"{k}-{p}" for k, p in SCHEDULES])
def test_kill_anywhere_then_resume(kill, reference, model_server, tmp_path):
    answer, keys = reference
    trial = Trial(tmp_path / "trial", model_server, _write_notebook(tmp_path / "agent.ipynb"))
    kind, point = kill
    if kind == "torn":
        trial.run_killed(("llm", point))
        trial.tear_last_record()
    elif kind == "absorb":
        trial.run_killed(("tool" if ":" in point else "llm", point))
        trial.kill_absorbing_readers(seed=len(point))
    else:
        trial.run_killed(kill)
    nb = trial.run_to_completion()
    assert _answer(nb) == answer
    ledger = [e["key"] for e in trial.entries()]
    assert len(ledger) == len(set(ledger)), "a tool's effect happened twice"
    assert set(ledger) == keys, "every tool call took effect exactly once"
    if kind == "tool" and point.endswith(("before", "after")):
        # The n-th live tool run alternates between the two tools: odd runs book (not idempotent).
        expected = 1 if int(point.split(":")[0]) % 2 == 1 else 0
        assert trial.in_doubt == expected, (trial.in_doubt, expected)
