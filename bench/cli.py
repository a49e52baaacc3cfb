"""Workload 7: `durable ls` on a journal while a kernel's `%%durable` cell is making calls into it.

A running cell does not hold the DuckDB file (its records go to its process's log), so the command
should neither wait for the cell nor miss the calls it has made so far.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.notebook import Kernel, chat_cell, setup
from bench.rows import Context, Row, Table, at_most
from bench.systems import DBOS, DURABLE, LANGGRAPH

LATENCY = 0.25  # seconds the scripted model takes per call, so that the cell runs for several seconds
MAX_SECONDS = 1.0
SESSION = "busy"
_NO_CLI = "no notebook kernels"
_NA = {DBOS: _NO_CLI, LANGGRAPH: _NO_CLI}


def _answers(table: Table) -> bool:
    seconds, missed = table["ls_during"][DURABLE], table["ls_missed"][DURABLE]
    return seconds is not None and missed is not None and seconds <= MAX_SECONDS and missed == 0


ROWS = [
    Row("ls_during", "7. `durable ls` while a {ls_calls}-call cell runs: start to exit", "s",
        "A fresh ipykernel (jupyter_client, this virtualenv; `DURABLE_JOURNAL` names the journal) runs an "
        "untimed first cell (`%load_ext kernel_ext`, an `openai.OpenAI(max_retries=0)` client, "
        f"`%durable session {SESSION}`), then a `%%durable` cell of {{ls_calls}} chat completions made one after "
        "the other through the real `openai` client to the scripted model server, which answers each after "
        f"{LATENCY} s. When the server receives the cell's request number {{ls_next}} (so the {{ls_half}} calls "
        "before it have returned and been journaled: the cell makes one call at a time), the harness runs "
        "`durable ls --journal J` (the virtualenv's console script) as a subprocess; the row is its wall time "
        "from spawn to exit (interpreter start and imports included). The command must exit 0 before the cell "
        "ends, and the cell must complete.",
        target="answers in <= 1 s and lists the running calls", met=_answers, not_applicable=_NA),
    Row("ls_missed", "7. ... calls done before it started that it did not list", "",
        "From the output of that `durable ls`: the calls done when it started (the requests the server had "
        "received just before the spawn, minus the one in flight: {ls_half} unless the harness's 2 ms polling "
        f"lagged) minus those its `calls` column shows for session `{SESSION}`; all of them if that line is "
        "missing or its status is not `running`. Once the cell has ended, `durable ls` must show the session "
        "completed with all {ls_calls} calls; otherwise the run fails.",
        target="0", met=at_most("ls_missed", 0), ratio=False, not_applicable=_NA),
]
DETAILS = {
    "ls_done": ("calls the running cell had done when `durable ls` started", ""),
    "ls_listed": ("calls `durable ls` listed for the running cell", ""),
    "ls_idle": ("`durable ls` on the same journal once the cell has ended, kernel still up (start to exit)", "s"),
}


def measure(system: str, ctx: Context) -> dict[str, float]:
    calls, journal = ctx.scale.ls_calls, ctx.workdir / "journal.duckdb"
    ctx.server.configure(delay=LATENCY)
    kernel: Kernel | None = None
    try:
        kernel = Kernel(ctx.workdir, journal, ctx.server.base_url)
        kernel.run(setup(SESSION))
        before = ctx.server.stats()["requests"]
        with ThreadPoolExecutor(max_workers=1) as pool:
            cell = pool.submit(kernel.run, chat_cell("calls", calls, "ls"))
            done = _wait_until_sent(ctx.server, before, calls // 2 + 1, cell) - 1
            seconds, during = _ls(journal, ctx.workdir)
            still_running = not cell.done()
            cell.result()
        idle, after = _ls(journal, ctx.workdir)
    finally:
        if kernel is not None:
            kernel.close()
        ctx.server.configure(delay=0.0)  # the server is shared with the workloads that follow
    assert still_running, "the cell ended before `durable ls` did: nothing was measured during it"
    assert _line(after) == ("completed", calls), f"after the cell, `durable ls` printed:\n{after}"
    status, listed = _line(during) or ("missing", 0)
    missed = done - listed if status == "running" else done
    return {"ls_during": seconds, "ls_missed": max(0, missed), "ls_done": done, "ls_listed": listed,
            "ls_idle": idle}


def _wait_until_sent(server: Any, before: int, count: int, cell: Future[None]) -> int:
    """Poll the server until the cell has sent `count` requests; returns how many it had sent."""
    deadline = time.monotonic() + 300
    while (sent := server.stats()["requests"] - before) < count:
        if cell.done():
            cell.result()
            raise RuntimeError(f"the cell ended after {sent} requests, before request {count}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cell sent {sent} requests in 300 s, not {count}")
        time.sleep(0.002)
    return sent


def _durable() -> list[str]:
    script = Path(sys.executable).with_name("durable")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kernel_ext.cli.main"]


def _ls(journal: Path, cwd: Path) -> tuple[float, str]:
    """`durable ls --journal J`: seconds from spawn to exit, and what it printed."""
    command = [*_durable(), "ls", "--journal", str(journal)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"durable ls exited {proc.returncode}:\n{proc.stderr[-2000:]}{proc.stdout[-1000:]}")
    return seconds, proc.stdout


def _line(output: str) -> tuple[str, int] | None:
    """The status and calls that `durable ls` printed for the session."""
    for line in output.splitlines():
        parts = line.split()  # session, status, steps, calls, tokens, ...
        if len(parts) >= 4 and parts[0] == SESSION:
            return parts[1], int(parts[3])
    return None
