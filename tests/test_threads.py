"""Calls made from threads a durable step starts belong to that step: journaled, replayed, run once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from journal import Journal
from tests.harness import Kernel, summaries

SETUP = """
%load_ext kernel_ext
import json, os, concurrent.futures as cf
from openai import OpenAI
from kernel_ext import tool
client = OpenAI(max_retries=0)

@tool
def book(slot: int) -> str:
    with open("ledger.txt", "a") as ledger:   # the side effect: one line per run of the tool
        ledger.write(f"{slot}\\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    return f"booked {slot}"

def ask(i):
    return client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"question {i}"}]).choices[0].message.content
"""

POOL = """%%durable pool
with cf.ThreadPoolExecutor(max_workers=4) as pool:
    booked = [f.result() for f in [pool.submit(book, slot) for slot in range(5)]]
    answers = list(pool.map(ask, range(10)))
print(len(booked), len(answers), answers[9][:20])
"""


def _completed_llm_calls(journal: Path) -> int:
    with Journal(journal).open() as store:
        calls = store.session_calls("threads")
    return sum(1 for step_calls in calls.values() for c in step_calls
               if c["kind"] == "llm" and c["status"] == "completed")


def _settled_count(server) -> int:
    """The server's request count once requests the dead kernel had already sent have all landed."""
    count = server.stats()["requests"]
    while True:
        # Quiet for this long means settled: long enough for a busy machine's server to accept a straggler.
        time.sleep(2)
        again = server.stats()["requests"]
        if again == count:
            return count
        count = again


@pytest.mark.slow
def test_thread_pool_calls_are_journaled_and_survive_a_kill(model_server, kernel_env, tmp_path):
    env = {**kernel_env, "DURABLE_SESSION": "threads"}
    journal = Path(env["DURABLE_JOURNAL"])
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok(SETUP)
        model_server.configure(hold_request=7)  # the 7th model request parks until the kill
        runner = threading.Thread(target=kernel.execute, args=(POOL,), kwargs={"timeout": 120}, daemon=True)
        runner.start()
        assert model_server.wait_for_held(timeout=60) == 7
        time.sleep(0.5)  # let the other workers' requests reach the server too, as a real kill would find them
        kernel.kill()
    finally:
        kernel.shutdown()
    model_server.release()
    first = _settled_count(model_server)
    in_flight = first - _completed_llm_calls(journal)
    assert in_flight >= 1
    assert sorted(Path(tmp_path / "ledger.txt").read_text().split()) == ["0", "1", "2", "3", "4"]

    completed = first - in_flight
    for run in ("resumed", "third"):
        kernel = Kernel(env, tmp_path)  # a fresh kernel, as after a restart
        try:
            kernel.ok(SETUP)
            outputs = kernel.ok(POOL, timeout=120)
        finally:
            kernel.shutdown()
        assert any(o.get("text", "").startswith("5 10 [scripted]") for o in outputs), outputs
        assert model_server.stats()["requests"] == 10 + in_flight  # only the calls in flight were sent twice
        [mark] = summaries(outputs)
        if run == "resumed":
            assert (mark["replayed"], mark["live"]) == (5 + completed, 10 - completed)
        else:
            assert (mark["replayed"], mark["live"]) == (15, 0)  # a third run sends nothing
        assert sorted((tmp_path / "ledger.txt").read_text().split()) == ["0", "1", "2", "3", "4"]


def test_thread_started_inside_a_step_and_asyncio_executors_belong_to_it(kernel, model_server):
    kernel.ok(SETUP)
    cell = """%%durable mixed
import asyncio, threading
results = []
worker = threading.Thread(target=lambda: results.append(ask("thread")))
worker.start(); worker.join()
results.append(await asyncio.to_thread(ask, "to_thread"))
results.append(await asyncio.get_running_loop().run_in_executor(None, ask, "executor"))
results.append(await asyncio.get_running_loop().run_in_executor(None, book, 7))
print(len(results))
"""
    first = kernel.ok(cell)
    assert summaries(first) == [{"step": "mixed", "replayed": 0, "live": 4}]
    again = kernel.ok(cell)
    assert summaries(again) == [{"step": "mixed", "replayed": 4, "live": 0}]
    assert model_server.stats()["requests"] == 3


def test_a_call_from_a_thread_started_before_the_step_is_named(kernel, model_server):
    kernel.ok(SETUP)
    kernel.ok("""
import queue, threading
jobs, done = queue.Queue(), queue.Queue()
def serve():
    while True:
        done.put(ask(jobs.get()))
threading.Thread(target=serve, name="old-worker", daemon=True).start()
""")
    outputs = kernel.ok("%%durable stray\njobs.put('late'); print(done.get(timeout=30)[:10])")
    [mark] = summaries(outputs)
    assert mark["warnings"] == ["1 HTTP request to 127.0.0.1 from thread 'old-worker' could not be attributed "
                                "to this step and was not journaled; start that thread inside the step"]
    text = next(o["data"]["text/plain"] for o in outputs if o.get("metadata", {}).get("durable"))
    assert "old-worker" in text
