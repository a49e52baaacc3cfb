"""Durable sleep: the wake-up time is journaled the first time, and no kill or restart moves it.

Times are asserted against the recorded wake-up time and the sleep's own length, never against a fixed
limit on the test: a step that restarted its wait would wake at least a whole sleep after its restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from journal import Journal
from tests.harness import Kernel, summaries

SETUP = "%load_ext kernel_ext\nfrom datetime import datetime, timezone\nfrom kernel_ext import sleep\n"
NAP = """%%durable nap
print("sleeping", datetime.now(timezone.utc).isoformat(), flush=True)
{call}
print("woke", datetime.now(timezone.utc).isoformat())
"""
LENGTH = 20  # seconds of the sleep


def _printed(outputs: list[dict], word: str) -> datetime:
    line = next(line for o in outputs for line in o.get("text", "").splitlines() if line.startswith(word + " "))
    return datetime.fromisoformat(line.split(" ", 1)[1])


def _wake_at(journal) -> datetime:
    with Journal(journal).open() as store:
        (meta,) = store.con.execute("SELECT meta FROM call_rows WHERE kind = 'value' AND name = 'sleep'").fetchone()
    return datetime.fromisoformat(json.loads(meta)["wake_at"])


@pytest.mark.slow
@pytest.mark.parametrize("call", [f"sleep({LENGTH})", f"await sleep({LENGTH})"])
def test_a_sleep_killed_midway_wakes_at_its_recorded_time(call, kernel: Kernel, tmp_path):
    kernel.ok(SETUP)
    cell = NAP.format(call=call)
    kernel.kc.execute(cell)
    while True:  # the wake-up time is journaled before the wait begins
        message = kernel.kc.get_iopub_msg(timeout=60)
        if message["msg_type"] == "stream" and "sleeping" in message["content"]["text"]:
            break
    time.sleep(3)
    kernel.kill()
    kernel.start()
    kernel.ok(SETUP)
    outputs = kernel.ok(cell, timeout=LENGTH * 4)
    wake_at, woke = _wake_at(tmp_path / "journal.duckdb"), _printed(outputs, "woke")
    assert woke >= wake_at  # never early
    # Times taken inside the cell, around the sleep: a new wait of the whole length after the restart would
    # take LENGTH; resuming takes what was left, less than LENGTH by at least the time before the kill.
    assert (woke - _printed(outputs, "sleeping")).total_seconds() < LENGTH
    assert summaries(outputs)[0]["replayed"] == 1

    # Once the wake-up time has passed, a replay does not sleep at all.
    again = kernel.ok(cell)
    assert (_printed(again, "woke") - _printed(again, "sleeping")).total_seconds() < LENGTH


@pytest.mark.slow
def test_a_headless_run_suspends_on_a_long_sleep_and_keeps_its_wake_up_time(tmp_path, kernel_env):
    notebook = tmp_path / "nap.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(SETUP), new_code_cell(NAP.format(call="sleep(3600)"))]),
                   notebook)
    journal = tmp_path / "journal.duckdb"

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "run", str(notebook), "--journal",
                               str(journal)], capture_output=True, text=True, env=kernel_env, cwd=tmp_path,
                              timeout=300)

    first = run()
    assert first.returncode == 3, first.stdout + first.stderr
    assert "suspended (sleeping)" in first.stdout and f"durable run {notebook}" in first.stdout
    wake_at = _wake_at(journal)
    shown = wake_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"sleeps until {shown}" in first.stdout
    second = run()  # too early: suspended again, with the same time
    assert second.returncode == 3 and f"sleeps until {shown}" in second.stdout
    assert _wake_at(journal) == wake_at
    shown_step = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "show", "nap", "--journal",
                                 str(journal)], capture_output=True, text=True, env=kernel_env, timeout=120)
    assert f"suspended · 1 call · sleeping until {shown}" in shown_step.stdout, shown_step.stdout
    listed = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "ls", "--journal", str(journal)],
                            capture_output=True, text=True, env=kernel_env, timeout=120)
    assert f"(sleeping until {wake_at:%Y-%m-%d %H:%M} UTC)" in listed.stdout, listed.stdout


@pytest.mark.slow
def test_an_exported_script_suspends_on_a_long_sleep_and_keeps_its_wake_up_time(kernel: Kernel, tmp_path,
                                                                                  kernel_env):
    kernel.ok(SETUP + "import os\n%durable session nap")
    kernel.ok(NAP.format(call='sleep(float(os.environ.get("NAP_SECONDS", "0.1")))'))
    kernel.ok(f"%durable export {tmp_path / 'nap.py'}")
    env = {**kernel_env, "NAP_SECONDS": "3600", "DURABLE_MAX_WAIT": "1"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(tmp_path / "nap.py"), "--session", "nap-2"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    first = run()
    assert first.returncode == 3, first.stdout + first.stderr
    said = first.stdout + first.stderr
    assert "step 'nap' sleeps until" in said and "run the script again" in said
    wake = said[said.index("sleeps until"):].splitlines()[0]
    time.sleep(1.1)  # a wake-up time counted anew would now differ in its seconds
    second = run()  # too early: suspended again, with the same wake-up time
    assert second.returncode == 3 and wake in second.stdout + second.stderr
