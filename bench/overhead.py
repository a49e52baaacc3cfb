"""Workload 1: what journaling adds to one call, against the same call made plainly, and the store's floor.

Child: python -m bench.overhead SYSTEM DIR BASE_URL TOOL_CALLS LLM_CALLS WARMUP STORE
(STORE: DBOS's system database, see systems.dbos_init; the other systems ignore it)
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import floors, postgres
from bench.child import emit, median_us, spawn, timed
from bench.rows import Context, Row, Table, at_most
from bench.systems import (
    DBOS,
    DURABLE,
    LANGGRAPH,
    MODEL,
    SQLITE_MODES,
    TEXT,
    dbos_init,
    journal_path,
    langgraph_saver,
    payload,
    store_dir,
    thread,
)


def _within_target(key: str) -> Callable[[Table], bool]:
    def met(table: Table) -> bool:
        ours, dbos = table[key][DURABLE], table[key][DBOS]
        return ours is not None and dbos is not None and ours <= 1000 and ours <= dbos / 2

    return met


_EQUAL = ("durable-kernel's child runs with `DURABLE_SYNC=always` in its environment (checked: its journal "
          "reports that mode): every journal record is fdatasync'ed before the call returns, two per `@tool` call "
          "(its start and its result) and two per model call. DBOS runs on its SQLite system database in WAL mode "
          "with `synchronous=FULL` (set by a SQLAlchemy connect listener on every connection DBOS opens, and read "
          "back there: `journal_mode=wal`, `synchronous=2`), so each step's commit fsyncs the WAL before the step "
          "returns. LangGraph as it ships: `SqliteSaver` is already WAL with `synchronous=FULL`, but it commits on a "
          "background thread, so its per-call time leaves the write out (see the wall row).")
_PG = (f"DBOS with its system database on a throwaway PostgreSQL {postgres.version()} cluster (Debian's binaries, "
       "initdb + pg_ctl in a temporary folder on the same disk as the benchmark's working folder, loopback TCP, "
       + ", ".join(f"`{k}={v}`" for k, v in postgres.SETTINGS.items())
       + ": each step's commit waits for its WAL flush), one fresh cluster per run. The durable-kernel column "
       "repeats its `DURABLE_SYNC=always` value, the same durability.")
_NO_PG = {LANGGRAPH: "no Postgres saver in this benchmark"} | (
    {} if postgres.installed() else {DBOS: postgres.NOT_INSTALLED, DURABLE: postgres.NOT_INSTALLED})
_FLOOR_NA = {DBOS: "its hot path is a database commit: see the store floor row",
             LANGGRAPH: "its hot path is a database commit: see the store floor row"}

ROWS = [
    Row("tool_overhead_always", "1. Overhead per durable tool call, ~1 KB result, equal durability: every step "
        "fsynced (durable-kernel `DURABLE_SYNC=always`, DBOS SQLite WAL + `synchronous=FULL`) (median, journaled - "
        "plain)", "us",
        "In one step (durable-kernel `with step(...)`, one DBOS workflow, one LangGraph `@entrypoint`), the tool "
        "`payload(i)` (returns a ~1 KB dict) is called {tool_calls} times as `@tool`, `@DBOS.step()` and "
        "LangGraph `@task` (`.result()` at once), after {warmup} warm-up calls; each call is timed alone with "
        "`perf_counter_ns`. The same process times {tool_calls} plain calls of the undecorated function; the row is "
        "the difference of the medians. " + _EQUAL,
        target="<= 1,000 µs and <= 1/2 DBOS", met=_within_target("tool_overhead_always")),
    Row("llm_overhead_always", "1. Overhead per live LLM call, equal durability: every step fsynced (as above) "
        "(median, journaled - plain)", "us",
        "{llm_calls} chat completions (after {warmup} warm-up calls) with distinct short prompts through the real "
        "`openai` client over loopback HTTP to the scripted model server (a separate process: the harness), made "
        "inside a durable step / as a `@DBOS.step()` / as a LangGraph `@task`, against the same calls made plainly "
        "in the same process; difference of the medians, in the same children as the row above.",
        target="<= 1,000 µs and <= 1/2 DBOS", met=_within_target("llm_overhead_always")),
    Row("tool_overhead_pg", "1. ... the tool call, DBOS on PostgreSQL (fsync on)", "us",
        "As the tool row above; " + _PG, not_applicable=_NO_PG),
    Row("llm_overhead_pg", "1. ... the live LLM call, DBOS on PostgreSQL (fsync on)", "us",
        "As the LLM row above; " + _PG, not_applicable=_NO_PG),
    Row("tool_overhead", "1. Overhead per durable tool call, default modes (durable-kernel `effects`, DBOS SQLite "
        "rollback journal) (median, journaled - plain)", "us",
        "The tool measurement above made in fresh children with each system as it ships: durable-kernel's default "
        "sync mode, `effects`, fdatasyncs only the start of a tool that is not idempotent (one per call here; a "
        "model call's records are not synced); DBOS's SQLite file keeps SQLite's default rollback journal "
        "(`synchronous=FULL`: each commit syncs the journal and the database file); LangGraph as above.",
        target="<= 1,000 µs", met=at_most("tool_overhead", 1000)),
    Row("llm_overhead", "1. Overhead per live LLM call, default modes (median, journaled - plain)", "us",
        "The LLM measurement above, in the same default-mode children as the row above.",
        target="<= 1,000 µs", met=at_most("llm_overhead", 1000)),
    Row("tool_wall", "1. The step of tool calls, default modes, start to end (wall)", "ms",
        "Wall time of the whole step of the default-mode tool row (warm-up included): opening the store, every "
        "call, ending the step (durable-kernel closes the journal's file a moment later, in the background). "
        "LangGraph saves each task's result on a background thread, so its per-call latency does not include the "
        "write; this row does. The equal-durability walls are in Details."),
    Row("floor_write", "1. Floor of durable-kernel's hot path: one `os.write` of ~1 KB to an append-only file "
        "(median)", "us",
        "{tool_calls} `os.write`s of 1,000 bytes to a file opened `O_WRONLY | O_APPEND | O_CREAT` in the run's "
        "working folder (the disk the journal and its logs are on), after {warmup} warm-up writes, each timed "
        "alone with `perf_counter_ns`, in the default-mode durable-kernel child after its measurements: what a "
        "running step's record costs at least when it is not synced.", not_applicable=_FLOOR_NA),
    Row("floor_sync", "1. Floor of durable-kernel's hot path: one `os.write` + `os.fdatasync` of ~1 KB (median)",
        "us",
        "As above, each write followed by `os.fdatasync` of the file: what a synced record (`DURABLE_SYNC=always`, "
        "or a non-idempotent tool's start in `effects`) costs at least.", not_applicable=_FLOOR_NA),
    Row("floor", "1. Floor of each store: raw insert + commit of a ~1 KB row (median)", "us",
        "{tool_calls} autocommitted `INSERT`s of a ~1 KB row into a fresh file in the working folder, timed alone: "
        "DuckDB (one thread, 16 KB blocks, WAL checkpoint at 1 MB, as the journal opens it; durable-kernel writes "
        "DuckDB when a step begins and when logs are absorbed, not per call) for durable-kernel; SQLite in WAL "
        "mode with `synchronous=FULL` for DBOS (as the equal-durability rows configure it; its default rollback "
        "journal is in Details) and for LangGraph (as `SqliteSaver` sets it)."),
]
DETAILS = {
    "plain_tool_us": ("plain tool call (median)", "us"),
    "tool_us": ("journaled tool call, default modes (median)", "us"),
    "tool_always_us": ("journaled tool call, equal durability (median)", "us"),
    "plain_llm_us": ("plain LLM call (median)", "us"),
    "llm_us": ("journaled live LLM call, default modes (median)", "us"),
    "llm_always_us": ("journaled live LLM call, equal durability (median)", "us"),
    "tool_wall_always": ("the step of tool calls, equal durability (wall)", "ms"),
    "tool_wall_pg": ("the step of tool calls, DBOS on PostgreSQL (wall)", "ms"),
    "floor_rollback": ("floor: SQLite rollback journal, synchronous=FULL (DBOS's default), insert + commit of a "
                       "~1 KB row (median)", "us"),
}
_FACTS: dict[str, Any] = {}  # what a child reports besides its timings


def measure(system: str, ctx: Context) -> dict[str, Any]:
    if system == LANGGRAPH:  # one configuration: as it ships
        out = _child(system, ctx, ctx.workdir)
        return {**_rows(out, ""), "tool_overhead_always": out["tool_us"] - out["plain_tool_us"],
                "llm_overhead_always": out["llm_us"] - out["plain_llm_us"], "floor": out["floor_us"],
                **{key: out[key] for key in ("plain_tool_us", "tool_us", "plain_llm_us", "llm_us")}}
    if system == DBOS:
        default = _child(system, ctx, ctx.workdir / "default", store="default")
        wal = _child(system, ctx, ctx.workdir / "wal", store="wal")
        assert wal["sqlite"] == {"journal_mode": "wal", "synchronous": "FULL"}, wal["sqlite"]
        metrics = {**_rows(default, ""), **_rows(wal, "_always"), "floor": wal["floor_us"],
                   "floor_rollback": default["floor_us"], "tool_always_us": wal["tool_us"],
                   "llm_always_us": wal["llm_us"], "tool_wall_always": wal["tool_wall_ms"],
                   **{key: default[key] for key in ("plain_tool_us", "tool_us", "plain_llm_us", "llm_us")}}
        if postgres.installed():
            cluster = postgres.DurableCluster().start()
            try:
                pg = _child(system, ctx, ctx.workdir / "pg", store=cluster.url("bench"))
            finally:
                cluster.stop()
            metrics |= {**_rows(pg, "_pg"), "tool_wall_pg": pg["tool_wall_ms"]}
        return metrics
    default = _child(system, ctx, ctx.workdir / "default")
    # Whatever DURABLE_SYNC the harness was started with would silently change what the default rows mean.
    assert default["sync"] == "effects", f"the default-mode child's journal ran in mode {default['sync']!r}"
    synced = _child(system, ctx, ctx.workdir / "sync-always", env={"DURABLE_SYNC": "always"})
    assert synced["sync"] == "always", f"the DURABLE_SYNC=always child's journal ran in mode {synced['sync']!r}"
    metrics = {**_rows(default, ""), **_rows(synced, "_always"), "floor": default["floor_us"],
               "floor_write": default["write_us"], "floor_sync": default["fdatasync_us"],
               "tool_always_us": synced["tool_us"], "llm_always_us": synced["llm_us"],
               "tool_wall_always": synced["tool_wall_ms"],
               **{key: default[key] for key in ("plain_tool_us", "tool_us", "plain_llm_us", "llm_us")}}
    if postgres.installed():  # the same durability as DBOS on Postgres: the ratio compares like with like
        metrics |= {"tool_overhead_pg": metrics["tool_overhead_always"],
                    "llm_overhead_pg": metrics["llm_overhead_always"]}
    return metrics


def _rows(out: dict[str, Any], suffix: str) -> dict[str, float]:
    rows = {f"tool_overhead{suffix}": out["tool_us"] - out["plain_tool_us"],
            f"llm_overhead{suffix}": out["llm_us"] - out["plain_llm_us"]}
    return rows | ({"tool_wall": out["tool_wall_ms"]} if not suffix else {})


def _child(system: str, ctx: Context, workdir: Path, env: dict[str, str] | None = None, store: str = "default"
           ) -> dict[str, Any]:
    s = ctx.scale
    workdir.mkdir(exist_ok=True)
    return spawn("overhead", system, workdir, ctx.server.base_url, s.tool_calls, s.llm_calls, s.warmup, store,
                 cwd=workdir, env=env)


def _prompts(count: int, tag: str) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{tag} question {i}: what is {i} plus {i}?"}] for i in range(count)]


def _duckdb_floor(path: Path, count: int, warmup: int) -> list[int]:
    import duckdb

    with duckdb.connect(str(path), config={"default_block_size": "16384", "threads": "1"}) as con:
        con.execute("SET wal_autocheckpoint = '1MB'")
        con.execute("CREATE TABLE t (id INTEGER, data VARCHAR)")
        return timed(lambda i: con.execute("INSERT INTO t VALUES (?, ?)", [i, TEXT]), range(count), warmup)


def _sqlite_floor(path: Path, count: int, warmup: int, wal: bool) -> list[int]:
    con = sqlite3.connect(str(path), isolation_level=None)  # autocommit: one commit per INSERT
    try:
        if wal:
            con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE t (id INTEGER, data TEXT)")
        return timed(lambda i: con.execute("INSERT INTO t VALUES (?, ?)", (i, TEXT)), range(count), warmup)
    finally:
        con.close()


def _durable(workdir: Path, tools: range, ask: Callable[[Any], Any], prompts: list[Any], warmup: int
             ) -> tuple[list[int], float, list[int]]:
    import kernel_ext

    kernel_ext.session("bench-overhead", journal=journal_path(workdir))
    journaled = kernel_ext.tool(payload)
    start = time.perf_counter()
    with kernel_ext.step("tools") as active:
        tool_ns = timed(journaled, tools, warmup)
    wall = time.perf_counter() - start
    with kernel_ext.step("llm") as llm:
        llm_ns = timed(ask, prompts, warmup)
    assert (active.live, llm.live, llm.replayed) == (len(tools), len(prompts), 0), "every call must go live"
    _FACTS["sync"] = kernel_ext.current_session().journal.sync
    kernel_ext.current_session().release()
    return tool_ns, wall, llm_ns


def _dbos(workdir: Path, tools: range, ask: Callable[[Any], Any], prompts: list[Any], warmup: int,
          store: str = "default") -> tuple[list[int], float, list[int]]:
    from dbos import DBOS as Dbos

    dbos_init(workdir, "bench-overhead", store)
    journaled = Dbos.step(name="payload")(payload)
    ask_step = Dbos.step(name="ask")(ask)

    @Dbos.workflow(name="tools")
    def tool_flow(n: int) -> list[int]:
        return timed(journaled, range(n), warmup)

    @Dbos.workflow(name="llm")
    def llm_flow(messages: list[Any]) -> list[int]:
        return timed(ask_step, messages, warmup)

    Dbos.launch()
    try:
        start = time.perf_counter()
        tool_ns = tool_flow(len(tools))
        wall = time.perf_counter() - start
        return tool_ns, wall, llm_flow(prompts)
    finally:
        Dbos.destroy()


def _langgraph(workdir: Path, tools: range, ask: Callable[[Any], Any], prompts: list[Any], warmup: int
               ) -> tuple[list[int], float, list[int]]:
    from langgraph.func import entrypoint, task

    saver = langgraph_saver(workdir)
    journaled, ask_task = task(name="payload")(payload), task(name="ask")(ask)

    @entrypoint(checkpointer=saver)
    def tool_flow(n: int) -> list[int]:
        return timed(lambda i: journaled(i).result(), range(n), warmup)

    @entrypoint(checkpointer=saver)
    def llm_flow(messages: list[Any]) -> list[int]:
        return timed(lambda m: ask_task(m).result(), messages, warmup)

    start = time.perf_counter()
    tool_ns = tool_flow.invoke(len(tools), thread("tools"), durability="sync")
    wall = time.perf_counter() - start
    llm_ns = llm_flow.invoke(prompts, thread("llm"), durability="sync")
    saver.conn.close()
    return tool_ns, wall, llm_ns


def main(argv: list[str]) -> None:
    system, workdir, base_url = argv[0], Path(argv[1]), argv[2]
    tool_calls, llm_calls, warmup = (int(a) for a in argv[3:6])
    store = argv[6]
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    def ask(messages: list[dict[str, str]]) -> Any:
        return client.chat.completions.create(model=MODEL, messages=messages)

    tools = range(tool_calls + warmup)
    plain_tool = timed(payload, tools, warmup)
    plain_llm = timed(ask, _prompts(llm_calls + warmup, "plain"), warmup)
    prompts = _prompts(llm_calls + warmup, "journaled")
    if system == DBOS:
        tool_ns, wall, llm_ns = _dbos(workdir, tools, ask, prompts, warmup, store)
        _FACTS["sqlite"] = dict(SQLITE_MODES)
    else:
        tool_ns, wall, llm_ns = {DURABLE: _durable, LANGGRAPH: _langgraph}[system](workdir, tools, ask, prompts, warmup)
    folder, count = store_dir(workdir).parent, tool_calls + warmup
    if system == DURABLE:
        _FACTS["floor_us"] = median_us(_duckdb_floor(folder / "floor.db", count, warmup))
        _FACTS["write_us"] = median_us(floors.append(folder, tool_calls, warmup, sync=False))
        _FACTS["fdatasync_us"] = median_us(floors.append(folder, tool_calls, warmup, sync=True))
    elif not store.startswith("postgresql"):
        floor = _sqlite_floor(folder / "floor.db", count, warmup, wal=system == LANGGRAPH or store == "wal")
        _FACTS["floor_us"] = median_us(floor)
    emit({"plain_tool_us": median_us(plain_tool), "tool_us": median_us(tool_ns), "tool_wall_ms": wall * 1e3,
          "plain_llm_us": median_us(plain_llm), "llm_us": median_us(llm_ns), **_FACTS})


if __name__ == "__main__":
    main(sys.argv[1:])
