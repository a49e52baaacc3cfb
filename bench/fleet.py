"""Workload 8: sessions per minute of an app exported with `--engine dbos`, on Postgres, with 1 and 3 workers.

The sessions wait on the model most of the time (a fixed latency per call), so more workers should
finish more of them per minute, even on two cores. Only durable-kernel has an exported DBOS app; the
peers have no such row.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.rows import Context, Row, Table
from bench.systems import DBOS, DURABLE, LANGGRAPH

LATENCY = 0.25  # seconds the scripted model takes per call
CALLS = 4  # model calls per session, one after the other
SESSIONS = 12  # per measured batch
WORKERS = (1, 3)
_NA = {DBOS: "no exported app", LANGGRAPH: "no exported app"}

# An app as `durable export --engine dbos` writes it: setup at module level, the steps in STEPS.
APP = f'''import os
from openai import OpenAI
from kernel_ext import tool

client = OpenAI(max_retries=0)


@tool(idempotent=True)
def note(text: str) -> int:
    return len(text)


STEPS = [
    ("chat", """\\
messages = [{{"role": "user", "content": f"Plan a trip to {{CITY}}"}}]
for turn in range({CALLS}):
    reply = client.chat.completions.create(model="m", messages=messages)
    messages.append({{"role": "assistant", "content": reply.choices[0].message.content}})
    messages.append({{"role": "user", "content": f"More, part {{turn}}"}})
length = note(messages[-2]["content"])
"""),
]


if __name__ == "__main__":
    from kernel_ext.engines.dbos.app import main

    raise SystemExit(main(__file__, globals(), STEPS, session="bench"))
'''


def _scales(table: Table) -> bool:
    one, three = table["fleet_1"][DURABLE], table["fleet_3"][DURABLE]
    return one is not None and three is not None and three >= 2 * one


ROWS = [
    Row("fleet_1", "8. DBOS app on Postgres, 1 worker: sessions per minute", "sessions/min",
        f"`python app.py --workers 1` (an app in the form `durable export --engine dbos` writes: one step of "
        f"{CALLS} chat completions through the real `openai` client, each answered by the scripted model server "
        f"after {LATENCY} s, then one idempotent @tool call) against a throwaway Postgres 15 cluster "
        "(initdb + pg_ctl in a temporary folder, fsync off). One warm-up session is enqueued and waited for; "
        f"then {SESSIONS} sessions are enqueued by one `python app.py enqueue` and the row is {SESSIONS} divided "
        "by the minutes from that command's start until `python app.py wait` has every result.",
        target="-", not_applicable=_NA),
    Row("fleet_3", "8. ... 3 workers", "sessions/min", "The same with `--workers 3` and a fresh database.",
        target=">= 2x the 1-worker rate", met=_scales, not_applicable=_NA),
]
DETAILS: dict[str, tuple[str, str]] = {}


def measure(system: str, ctx: Context) -> dict[str, Any]:
    from kernel_ext.engines.dbos.workflow import Recording
    from tests.postgres import PostgresCluster

    app = ctx.workdir / "app.py"
    app.write_text(APP)

    Recording("bench", {}, {}).save(app.with_suffix(".recording"))
    ctx.server.configure(delay=LATENCY)
    cluster = PostgresCluster().start()
    try:
        return {f"fleet_{n}": _rate(app, ctx, cluster.url(f"fleet{n}"), n) for n in WORKERS}
    finally:
        ctx.server.configure(delay=0.0)  # the server is shared with the workloads that follow
        cluster.stop()


def _rate(app: Path, ctx: Context, url: str, workers: int) -> float:
    env = {**os.environ, "DBOS_SYSTEM_DATABASE_URL": url, "OPENAI_BASE_URL": ctx.server.base_url,
           "OPENAI_API_KEY": "sk-bench"}

    def command(*args: str) -> None:
        done = subprocess.run([sys.executable, str(app), *args], cwd=app.parent, env=env, capture_output=True,
                              text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"app.py {args[0]} exited {done.returncode}: {done.stderr[-2000:]}")

    serving = subprocess.Popen([sys.executable, str(app), "--workers", str(workers)], cwd=app.parent, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        command("enqueue", "warm-up", "--input", "CITY=Warm")
        command("wait", "warm-up")
        sessions = [f"s{n}" for n in range(SESSIONS)]
        start = time.perf_counter()
        command("enqueue", *sessions, "--input", "CITY=Porto")
        command("wait", *sessions)
        return SESSIONS / ((time.perf_counter() - start) / 60)
    finally:
        serving.terminate()
        serving.wait(timeout=60)
