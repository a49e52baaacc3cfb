"""@tool semantics in a plain Python process: replay, recorded failures, retries, timeouts, in-doubt calls."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace

import pytest

import kernel_ext
from kernel_ext import ToolTimeoutError, run_tool_calls, settle, step, tool


@pytest.fixture
def journal_path(tmp_path):
    kernel_ext.session("tools", journal=tmp_path / "j.duckdb")
    return tmp_path / "j.duckdb"


def test_completed_calls_replay_without_running_again(journal_path):
    runs = []

    @tool
    def charge(amount: int, idempotency_key: str) -> dict:
        runs.append(idempotency_key)
        return {"charged": amount}

    for _ in range(3):
        with step("pay"):
            assert charge(5) == {"charged": 5}
            assert charge(5) == {"charged": 5}  # an identical second call is a call of its own
    assert len(runs) == 2 and len(set(runs)) == 2 and all(k.startswith("dk-") for k in runs)
    assert charge(1) == {"charged": 1} and len(runs) == 3  # outside a step: a plain call


def test_a_failure_replays_as_the_same_exception(journal_path):
    runs = []

    @tool
    def lookup(key: str):
        runs.append(key)
        raise KeyError(f"no record {key}")

    for _ in range(2):
        with step("s"), pytest.raises(KeyError, match="no record a"):
            lookup("a")
    assert runs == ["a"]


def test_retries_with_backoff_and_attempts_journaled(journal_path):
    attempts = []

    @tool(retries=3, backoff=0.001, retry_on=ConnectionError)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("reset")
        return "ok"

    with step("r"):
        assert flaky() == "ok"
    with kernel_ext.current_session().journal.open() as store:
        assert store.con.execute("SELECT status, attempts FROM calls").fetchall() == [("completed", 3)]

    @tool(retries=5, backoff=0.001, retry_on=ConnectionError)
    def wrong() -> None:
        attempts.append(1)
        raise ValueError("not retryable")

    before = len(attempts)
    with step("r2"), pytest.raises(ValueError):
        wrong()
    assert len(attempts) == before + 1


def test_timeouts_sync_and_async(journal_path):
    # The tools would finish only when told to (or after a minute): only the timeout can stop them first.
    finish = threading.Event()

    @tool(timeout=0.2)
    def slow() -> None:
        finish.wait(60)

    @tool(timeout=0.2)
    async def aslow() -> None:
        await asyncio.sleep(60)

    try:
        with step("t"):
            with pytest.raises(ToolTimeoutError, match="did not finish within 0.2 s"):
                slow()
            with pytest.raises(ToolTimeoutError):
                asyncio.run(aslow())
    finally:
        finish.set()  # a sync tool that timed out keeps running in its thread: let it end


def test_async_tools_replay(journal_path):
    runs = []

    @tool
    async def fetch(n: int) -> int:
        runs.append(n)
        return n * 10

    async def body():
        return [await fetch(i) for i in range(3)]

    for _ in range(2):
        with step("a"):
            assert asyncio.run(body()) == [0, 10, 20]
    assert runs == [0, 1, 2]


def test_values_replay(journal_path):
    seen = []
    for _ in range(2):
        with step("v"):
            seen.append((kernel_ext.now(), kernel_ext.uuid(), kernel_ext.random()))
    assert seen[0] == seen[1] and seen[0][0].tzinfo is not None


def test_run_tool_calls_reports_errors_to_the_model(journal_path):
    @tool
    def weather(city: str, day: int = 1) -> dict:
        """Forecast.

        Args:
            city: where.
        """
        return {"city": city, "day": day}

    message = SimpleNamespace(tool_calls=[
        SimpleNamespace(id="c1", function=SimpleNamespace(name="weather", arguments='{"city": "Lisbon"}')),
        SimpleNamespace(id="c2", function=SimpleNamespace(name="nope", arguments="{}")),
        SimpleNamespace(id="c3", function=SimpleNamespace(name="weather", arguments='{"town": "x"}')),
    ])
    with step("tc"):
        replies = run_tool_calls(message, [weather])
    assert replies[0] == {"role": "tool", "tool_call_id": "c1", "content": '{"city": "Lisbon", "day": 1}'}
    assert "unknown tool 'nope'" in replies[1]["content"]
    assert replies[2]["content"].startswith("error: ToolArgumentError")
    assert weather.schema["function"]["parameters"]["required"] == ["city"]


DIES_INSIDE = """
import os, signal, sys
import kernel_ext
from kernel_ext import step, tool
kernel_ext.session("tools", journal=sys.argv[1])

@tool(idempotent=sys.argv[2] == "idempotent")
def send_mail(to: str, idempotency_key: str) -> str:
    with open(sys.argv[3], "a") as f:
        f.write(idempotency_key + "\\n")
    if sys.argv[4] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return "sent to " + to

with step("mail"):
    print(send_mail("ana"))
"""


def _run(path, mode, ledger, die):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(DIES_INSIDE), str(path), mode, str(ledger), die],
                          capture_output=True, text=True, timeout=60)


def test_a_call_in_doubt_stops_until_settled(tmp_path):
    journal, ledger = tmp_path / "j.duckdb", tmp_path / "ledger"
    assert _run(journal, "once", ledger, "die").returncode == -signal.SIGKILL
    again = _run(journal, "once", ledger, "live")
    assert again.returncode == 1 and "InDoubtError" in again.stderr and "%durable settle" in again.stderr
    assert len(ledger.read_text().splitlines()) == 1  # not run blindly a second time
    call_id = int(again.stderr.split("%durable settle ")[1].split()[0])
    kernel_ext.session("tools", journal=journal)
    assert "settled as done" in settle(call_id, value="sent to ana")
    done = _run(journal, "once", ledger, "live")
    assert done.returncode == 0 and done.stdout.strip() == "sent to ana"
    assert len(ledger.read_text().splitlines()) == 1


def test_settle_retry_lets_the_call_run_again(tmp_path):
    journal, ledger = tmp_path / "j.duckdb", tmp_path / "ledger"
    _run(journal, "once", ledger, "die")
    ledger.write_text("")  # the mail never left
    call_id = int(_run(journal, "once", ledger, "live").stderr.split("%durable settle ")[1].split()[0])
    kernel_ext.session("tools", journal=journal)
    assert "will run again" in settle(call_id, retry=True)
    with pytest.raises(kernel_ext.StepError, match="not in doubt"):
        settle(call_id, retry=True)
    done = _run(journal, "once", ledger, "live")
    assert done.returncode == 0 and len(ledger.read_text().splitlines()) == 1


def test_an_idempotent_tool_in_doubt_runs_again_with_the_same_key(tmp_path):
    journal, ledger = tmp_path / "j.duckdb", tmp_path / "ledger"
    _run(journal, "idempotent", ledger, "die")
    done = _run(journal, "idempotent", ledger, "live")
    assert done.returncode == 0, done.stderr
    keys = ledger.read_text().splitlines()
    assert len(keys) == 2 and keys[0] == keys[1]  # the provider sees one key twice and can deduplicate


def test_an_in_doubt_call_of_a_script_is_settled_from_the_terminal(tmp_path):
    journal, ledger = tmp_path / "j.duckdb", tmp_path / "ledger"
    _run(journal, "once", ledger, "die")
    stopped = _run(journal, "once", ledger, "live")
    assert "durable settle tools " in stopped.stderr
    call_id = stopped.stderr.split("durable settle tools ")[1].split()[0]
    settle_cli = [sys.executable, "-m", "kernel_ext.cli.main", "settle", "tools", call_id, "--journal", str(journal)]
    bad = subprocess.run([*settle_cli, "--value", "sent"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--value takes JSON" in bad.stderr
    done = subprocess.run([*settle_cli, "--value", '"sent to ana"'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "settled as done" in done.stdout, done.stderr
    again = _run(journal, "once", ledger, "live")
    assert again.returncode == 0 and again.stdout.strip() == "sent to ana"
    assert len(ledger.read_text().splitlines()) == 1
