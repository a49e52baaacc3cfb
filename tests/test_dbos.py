"""From notebook to many machines: a session recorded in a real kernel, exported with
`durable export --engine dbos`, run as DBOS workflows on a real Postgres (a throwaway cluster)
by real worker processes against the scripted model server on loopback: the notebook's calls
replayed, 12 queued sessions on 3 workers with one SIGKILLed mid-call, an approval decided by
`durable approve` while its workflow waits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_ext.scripted.server import ScriptedModelServer
from tests.conftest import API_KEY
from tests.harness import BOOK_HOTEL, Kernel
from tests.postgres import PostgresCluster

SETUP = '''import json, os
from openai import OpenAI
from kernel_ext import approve, now, run_tool_calls, tool

client = OpenAI(max_retries=0)
LEDGER = os.environ["LEDGER"]
CITY = "Lisbon"
TURNS = 4

''' + BOOK_HOTEL

PLAN = '''%%durable plan
messages = [{"role": "user", "content": f"Plan a 3-day trip to {CITY}. Book a hotel for every night."}]
for turn in range(TURNS):
    reply = client.chat.completions.create(model="m", messages=messages, tools=[book_hotel.schema])
    message = reply.choices[0].message
    messages.append(message)
    if message.tool_calls:
        messages += run_tool_calls(message, [book_hotel])
    else:
        messages.append({"role": "user", "content": f"Go on with part {turn}"})
'''

SUMMARY = '''%%durable summary
stamp = now().isoformat()
final = client.chat.completions.create(model="m", messages=messages + [{"role": "user", "content": "Summarise."}])
answer = final.choices[0].message.content
'''

GATE = '''%%durable gate
decision = approve(f"Book the final night in {CITY}?", key="final-night")
booked = book_hotel(CITY, 9) if decision.approved else None
verdict = "approved" if decision.approved else "rejected"
'''

DOUBT_SETUP = '''import time


@tool
def charge(amount: int, idempotency_key: str) -> str:
    """Charge a card (not idempotent); waits for RELEASE to exist before it returns."""
    with open(LEDGER, "a") as f:
        f.write(json.dumps({"key": idempotency_key, "amount": amount}) + "\\n")
    while not os.path.exists(os.environ["RELEASE"]):
        time.sleep(0.05)
    return "charged"
'''

PAY = '''%%durable pay
receipt = charge(42)
'''

CALLS_PER_SESSION = 4  # model calls of the plan step (TURNS)
MODEL_CALLS = CALLS_PER_SESSION + 1  # and the summary's


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


def _env(work: Path, server: ScriptedModelServer, **extra: str) -> dict[str, str]:
    return {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": API_KEY,
            "DURABLE_JOURNAL": str(work / "journal.duckdb"), "LEDGER": str(work / "ledger.jsonl"), **extra}


def _record(work: Path, server: ScriptedModelServer, session: str, cells: list[str],
            env: dict[str, str] | None = None) -> Kernel:
    kernel = Kernel(env or _env(work, server), work)
    for cell in ["%load_ext kernel_ext", f"%durable session {session}", SETUP]:
        kernel.ok(cell, timeout=120)
    for cell in cells:
        kernel.execute(cell, timeout=120)
    return kernel


def _app(work: Path, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(work / "app.py"), *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _durable(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120)


class Workers:
    """`python app.py --workers N`: the supervisor and the pids of its workers, as it prints them."""

    def __init__(self, work: Path, env: dict[str, str], count: int) -> None:
        self.log = work / f"workers-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen([sys.executable, str(work / "app.py"), "--workers", str(count)], cwd=work,
                                        env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def pids(self) -> dict[str, int]:
        found = {}
        for line in self.log.read_text().splitlines():
            name, sep, pid = line.partition(": pid ")
            if sep:
                found[name] = int(pid)
        return found

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _dbos_rows(url: str, session: str) -> list[dict[str, Any]]:
    from kernel_ext.engines.dbos.history import _client, session_rows

    client = _client(url)
    try:
        return session_rows(client, session)
    finally:
        client.destroy()


def _executor(url: str, session: str) -> str | None:
    from kernel_ext.engines.dbos.history import _client

    client = _client(url)
    try:
        found = client.list_workflows(workflow_ids=[session], load_input=False, load_output=False)
        return found[0].executor_id if found and found[0].status == "PENDING" else None
    finally:
        client.destroy()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, server: ScriptedModelServer) -> dict[str, Any]:
    """Session `trip` recorded in a real kernel: `plan` completed, `summary` failed on a model error
    (so its call is not recorded), exported with --engine dbos; then the notebook re-runs `summary`
    and gives its answer."""
    work = tmp_path_factory.mktemp("dbos-app")
    server.reset()
    kernel = _record(work, server, "trip", [PLAN])
    try:
        server.configure(fail_next=[400])
        status, outputs = kernel.execute(SUMMARY, timeout=120)
        assert status == "error" and "BadRequestError" in json.dumps(outputs)
        kernel.ok(f"%durable export {work / 'app.py'} --engine dbos", timeout=120)
        notebook_requests = server.stats()["requests"]
        kernel.ok(SUMMARY, timeout=120)
        answer, stamp = kernel.ok("print(answer); print(stamp)")[0]["text"].strip().splitlines()
    finally:
        kernel.shutdown()
    assert notebook_requests == CALLS_PER_SESSION + 1  # the plan's calls and the failed summary
    return {"work": work, "answer": answer, "stamp": stamp}


@pytest.mark.slow
def test_notebook_session_goes_on_on_postgres(recorded: dict[str, Any], server: ScriptedModelServer,
                                              cluster: PostgresCluster) -> None:
    work = recorded["work"]
    app = (work / "app.py").read_text()
    assert API_KEY not in app and API_KEY.encode() not in (work / "app.recording").read_bytes()
    url = cluster.url("notebook")
    env = _env(work, server, DBOS_SYSTEM_DATABASE_URL=url)
    before = server.stats()["requests"]
    run = _app(work, env, "run")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    # The plan's 4 model calls and 2 bookings replay from the notebook's recording; the summary goes live.
    assert server.stats()["requests"] - before == 1
    assert result == {"session": "trip", "result": {"answer": recorded["answer"], "stamp": recorded["stamp"]}}
    assert len((work / "ledger.jsonl").read_text().splitlines()) == 2  # the notebook's bookings, none again

    shown = _durable(env, "show", "trip", "--dbos", url)
    assert shown.returncode == 0, shown.stderr
    assert "step 'plan': completed, 0 live, 6 replayed" in shown.stdout  # 4 model calls, 2 bookings
    assert "step 'summary': completed, 1 live, 1 replayed" in shown.stdout  # now() replayed, the call live
    listed = _durable(env, "ls", "--dbos")
    assert "trip" in listed.stdout and "completed" in listed.stdout
    rows = json.dumps(_dbos_rows(url, "trip"), default=repr)
    assert API_KEY not in rows

    again = _app(work, env, "run")  # the workflow has ended: DBOS hands back its result, nothing is sent
    assert json.loads(again.stdout.strip().splitlines()[-1]) == result
    assert server.stats()["requests"] - before == 1


@pytest.mark.slow
def test_twelve_sessions_on_three_workers_one_killed_mid_call(recorded: dict[str, Any], server: ScriptedModelServer,
                                                              cluster: PostgresCluster) -> None:
    work = recorded["work"]
    url = cluster.url("fleet")
    env = _env(work, server, DBOS_SYSTEM_DATABASE_URL=url, LEDGER=str(work / "fleet-ledger.jsonl"))
    sessions = {f"trip-{n:02}": f"City{n:02}" for n in range(1, 13)}
    server.reset()
    server.configure(delay=0.05, hold_request=20)  # request 20 waits until the test lets it go
    workers = Workers(work, env, 3)
    try:
        for session, city in sessions.items():
            queued = _app(work, env, "enqueue", session, "--input", f"CITY={city}")
            assert queued.returncode == 0, queued.stderr
        held = server.wait_for_held(timeout=240)
        body = next(r["body"] for r in server.requests() if r["n"] == held)
        victim = next(s for s, city in sessions.items() if f"trip to {city}." in body["messages"][0]["content"])
        executor = _executor(url, victim)
        assert executor is not None, f"{victim} made request {held} but is not running"
        pid = workers.pids()[executor]
        os.kill(pid, signal.SIGKILL)
        server.release()
        waited = _app(work, env, "wait", *sessions, timeout=600)
        assert waited.returncode == 0, waited.stderr + workers.text()
        results = [json.loads(line) for line in waited.stdout.splitlines()]
        assert sorted(r["session"] for r in results) == sorted(sessions)
        assert all(r["result"]["answer"].startswith("[scripted]") for r in results)
        assert f"{executor} (pid {pid}) ended, killed by signal 9" in workers.text()
    finally:
        workers.stop()
    rows = [row for session in sessions for row in _dbos_rows(url, session)]
    tools = [r for r in rows if r.get("kind") == "tool" and "finish" not in r]
    models = [r for r in rows if r.get("kind") == "llm"]
    assert len(models) == len(sessions) * MODEL_CALLS
    ledger = [json.loads(line) for line in (work / "fleet-ledger.jsonl").read_text().splitlines()]
    # Every booking once: one ledger line per journaled tool call, no idempotency key twice.
    assert len(ledger) == len(tools) == len(sessions) * 2
    assert len({entry["key"] for entry in ledger}) == len(ledger)
    # Every model call was sent once, and the one in flight at the kill once more.
    assert server.stats()["requests"] == len(models) + 1


@pytest.mark.slow
def test_approval_waits_in_the_workflow_and_durable_approve_decides_it(
        tmp_path: Path, server: ScriptedModelServer, cluster: PostgresCluster) -> None:
    env = _env(tmp_path, server, DURABLE_HEADLESS="1")
    kernel = _record(tmp_path, server, "gate", [GATE], env)  # headless: the notebook suspends at the approval
    try:
        kernel.ok(f"%durable export {tmp_path / 'app.py'} --engine dbos", timeout=120)
    finally:
        kernel.shutdown()
    url = cluster.url("gate")
    env = _env(tmp_path, server, DBOS_SYSTEM_DATABASE_URL=url)
    workers = Workers(tmp_path, env, 2)
    try:
        assert _app(tmp_path, env, "enqueue", "gate").returncode == 0
        pending = _wait_for(lambda: _waiting(url, "gate"))
        executor = _executor(url, "gate")
        # Waiting is not polling: over 15 looks 0.2 s apart, the waiting worker uses a fraction of a core.
        used = _cpu_seconds(workers.pids()[executor])
        for _ in range(15):
            time.sleep(0.2)
        assert _cpu_seconds(workers.pids()[executor]) - used < 1.0
        listed = _durable(env, "ls", "--dbos", url)
        assert "waiting" in listed.stdout and "final-night" in listed.stdout
        # Waiting is a DBOS message wait: kill the worker that waits, and the workflow waits again elsewhere.
        os.kill(workers.pids()[executor], signal.SIGKILL)
        _wait_for(lambda: f"{executor} (pid" in workers.text() and _executor(url, "gate") is not None)
        wrong = _durable(env, "approve", "gate", "no-such-key", "--dbos", url)
        assert wrong.returncode == 1 and "pending: final-night" in wrong.stderr
        decided = _durable(env, "approve", "gate", "final-night", "--comment", "ok", "--dbos", url)
        assert decided.returncode == 0, decided.stderr
        waited = _app(tmp_path, env, "wait", "gate")
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["result"]["verdict"] == "approved"
        assert pending == ["final-night"]
    finally:
        workers.stop()
    ledger = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1  # booked once, after the approval
    rows = _dbos_rows(url, "gate")
    decisions = [r for r in rows if r.get("meta", {}).get("body") == "decision"]
    assert len(decisions) == 1 and decisions[0]["meta"]["decision"]["comment"] == "ok"


@pytest.mark.slow
def test_sqlite_without_postgres_and_usage_errors(recorded: dict[str, Any], server: ScriptedModelServer) -> None:
    work = recorded["work"]
    env = _env(work, server)
    env.pop("DBOS_SYSTEM_DATABASE_URL", None)
    before = server.stats()["requests"]
    run = _app(work, env, "run")  # DBOS's SQLite default, beside the app: one process on one machine
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["result"]["answer"] == recorded["answer"]
    assert server.stats()["requests"] - before == 1 and (work / "app.sqlite").exists()

    bad = _app(work, env, "run", "--input", "not a name=1")
    assert bad.returncode != 0 and "--input takes NAME=VALUE" in bad.stderr
    nothing = _app(work, env)
    assert nothing.returncode == 2 and "name a command" in nothing.stderr
    no_url = _durable(env, "ls", "--dbos")
    assert no_url.returncode == 1 and no_url.stderr.count("\n") == 1 and "--dbos needs a URL" in no_url.stderr


@pytest.mark.slow
def test_a_tool_in_doubt_after_a_kill_stays_in_doubt(tmp_path: Path, server: ScriptedModelServer,
                                                      cluster: PostgresCluster) -> None:
    """Killed inside a tool that is not idempotent, in the notebook and then on DBOS: the call is
    in doubt in both places, the session stops with InDoubtError, and the card is charged once each."""
    ledger = tmp_path / "ledger.jsonl"
    env = _env(tmp_path, server, RELEASE=str(tmp_path / "never"))
    kernel = _record(tmp_path, server, "pay", [DOUBT_SETUP], env)
    kernel.kc.execute(PAY)  # not waited for: it stays inside the tool
    _wait_for(lambda: ledger.exists() and len(ledger.read_text().splitlines()) == 1)
    kernel.kill()
    exported = _durable(env, "export", "pay", "--engine", "dbos", "-o", str(tmp_path / "app.py"))
    assert exported.returncode == 0, exported.stderr
    env = {**env, "DBOS_SYSTEM_DATABASE_URL": cluster.url("doubt")}
    notebook = _app(tmp_path, env, "run")  # the notebook's own session: its call in doubt travelled along
    assert notebook.returncode == 1 and "InDoubtError" in notebook.stderr, notebook.stderr

    first = subprocess.Popen([sys.executable, str(tmp_path / "app.py"), "run", "--session", "pay-2"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: len(ledger.read_text().splitlines()) == 2)  # inside the tool: the card is charged
    first.kill()
    first.wait()
    again = _app(tmp_path, env, "run", "--session", "pay-2")
    assert again.returncode == 1
    assert "InDoubtError" in again.stderr and "charge" in again.stderr
    key = json.loads(ledger.read_text().splitlines()[-1])["key"]
    assert key in again.stderr  # the error names the call's idempotency key, for the payment provider
    assert len(ledger.read_text().splitlines()) == 2  # not charged again, in either session
    shown = _durable(env, "show", "pay-2", "--dbos")
    assert "charge" in shown.stdout and "started" in shown.stdout and "failed" in shown.stdout


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _waiting(url: str, session: str) -> list[str] | None:
    from kernel_ext.engines.dbos.history import _client, _summary, session_rows

    client = _client(url)
    try:
        found = client.list_workflows(workflow_ids=[session], load_input=False, load_output=False)
        if not found:
            return None
        summary = _summary(found[0], session_rows(client, session))
    finally:
        client.destroy()
    return summary["pending_approvals"] if summary["status"] == "waiting" else None


def _wait_for(condition: Any, attempts: int = 600) -> Any:
    """Poll a condition (bounded by count, not by a clock assert)."""
    for _ in range(attempts):
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the condition never held")


THREADED = '''%%durable fan
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(2) as pool:
    nights = list(pool.map(lambda day: book_hotel(CITY, day), [1, 2]))
'''


@pytest.mark.slow
def test_calls_from_a_step_s_threads_are_refused_on_dbos_in_one_line(tmp_path: Path,
                                                                     server: ScriptedModelServer) -> None:
    env = _env(tmp_path, server)
    kernel = _record(tmp_path, server, "fan", [], env)
    kernel.ok(THREADED, timeout=120)  # in the notebook the threads' calls are journaled
    kernel.shutdown()
    exported = _durable(env, "export", "fan", "--engine", "dbos", "-o", str(tmp_path / "app.py"))
    assert exported.returncode == 0, exported.stderr
    env.pop("DBOS_SYSTEM_DATABASE_URL", None)
    ran = _app(tmp_path, env, "run", "--session", "fan-2")  # not the notebook's session: its calls go live
    assert ran.returncode == 1
    assert "a call from a thread the step started cannot be a DBOS step" in ran.stderr, ran.stderr
    assert len((tmp_path / "ledger.jsonl").read_text().splitlines()) == 2, "no booking made by the refused calls"
