"""Workload 6: two kernels run `%%durable` cells at the same time on one journal, against two separate journals.

A running cell appends to its own process's log, so two kernels on one journal should take as long as
two kernels on two journals; the model's latency dominates both.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.notebook import Kernel, chat_cell, sessions, setup
from bench.rows import Context, Row, Table
from bench.systems import DBOS, DURABLE, LANGGRAPH

LATENCY = 0.5  # seconds the scripted model takes to answer each call
MAX_RATIO = 1.2
_NO_KERNELS = "no notebook kernels"
_NA = {DBOS: _NO_KERNELS, LANGGRAPH: _NO_KERNELS}


def _within_ratio(table: Table) -> bool:
    ratio = table["kernels_ratio"][DURABLE]
    return ratio is not None and ratio <= MAX_RATIO


ROWS = [
    Row("kernels_one", "6. Two kernels, {kernel_calls} calls each at 0.5 s model latency, one journal (wall)", "s",
        "Two fresh ipykernels (jupyter_client, this virtualenv), both with `DURABLE_JOURNAL` naming the same "
        "file, each run an untimed first cell (`%load_ext kernel_ext`, an `openai.OpenAI(max_retries=0)` client, "
        "`%durable session a` / `b`). Then each is sent, at the same moment from two harness threads, one "
        "`%%durable` cell that makes {kernel_calls} chat completions one after the other (distinct prompts) "
        f"through the real `openai` client to the scripted model server, which answers each after {LATENCY} s "
        "(it serves requests concurrently, one thread each). The row is the wall time from sending both cells "
        "to both replies. Afterwards, with both kernels shut down, the journal must show both sessions "
        "completed with {kernel_calls} calls each, and the server must have received exactly "
        "2 x {kernel_calls} requests; otherwise the run fails.",
        target="no error; wall time within 1.2x of two separate journals", met=_within_ratio, not_applicable=_NA),
    Row("kernels_separate", "6. The same on two separate journals (wall)", "s",
        "As above, measured in the same run right after it, with two fresh kernels whose `DURABLE_JOURNAL` names "
        "two different files (one journal each).",
        not_applicable=_NA),
    Row("kernels_ratio", "6. One journal / two separate journals", "x",
        "Each run's one-journal wall time divided by its separate-journals wall time; the median of the runs.",
        not_applicable=_NA),
]
DETAILS: dict[str, tuple[str, str]] = {}


def measure(system: str, ctx: Context) -> dict[str, float]:
    ctx.server.configure(delay=LATENCY)
    try:
        one = _pair(ctx, ctx.workdir / "one", shared=True)
        separate = _pair(ctx, ctx.workdir / "separate", shared=False)
    finally:
        ctx.server.configure(delay=0.0)  # the server is shared with the workloads that follow
    return {"kernels_one": one, "kernels_separate": separate, "kernels_ratio": one / separate}


def _pair(ctx: Context, workdir: Path, shared: bool) -> float:
    """Wall seconds of two kernels' cells sent at once; the journals are checked after the kernels are gone."""
    calls = ctx.scale.kernel_calls
    workdir.mkdir()
    journals = [workdir / "journal.duckdb"] * 2 if shared else [workdir / f"journal-{n}.duckdb" for n in "ab"]
    kernels: list[Kernel] = []
    try:
        for name, journal in zip("ab", journals, strict=True):
            kernels.append(Kernel(workdir, journal, ctx.server.base_url))
            kernels[-1].run(setup(name))
        before = ctx.server.stats()["requests"]
        with ThreadPoolExecutor(max_workers=2) as pool:
            start = time.perf_counter()
            cells = [pool.submit(k.run, chat_cell("calls", calls, f"kernel {name}"))
                     for name, k in zip("ab", kernels, strict=True)]
            for cell in cells:
                cell.result()
            wall = time.perf_counter() - start
        sent = ctx.server.stats()["requests"] - before
    finally:
        for kernel in kernels:
            kernel.close()
    assert sent == 2 * calls, f"the two cells sent {sent} requests, not {2 * calls}"
    for name, journal in zip("ab", journals, strict=True):
        found = sessions(journal).get(name)
        assert found is not None and (found["status"], found["calls"]) == ("completed", calls), \
            f"session {name} in {journal.name}: {found}"
    return wall
