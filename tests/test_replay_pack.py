"""Steps that begin from their replay pack: no DuckDB on the replay path, and never a stale recording.

Real processes, real SIGKILLs, a real journal: a script records its steps, and later runs of it
begin every step from the step's pack and the append logs. These tests check that such runs do
not import duckdb, replay exactly what DuckDB holds (also after a kill mid-step, a settled call
or a rerun), are journaled like any other run, and still refuse a second driver of the session.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from journal import Journal

SCRIPT = """
import json, os, signal, sys
from kernel_ext import session, step, tool

journal, ledger_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
ledger = open(ledger_path, "a")

@tool(idempotent=True)
def work(step_name: str, n: int) -> dict:
    ledger.write(json.dumps([step_name, n]) + "\\n")
    ledger.flush()
    return {"step": step_name, "n": n, "pad": "x" * 300}

@tool
def charge(amount: int) -> str:
    if mode == "kill-in-charge":
        os.kill(os.getpid(), signal.SIGKILL)
    ledger.write(json.dumps(["charge", amount]) + "\\n")
    ledger.flush()
    return f"charged {amount}"

session("packs", journal=journal)
report = {}
for name in ("a", "b", "c"):
    with step(name, rerun=(mode == "rerun" and name == "b")) as active:
        for n in range(6):
            work(name, n)
            if mode == "kill" and name == "b" and n == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # the call has returned: it is journaled
    report[name] = [active.live, active.replayed, "duckdb" in sys.modules]
if mode in ("charge", "kill-in-charge"):
    with step("pay") as active:
        report["pay"] = charge(120)
report["duckdb"] = "duckdb" in sys.modules
print("REPORT", json.dumps(report), flush=True)
if mode == "hold":
    sys.stdin.readline()  # keeps driving the session until the test lets it go
"""


def _run(tmp_path: Path, mode: str, *, wait: bool = True) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    args = [sys.executable, "-c", SCRIPT, str(tmp_path / "j.duckdb"), str(tmp_path / "ledger"), mode]
    if not wait:
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path)
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def _report(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.split("REPORT ", 1)[1])


def _ledger(tmp_path: Path) -> list[list]:
    path = tmp_path / "ledger"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _runs(tmp_path: Path) -> list[tuple[str, str, int, int, int]]:
    with Journal(tmp_path / "j.duckdb").open() as store:
        return store.con.execute("SELECT step, status, epoch, calls_live, calls_replayed FROM step_runs "
                                 "WHERE session = 'packs' ORDER BY step, id").fetchall()


def _calls(tmp_path: Path, step: str) -> list[tuple[int, int, str]]:
    with Journal(tmp_path / "j.duckdb").open() as store:
        return store.con.execute("SELECT epoch, seq, status FROM call_rows WHERE session = 'packs' AND step = ? "
                                 "ORDER BY epoch, seq", [step]).fetchall()


def test_a_replayed_script_never_imports_duckdb_and_its_runs_are_journaled(tmp_path):
    first = _report(_run(tmp_path, "record"))
    assert first["duckdb"] is True  # recording opens DuckDB: the steps are new
    assert [first[name] for name in "abc"] == [[6, 0, True]] * 3
    again = _report(_run(tmp_path, "record"))
    assert again["duckdb"] is False, "every step should begin from its pack"
    assert [again[name] for name in "abc"] == [[0, 6, False]] * 3
    assert len(_ledger(tmp_path)) == 18, "no tool ran again"
    # The runs begun without DuckDB reached it through the log, as runs like any other.
    assert _runs(tmp_path) == [run for name in "abc" for run in [(name, "completed", 1, 6, 0),
                                                                 (name, "completed", 1, 0, 6)]]
    third = _report(_run(tmp_path, "record"))
    assert third["duckdb"] is False and [third[name] for name in "abc"] == [[0, 6, False]] * 3


def test_a_kill_during_recording_resumes_from_the_pack_and_the_killed_run_s_log(tmp_path):
    killed = _run(tmp_path, "kill")  # the first run ever; it dies in step b, whose calls are only in its log
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _report(_run(tmp_path, "record"))
    # a and b begin from the packs their killed runs wrote and that run's log; c is new.
    assert [resumed[name] for name in "abc"] == [[0, 6, False], [2, 4, False], [6, 0, True]]
    assert [entry for entry in _ledger(tmp_path) if entry[0] == "b"] == [["b", n] for n in range(6)]
    runs = _runs(tmp_path)
    assert [status for step, status, *_ in runs if step == "b"] == ["interrupted", "completed"]
    assert _calls(tmp_path, "b") == [(1, seq, "completed") for seq in range(1, 7)], "every call once"


def test_a_run_killed_while_replaying_resumes_with_nothing_run_twice(tmp_path):
    _report(_run(tmp_path, "record"))
    killed = _run(tmp_path, "kill")  # replays a from its pack, dies in b
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _report(_run(tmp_path, "record"))
    # The packs the killed run used are spent: a and b begin through DuckDB once, c still from its pack.
    assert [resumed[name][:2] for name in "abc"] == [[0, 6]] * 3
    assert len(_ledger(tmp_path)) == 18, "nothing ran again"
    assert [status for step, status, *_ in _runs(tmp_path) if step == "b"] == ["completed", "interrupted",
                                                                               "completed"]
    assert _calls(tmp_path, "b") == [(1, seq, "completed") for seq in range(1, 7)]
    assert _report(_run(tmp_path, "record"))["duckdb"] is False, "packed again at exit"


def test_a_settled_call_reaches_the_next_run_through_a_fresh_pack(tmp_path):
    killed = _run(tmp_path, "kill-in-charge")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    in_doubt = _run(tmp_path, "charge")  # the charge may have happened: it fails closed
    assert in_doubt.returncode != 0 and "InDoubtError" in in_doubt.stderr, in_doubt.stderr
    with Journal(tmp_path / "j.duckdb").open() as store:
        (call_id,) = store.con.execute("SELECT id FROM call_rows WHERE name = 'charge'").fetchone()
    settled = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "settle", "packs", str(call_id),
                              "--retry", "--journal", str(tmp_path / "j.duckdb")],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert settled.returncode == 0, settled.stderr
    paid = _report(_run(tmp_path, "charge"))
    assert paid["pay"] == "charged 120"  # a pack from before the settlement would fail in doubt again
    assert _ledger(tmp_path).count(["charge", 120]) == 1


def test_a_rerun_step_replays_its_new_recording_next_time(tmp_path):
    _report(_run(tmp_path, "record"))
    rerun = _report(_run(tmp_path, "rerun"))
    assert rerun["b"][:2] == [6, 0] and rerun["a"] == [0, 6, False]
    after = _report(_run(tmp_path, "record"))
    assert after["b"] == [0, 6, False] and after["duckdb"] is False
    assert [status for _, status in {(e, s) for e, _, s in _calls(tmp_path, "b")}] == ["completed"] * 2
    assert {epoch for epoch, _, _ in _calls(tmp_path, "b")} == {1, 2}


def test_a_forgotten_step_does_not_begin_from_the_pack_of_its_old_recording(tmp_path):
    _report(_run(tmp_path, "record"))  # every step is packed for its next run
    with Journal(tmp_path / "j.duckdb").open() as store:
        store.forget_step("packs", "b")
    after = _report(_run(tmp_path, "record"))
    assert after["b"][:2] == [6, 0], "b runs live: its pack held what was forgotten"
    assert after["a"] == [0, 6, False] and after["c"][:2] == [0, 6]


def test_a_second_driver_is_refused_by_name_while_the_first_replays_from_packs(tmp_path):
    _report(_run(tmp_path, "record"))
    holder = _run(tmp_path, "hold", wait=False)
    try:
        line = holder.stdout.readline()
        assert json.loads(line.split("REPORT ", 1)[1])["duckdb"] is False, line
        second = _run(tmp_path, "record")
        assert second.returncode != 0
        assert "SessionHeldError" in second.stderr and f"pid {holder.pid}" in second.stderr, second.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=120)
    assert _report(_run(tmp_path, "record"))["a"] == [0, 6, False]
    assert os.path.exists(tmp_path / "j.duckdb")


def test_packs_of_a_journal_file_that_was_replaced_are_not_read(tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir(), other.mkdir()
    _report(_run(mine, "record"))  # every step packed, 6 calls each
    assert _run(other, "kill").returncode == -signal.SIGKILL  # b cut off after 4 calls
    listed = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "ls", "--journal", str(other / "j.duckdb")],
                            capture_output=True, text=True, timeout=120, cwd=other)
    assert listed.returncode == 0, listed.stderr  # the killed run's log is now in its journal file
    os.replace(other / "j.duckdb", mine / "j.duckdb")  # another file at the same path
    again = _report(_run(mine, "record"))
    # Replayed from the file that is there now, not from the packs of the one that was.
    assert [again[name][:2] for name in "abc"] == [[0, 6], [2, 4], [6, 0]]
