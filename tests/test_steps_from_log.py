"""Steps new to a session begin from the append log alone: no DuckDB on the path of the next step.

Real processes, real SIGKILLs, a real journal. While a process holds the session, it knows the
session's steps; a step it has not seen is new, and its first run begins, journals and ends through
the log, the call-id counter and a pack written for its next run. DuckDB takes the log in when the
session is idle, or beside the running steps when a long loop needs more run ids.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from journal import Journal

SCRIPT = """
import json, os, sys
from kernel_ext import session, step, tool

journal, ledger_path, steps, wait_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ledger = open(ledger_path, "a")

@tool(idempotent=True)
def work(name: str) -> str:
    ledger.write(json.dumps(name) + "\\n")
    ledger.flush()
    return f"done {name}"

session("loop", journal=journal)
live = replayed = 0
for i in range(steps):
    if i == wait_at:
        print("WAITING", flush=True)
        sys.stdin.readline()  # the test holds DuckDB open meanwhile
    with step(f"step-{i}") as active:
        work(f"step-{i}")
    live, replayed = live + active.live, replayed + active.replayed
print("REPORT", json.dumps({"live": live, "replayed": replayed}), flush=True)
"""

HOLD = """
import sys, time, duckdb
for _ in range(600):  # the script keeps the file a moment after its last use of it
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        time.sleep(0.05)
print("HELD", flush=True)
sys.stdin.readline()
con.close()
"""


def _args(tmp_path: Path, steps: int, wait_at: int = -1) -> list[str]:
    return [sys.executable, "-c", SCRIPT, str(tmp_path / "j.duckdb"), str(tmp_path / "ledger"), str(steps),
            str(wait_at)]


def _report(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.split("REPORT ", 1)[1])


def _ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _rows(tmp_path: Path) -> tuple[list[tuple], list[tuple]]:
    with Journal(tmp_path / "j.duckdb").open() as store:
        runs = store.con.execute("SELECT step, status, calls_live, calls_replayed FROM step_runs "
                                 "WHERE session = 'loop' ORDER BY id").fetchall()
        calls = store.con.execute("SELECT step, epoch, seq, status FROM call_rows WHERE session = 'loop' "
                                  "ORDER BY step, epoch, seq").fetchall()
    return runs, calls


def test_new_steps_begin_and_end_while_another_process_holds_duckdb_open(tmp_path):
    run = subprocess.Popen(_args(tmp_path, 6, wait_at=2), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert run.stdout.readline().strip() == "WAITING", run.stderr.read()
    # Steps 0 and 1 began through DuckDB (the first one claims the session); now another process locks the
    # file, as `durable sql` or a notebook's own DuckDB connection would.
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "j.duckdb")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "HELD", holder.stderr.read()
    run.stdin.write("\n")
    run.stdin.flush()
    # Steps 2-5 are new: a step that needed DuckDB would wait for the lock, then fail with JournalBusyError.
    deadline = time.monotonic() + 120
    while len(_ledger(tmp_path)) < 6 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ledger(tmp_path) == [f"step-{i}" for i in range(6)], run.stderr.read() if run.poll() else ""
    holder.communicate("\n", timeout=60)  # let go before the script exits: its exit takes the log in
    first = _report(subprocess.CompletedProcess(run.args, run.wait(timeout=120), run.stdout.read(),
                                                run.stderr.read()))
    assert first == {"live": 6, "replayed": 0}
    runs, calls = _rows(tmp_path)
    assert runs == [(f"step-{i}", "completed", 1, 0) for i in range(6)]
    assert calls == [(f"step-{i}", 1, 1, "completed") for i in range(6)]
    again = _report(subprocess.run(_args(tmp_path, 6), capture_output=True, text=True, timeout=300, cwd=tmp_path))
    assert again == {"live": 0, "replayed": 6}
    assert len(_ledger(tmp_path)) == 6, "no tool ran again"


def test_a_kill_while_duckdb_takes_a_long_loop_in_beside_it_loses_nothing_and_runs_nothing_twice(tmp_path):
    # 1,000 new steps: once the run ids reserved at the first step run low (after about 384 steps), DuckDB
    # absorbs and packs the steps so far in a thread beside the loop. Kills land around and in that work.
    steps = 1000
    for trial in range(3):
        run = subprocess.Popen(_args(tmp_path, steps), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
        target = len(_ledger(tmp_path)) + random.randint(380, 480) // (trial + 1)
        while run.poll() is None and len(_ledger(tmp_path)) < target:
            time.sleep(0.002)
        os.kill(run.pid, signal.SIGKILL)
        run.communicate(timeout=60)
    done = _report(subprocess.run(_args(tmp_path, steps), capture_output=True, text=True, timeout=600, cwd=tmp_path))
    assert done["live"] + done["replayed"] == steps
    ledger = _ledger(tmp_path)
    assert set(ledger) == {f"step-{i}" for i in range(steps)}, "every step's tool ran"
    # An idempotent tool cut off between running and being journaled runs again: at most once per kill.
    assert len(ledger) - steps <= 3, sorted(name for name in set(ledger) if ledger.count(name) > 1)
    runs, calls = _rows(tmp_path)
    completed = [call for call in calls if call[3] == "completed"]
    assert len(completed) == steps and len({call[0] for call in completed}) == steps, "one recorded call a step"
    last = _report(subprocess.run(_args(tmp_path, steps), capture_output=True, text=True, timeout=600,
                                  cwd=tmp_path))
    assert last == {"live": 0, "replayed": steps}
    assert len(_ledger(tmp_path)) == len(ledger), "the third run ran nothing"
    assert not [run for run in runs if run[1] == "running"], "a killed run reads as cut off, not running"
