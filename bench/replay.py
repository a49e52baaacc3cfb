"""Workload 4: N recorded LLM calls come back from the store in a fresh process instead of going to the model.

The recording process is SIGKILLed right after its last call returns, inside the step: for the peers this
is the only way their recorded calls are read back (DBOS recovers a pending workflow; LangGraph resumes a
thread whose entrypoint did not finish), and for durable-kernel it is the restart-and-Run-All case.
Child: python -m bench.replay record|replay SYSTEM DIR BASE_URL CALLS
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.child import clock, emit, kill_self, spawn, timed
from bench.rows import Context, Row, at_most
from bench.systems import AGENT_ID, DBOS, DURABLE, LANGGRAPH, MODEL, dbos_init, journal_path, langgraph_saver, thread

ROWS = [
    Row("replay_total", "4. Replay of {replay_calls} recorded LLM calls", "s",
        "A child makes {replay_calls} chat completions (distinct short prompts, real `openai` client, loopback HTTP "
        "to the scripted model in the harness process) in one durable step / as `@DBOS.step()`s of one workflow / "
        "as `@task`s of one LangGraph `@entrypoint`, and SIGKILLs itself right after the last one returns. A fresh "
        "process then runs the same code. Timed: durable-kernel, the whole `with step(...)` block (opening the "
        "journal, which replays the WAL the kill left, loading the recording, the calls, ending the step; the "
        "journal's file is closed a moment later, in the background); "
        "LangGraph, the whole `invoke(None, thread)`; DBOS, from the first line of the workflow body to the end of "
        "its loop as recovery runs it after `DBOS.launch()` (dispatch, result write and polling excluded, so this "
        "favours DBOS; the process's full time is in Details).",
        target="<= 0.1 s", met=at_most("replay_total", 0.1)),
    Row("replay_call", "4. Per replayed LLM call (median, the client call as the program sees it)", "us",
        "Each of the {replay_calls} replayed calls timed alone inside the timed block above, `perf_counter_ns`; the "
        "`openai` SDK's own work (building the request, parsing the recorded response) is included.",
        target="<= 50 µs", met=at_most("replay_call", 50)),
    Row("replay_live", "4. LLM calls sent to the model again during replay", "",
        "The scripted model server's request count during the replay process: calls that were answered before "
        "the kill but not read back from the store.",
        target="0", met=at_most("replay_live", 0), ratio=False),
]
DETAILS = {"replay_process": ("replay process, spawn to result (interpreter, imports, store, calls)", "s")}


def measure(system: str, ctx: Context) -> dict[str, float]:
    calls, workdir, server = ctx.scale.replay_calls, ctx.workdir, ctx.server
    spawn("replay", "record", system, workdir, server.base_url, calls, cwd=workdir, expect_kill=True)
    before = server.stats()["requests"]
    out = spawn("replay", "replay", system, workdir, server.base_url, calls, cwd=workdir)
    assert out["calls"] == calls, out
    return {"replay_total": out["seconds"], "replay_call": out["per_call_us"],
            "replay_live": server.stats()["requests"] - before, "replay_process": out["done"] - out["spawned_at"]}


def _run(ask: Callable[[Any], Any], prompts: list[Any], kill: bool) -> tuple[float, list[int]]:
    """The agent's loop, shared by the three systems: the time of the loop and of each call."""
    start = time.perf_counter()
    per_call = timed(ask, prompts)
    if kill:
        kill_self()
    return time.perf_counter() - start, per_call


def _durable(workdir: Path, ask: Callable[[Any], Any], prompts: list[Any], kill: bool) -> tuple[float, list[int]]:
    import kernel_ext

    kernel_ext.session("bench-replay", journal=journal_path(workdir))
    start = time.perf_counter()
    with kernel_ext.step("calls") as active:
        _, per_call = _run(ask, prompts, kill)
    seconds = time.perf_counter() - start
    assert active.replayed == len(prompts), (active.live, active.replayed)
    return seconds, per_call


def _dbos(workdir: Path, ask: Callable[[Any], Any], prompts: list[Any], kill: bool) -> tuple[float, list[int]]:
    from dbos import DBOS as Dbos
    from dbos import SetWorkflowID

    dbos_init(workdir, "bench-replay")
    ask_step = Dbos.step(name="ask")(ask)

    @Dbos.workflow(name="calls")
    def calls(messages: list[Any]) -> tuple[float, list[int]]:
        return _run(ask_step, messages, kill)

    Dbos.launch()
    if kill:
        with SetWorkflowID(AGENT_ID):
            calls(prompts)
    return Dbos.retrieve_workflow(AGENT_ID).get_result()  # launch() has queued it for recovery


def _langgraph(workdir: Path, ask: Callable[[Any], Any], prompts: list[Any], kill: bool
               ) -> tuple[float, list[int]]:
    from langgraph.func import entrypoint, task

    ask_task = task(name="ask")(ask)

    @entrypoint(checkpointer=langgraph_saver(workdir))
    def calls(messages: list[Any]) -> list[int]:
        return _run(lambda m: ask_task(m).result(), messages, kill)[1]

    start = time.perf_counter()
    per_call = calls.invoke(None if not kill else prompts, thread(AGENT_ID), durability="sync")
    return time.perf_counter() - start, per_call


def main(argv: list[str]) -> None:
    phase, system, workdir, base_url, count = argv[0], argv[1], Path(argv[2]), argv[3], int(argv[4])
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    def ask(messages: list[dict[str, str]]) -> Any:
        return client.chat.completions.create(model=MODEL, messages=messages)

    prompts = [[{"role": "user", "content": f"replay question {i}: what is {i} times {i}?"}] for i in range(count)]
    runner = {DURABLE: _durable, DBOS: _dbos, LANGGRAPH: _langgraph}[system]
    seconds, per_call = runner(workdir, ask, prompts, phase == "record")
    emit({"seconds": seconds, "per_call_us": statistics.median(per_call) / 1e3, "calls": len(per_call),
          "done": clock()})
    if system == DBOS:
        from dbos import DBOS as Dbos

        Dbos.destroy()


if __name__ == "__main__":
    main(sys.argv[1:])
