"""The agent of workload 2 (bench.resume) as a child program: N steps, each one tool call.

`record` SIGKILLs itself right after step N-1 returns; `resume` is the fresh process that finishes the run.
The harness times this program from its spawn, so it imports nothing before the system it runs.
Child: python -m bench.agent record|resume SYSTEM DIR STEPS [DBOS_POLL_SECONDS]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.child import Ledger, clock, emit, kill_self
from bench.systems import AGENT_ID, DBOS, DURABLE, LANGGRAPH, dbos_init, journal_path, langgraph_saver, payload, thread


def _durable(workdir: Path, steps: int, kill_after: int | None) -> tuple[float, int]:
    import kernel_ext

    imported = clock()
    ledger = Ledger(workdir / "ledger")

    def work(i: int) -> dict[str, Any]:
        ledger.write(i)
        return payload(i)

    durable_work = kernel_ext.tool(work)
    kernel_ext.session("bench-resume", journal=journal_path(workdir))
    total = 0
    with kernel_ext.step("agent"):
        for i in range(steps):
            total += durable_work(i)["i"]
            if i == kill_after:
                kill_self()
    return imported, total


def _dbos(workdir: Path, steps: int, kill_after: int | None, poll: float | None = None) -> tuple[float, int]:
    from dbos import DBOS as Dbos
    from dbos import SetWorkflowID

    imported = clock()
    ledger = Ledger(workdir / "ledger")
    dbos = dbos_init(workdir, "bench-resume")
    if poll is not None:
        # Recovery re-enqueues the pending workflow on DBOS's internal queue, whose worker polls every 1 s; no
        # public setting reaches that queue, so its private interval is set (before launch starts the worker).
        dbos._registry.get_internal_queue()._polling_interval_sec = poll

    @Dbos.step(name="work")
    def work(i: int) -> dict[str, Any]:
        ledger.write(i)
        return payload(i)

    @Dbos.workflow(name="agent")
    def agent(n: int) -> int:
        total = 0
        for i in range(n):
            total += work(i)["i"]
            if i == kill_after:
                kill_self()
        return total

    Dbos.launch()
    if kill_after is None:  # resuming: launch() has queued the pending workflow for recovery
        handle = Dbos.retrieve_workflow(AGENT_ID)
        total = handle.get_result() if poll is None else handle.get_result(polling_interval_sec=poll)
    else:
        with SetWorkflowID(AGENT_ID):
            total = agent(steps)
    return imported, total


def _langgraph(workdir: Path, steps: int, kill_after: int | None) -> tuple[float, int]:
    from langgraph.func import entrypoint, task

    imported = clock()
    ledger = Ledger(workdir / "ledger")
    saver = langgraph_saver(workdir)

    @task(name="work")
    def work(i: int) -> dict[str, Any]:
        ledger.write(i)
        return payload(i)

    @entrypoint(checkpointer=saver)
    def agent(n: int) -> int:
        total = 0
        for i in range(n):
            total += work(i).result()["i"]
            if i == kill_after:
                kill_self()
        return total

    return imported, agent.invoke(None if kill_after is None else steps, thread(AGENT_ID), durability="sync")


def main(argv: list[str]) -> None:
    phase, system, workdir, steps = argv[0], argv[1], Path(argv[2]), int(argv[3])
    kill_after = steps - 2 if phase == "record" else None
    if system == DBOS and len(argv) > 4:
        imported, total = _dbos(workdir, steps, kill_after, float(argv[4]))
    else:
        runner = {DURABLE: _durable, DBOS: _dbos, LANGGRAPH: _langgraph}[system]
        imported, total = runner(workdir, steps, kill_after)
    emit({"imported": imported, "done": clock(), "result": total})
    if system == DBOS:
        from dbos import DBOS as Dbos

        Dbos.destroy()


if __name__ == "__main__":
    main(sys.argv[1:])
