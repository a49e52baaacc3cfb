"""Workload 5b: open a store that a SIGKILLed process left behind (its WAL or journal file included).

The killed state comes from workload 2 (bench.resume), copied before anything else touches it.
Child: python -m bench.reopen SYSTEM DIR
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from bench.child import emit, spawn
from bench.rows import Row
from bench.systems import AGENT_ID, DBOS, DURABLE, LANGGRAPH, dbos_url, journal_path, langgraph_saver, store_dir, thread

ROWS = [
    Row("reopen", "5. Reopen the store after SIGKILL (open + first read)", "ms",
        "The store left by workload 2's killed process (copied byte for byte, WAL included) is opened in a "
        "fresh process, timed after imports: durable-kernel `Journal(path).open()` (DuckDB replays its WAL; the "
        "journal checks its schema); DBOS `DBOSClient(system_database_url=...)` and the workflow's "
        "`get_status()`; LangGraph a new `SqliteSaver` and `get_tuple()` of the thread (what `invoke` reads "
        "first)."),
]
DETAILS = {
    "reopen_close": ("closing the reopened store", "ms"),
    "reopen_side_bytes": ("WAL / journal files left by the kill", "MB"),
}


def measure(system: str, copy: Path) -> dict[str, float]:
    main_files = {"journal.duckdb", "dbos.sqlite", "checkpoints.sqlite"}
    side = sum(f.stat().st_size for f in store_dir(copy).iterdir() if f.name not in main_files)
    out = spawn("reopen", system, copy, cwd=copy)
    return {"reopen": out["open_ms"], "reopen_close": out["close_ms"], "reopen_side_bytes": side / 1e6}


def main(argv: list[str]) -> None:
    system, workdir = argv[0], Path(argv[1])
    with contextlib.ExitStack() as stack:
        if system == DURABLE:
            from journal import Journal

            start = time.perf_counter()
            stack.enter_context(Journal(journal_path(workdir)).open())
        elif system == DBOS:
            from dbos import DBOSClient

            start = time.perf_counter()
            client = DBOSClient(system_database_url=dbos_url(workdir))
            stack.callback(client.destroy)
            assert client.retrieve_workflow(AGENT_ID).get_status().status == "PENDING"
        elif system == LANGGRAPH:
            start = time.perf_counter()
            saver = langgraph_saver(workdir)
            stack.callback(saver.conn.close)
            assert saver.get_tuple(thread(AGENT_ID)) is not None
        opened = time.perf_counter()
    closed = time.perf_counter()
    emit({"open_ms": (opened - start) * 1e3, "close_ms": (closed - opened) * 1e3})


if __name__ == "__main__":
    main(sys.argv[1:])
