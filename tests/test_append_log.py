"""The append log under real SIGKILLs: killed writers, kills during an absorb, a torn last record.

A writer process journals a step of tool calls into its log and is killed before the step ends,
so everything it did lives only in its log. Readers (`durable ls`) absorb that log into DuckDB and
are themselves killed mid-absorb. Whatever the kills, every call is in the journal exactly once,
the journal reopens, and a second run replays every tool without running it again.
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

import pytest

from journal import Journal, JournalError
from journal._log import logs_dir, logs_in, sync_mode

CALLS = 1500

WRITER = """
import json, os, signal, sys
from kernel_ext import session, step, tool

ledger = open(sys.argv[2], "a")

@tool(idempotent=True)
def effect(n: int, idempotency_key: str) -> int:
    ledger.write(json.dumps({"n": n, "key": idempotency_key}) + "\\n")
    ledger.flush()
    return n * 2

session("log", journal=sys.argv[1])
total = 0
with step("many"):
    for n in range(int(sys.argv[3])):
        total += effect(n)
    print("TOTAL", total, flush=True)
    if sys.argv[4] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _writer(tmp_path: Path, mode: str, *, sync: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if sync is not None:
        env["DURABLE_SYNC"] = sync
    return subprocess.run([sys.executable, "-c", WRITER, str(tmp_path / "j.duckdb"), str(tmp_path / "ledger"),
                           str(CALLS), mode], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kernel_ext.cli.main", *args, "--journal",
                             str(tmp_path / "j.duckdb")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)


def _ledger(tmp_path: Path) -> list[dict]:
    path = tmp_path / "ledger"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _calls(tmp_path: Path) -> list[tuple[int, int, str]]:
    with Journal(tmp_path / "j.duckdb").open() as store:
        return store.con.execute(
            "SELECT id, seq, status FROM call_rows WHERE session = 'log' ORDER BY seq"
        ).fetchall()


def test_a_killed_writer_loses_nothing_and_readers_killed_mid_absorb_absorb_it_once(tmp_path):
    killed = _writer(tmp_path, "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert f"TOTAL {sum(n * 2 for n in range(CALLS))}" in killed.stdout
    logs = list(logs_in(logs_dir(tmp_path / "j.duckdb")))
    assert logs, "the killed writer's calls should be waiting in its log"
    rng = random.Random(20261130)
    for _ in range(6):
        reader = _cli(tmp_path, "ls")
        time.sleep(rng.uniform(0.05, 1.5))  # somewhere in opening, absorbing or after
        reader.send_signal(signal.SIGKILL)
        reader.wait(timeout=60)
    calls = _calls(tmp_path)
    assert [seq for _, seq, _ in calls] == list(range(1, CALLS + 1)), "each call exactly once, none lost"
    assert len({call_id for call_id, _, _ in calls}) == CALLS
    assert {status for _, _, status in calls} == {"completed"}
    assert list(logs_in(logs_dir(tmp_path / "j.duckdb"))) == [], "an absorbed log of a dead writer is deleted"
    # The step was cut off: it reads as interrupted, and a second run replays every tool.
    again = _writer(tmp_path, "finish")
    assert again.returncode == 0, again.stderr
    assert len(_ledger(tmp_path)) == CALLS, "no tool ran twice"
    assert len(_calls(tmp_path)) == CALLS


def test_a_torn_last_record_is_dropped_and_the_rest_is_kept(tmp_path):
    killed = _writer(tmp_path, "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (log,) = logs_in(logs_dir(tmp_path / "j.duckdb"))
    with open(log, "r+b") as file:  # the kill landed in the middle of the last append
        file.truncate(log.stat().st_size - 7)
    shown = _cli(tmp_path, "ls")
    out, err = shown.communicate(timeout=120)
    assert shown.returncode == 0, err
    assert "cut short" in err and log.name in err, err  # said once, not silently dropped
    calls = _calls(tmp_path)
    assert [seq for _, seq, _ in calls] == list(range(1, CALLS + 1))[:len(calls)]
    assert len(calls) >= CALLS - 1  # only the torn record is lost (the step's end was the last record)
    again = _writer(tmp_path, "finish")
    assert again.returncode == 0, again.stderr
    ran = _ledger(tmp_path)
    assert len({entry["key"] for entry in ran}) == CALLS, "every effect has one idempotency key"
    assert len(ran) <= CALLS + 1, "at most the call whose record was torn ran again"


@pytest.mark.parametrize("sync", ["always", "effects", "never"])
def test_every_sync_mode_survives_a_killed_process(tmp_path, sync):
    killed = _writer(tmp_path, "kill", sync=sync)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(_calls(tmp_path)) == CALLS
    again = _writer(tmp_path, "finish", sync=sync)
    assert again.returncode == 0, again.stderr
    assert len(_ledger(tmp_path)) == CALLS


def test_an_unknown_sync_mode_is_refused_with_the_valid_ones(tmp_path):
    assert sync_mode("ALWAYS") == "always"
    with pytest.raises(JournalError, match="use one of: always, effects, never"):
        sync_mode("sometimes")
    result = _writer(tmp_path, "finish", sync="sometimes")
    assert result.returncode != 0
    assert "DURABLE_SYNC='sometimes'" in result.stderr and "always, effects, never" in result.stderr
    assert not (tmp_path / "ledger").exists() or _ledger(tmp_path) == []
