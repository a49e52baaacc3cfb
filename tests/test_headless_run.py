"""`durable run` as a process: progress per cell on stderr, a summary read from the journal, and a runner
killed with SIGKILL (with its kernel, or alone) that loses nothing: the next run resumes.

Side effects are counted in a ledger file that a non-idempotent tool appends to; model requests are
counted by the scripted model server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from journal import Journal
from kernel_ext.scripted.server import ScriptedModelServer
from tests.conftest import API_KEY
from tests.harness import NOTEBOOKS

TURNS = 6  # model calls of step 'plan'; every other one asks for the booking tool
CALLS = TURNS + 1  # and one in step 'answer'
HELD = 4  # the model call in flight when the runner is killed: after two bookings, before the third
SETUP = '''import json, os
from openai import OpenAI
from kernel_ext import run_tool_calls, tool

client = OpenAI(max_retries=0)


@tool
def book(city: str, day: int, idempotency_key: str) -> str:
    """Book a hotel room (charges a card: not idempotent).

    Args:
        city: where.
        day: which day of the trip.
    """
    with open(os.environ["LEDGER"], "a") as f:
        f.write(json.dumps({"key": idempotency_key, "city": city, "day": day}) + "\\n")
    return f"booked {city} for day {day}"
'''
PLAN = f'''%%durable plan
messages = [{{"role": "user", "content": "Plan and book a trip"}}]
for turn in range({TURNS}):
    reply = client.chat.completions.create(model="m", messages=messages, tools=[book.schema])
    messages.append(reply.choices[0].message)
    if reply.choices[0].message.tool_calls:
        messages += run_tool_calls(reply.choices[0].message, [book])
    else:
        messages.append({{"role": "user", "content": f"Go on with part {{turn}}"}})
'''
ANSWER = '''%%durable answer
final = client.chat.completions.create(model="m", messages=messages + [{"role": "user", "content": "Summarise"}])
print("ANSWER", final.choices[0].message.content)
'''


def _notebook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trip.ipynb"
    cells = [new_code_cell("%load_ext kernel_ext"), new_code_cell(SETUP), new_code_cell(PLAN), new_code_cell(ANSWER)]
    nbformat.write(new_notebook(cells=cells), path)
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kernel_ext.cli.main", *args]


def _durable(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(*args), capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def _command(notebook: Path, *flags: str) -> list[str]:
    return ["run", str(notebook), "-o", str(notebook.parent / "out.ipynb"), *flags]


def _start(notebook: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen, Path, Path]:
    """A runner whose output goes to files: a kernel that outlives its runner would hold a pipe open."""
    out, err = notebook.parent / f"{name}.out", notebook.parent / f"{name}.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        runner = subprocess.Popen(_cli(*_command(notebook)), stdout=stdout, stderr=stderr, env=env, cwd=notebook.parent)
    return runner, out, err


def _run(notebook: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
    return _durable(_command(notebook, *flags), env, notebook.parent)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a runner's only child is its kernel)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the command name may contain spaces
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has exited; only its parent (now init) can reap it


def _ledger(folder: Path) -> list[str]:
    path = folder / "ledger.jsonl"
    return [json.loads(line)["key"] for line in path.read_text().splitlines()] if path.exists() else []


def _answer(folder: Path) -> str:
    nb = nbformat.read(folder / "out.ipynb", as_version=4)
    texts = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    return next(line for line in texts.splitlines() if line.startswith("ANSWER"))


def _tokens(journal: Path, session: str) -> int:
    with Journal(journal).open() as store:
        calls = [c for step in store.session_calls(session).values() for c in step]
    return sum((c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in calls)


def _env(server: ScriptedModelServer, folder: Path) -> dict[str, str]:
    return dict(os.environ, OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=API_KEY,
                DURABLE_JOURNAL=str(folder / "journal.duckdb"), LEDGER=str(folder / "ledger.jsonl"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[str, list[str]]:
    """The answer and the ledger of a run nobody killed, from a server and journal of its own."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    with ScriptedModelServer() as server:
        done = _run(_notebook(folder), _env(server, folder))
        assert done.returncode == 0, done.stdout + done.stderr
        assert server.stats()["requests"] == CALLS
    return _answer(folder), _ledger(folder)


def _kill_mid_step(server: ScriptedModelServer, notebook: Path, env: dict[str, str], *,
                   with_kernel: bool) -> tuple[int, str]:
    """Start `durable run` and SIGKILL it while model call HELD is in flight (still held).

    Returns its kernel's pid and what the runner wrote to stderr.
    """
    server.configure(hold_request=HELD)
    runner, _, err = _start(notebook, env, "killed")
    try:
        assert server.wait_for_held(timeout=120) == HELD
        (kernel,) = _children(runner.pid)
        os.kill(runner.pid, signal.SIGKILL)
        if with_kernel:
            os.kill(kernel, signal.SIGKILL)
        runner.wait(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    server.configure(hold_request=None)
    return kernel, err.read_text()


def _assert_resumed(code: int, stdout: str, folder: Path, server: ScriptedModelServer,
                    uninterrupted: tuple[str, list[str]]) -> None:
    assert code == 0, stdout
    assert server.stats()["requests"] == CALLS + 1  # only the call in flight was sent twice
    answer, keys = uninterrupted
    assert _answer(folder) == answer
    ledger = _ledger(folder)
    assert len(ledger) == len(set(ledger)), "a booking happened twice"
    assert ledger == keys, "every booking took effect exactly once, as in the uninterrupted run"
    # Replayed: calls 1-3 and both bookings. Live: calls 4-6, the third booking, and the answer.
    assert "session trip: 2 steps completed\n  calls: 5 replayed, 5 live; tokens: " in stdout, stdout


@pytest.mark.slow
def test_sigkill_of_runner_and_kernel_mid_step_loses_nothing(tmp_path, model_server, uninterrupted):
    notebook = _notebook(tmp_path)
    env, journal = _env(model_server, tmp_path), tmp_path / "journal.duckdb"
    _, killed_err = _kill_mid_step(model_server, notebook, env, with_kernel=True)
    model_server.release()
    assert model_server.stats()["requests"] == HELD
    # Progress reaches the log as each cell ends, so a run that dies still shows how far it got.
    assert "[1/4] %load_ext kernel_ext: ok in " in killed_err and "[2/4] import json, os: ok in " in killed_err
    assert "step plan" not in killed_err
    assert len(_ledger(tmp_path)) == 2  # the bookings of turns 0 and 2
    spent_before = _tokens(journal, "trip")

    resumed = _run(notebook, env)
    _assert_resumed(resumed.returncode, resumed.stdout, tmp_path, model_server, uninterrupted)
    assert re.search(r"^\[3/4\] step plan: ok in \d+\.\d s \(\d+\.\d s in all\)$", resumed.stderr, re.M)
    assert re.search(r"^\[4/4\] step answer: ok in ", resumed.stderr, re.M)
    total = _tokens(journal, "trip")
    assert "durable run trip.ipynb: completed after " in resumed.stdout
    assert f"calls: 5 replayed, 5 live; tokens: {total - spent_before:,} spent in this run, {total:,} in the " \
           "session" in resumed.stdout, resumed.stdout

    replayed = _run(notebook, env, "--strict")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "session trip: 2 steps completed, 2 of them replayed entirely" in replayed.stdout
    assert f"calls: 10 replayed, 0 live; tokens: 0 spent in this run, {total:,} in the session" in replayed.stdout
    assert model_server.stats()["requests"] == CALLS + 1
    assert len(_ledger(tmp_path)) == TURNS // 2


@pytest.mark.slow
def test_a_runner_killed_alone_takes_its_kernel_along_and_the_next_run_resumes(tmp_path, model_server,
                                                                                uninterrupted):
    notebook = _notebook(tmp_path)
    env = _env(model_server, tmp_path)
    kernel, _ = _kill_mid_step(model_server, notebook, env, with_kernel=False)
    # At once, while the old kernel may still live: it holds the session and, inside the step, the journal.
    runner, out, _ = _start(notebook, env, "next")
    deadline = time.monotonic() + 120  # a guard; how soon it notices is not what this checks
    while not _gone(kernel) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(kernel), "the kernel outlived its runner"  # nobody killed it: it noticed by itself
    model_server.release()  # only now: the old kernel must not get the answer it waited for
    assert runner.wait(timeout=300) == 0, out.read_text()
    _assert_resumed(runner.returncode, out.read_text(), tmp_path, model_server, uninterrupted)


def test_a_suspended_run_names_the_pending_approval_and_the_command_that_decides_it(tmp_path, kernel_env):
    notebook = tmp_path / "approval_demo.ipynb"
    shutil.copyfile(NOTEBOOKS / "approval_demo.ipynb", notebook)
    session = "shop 42"  # a name with a space: the printed command must still run as printed
    journal = tmp_path / "recordings" / "shop.duckdb"  # not the default one: the command has to name it
    command = ["run", str(notebook), "--session", session, "--journal", str(journal)]
    env = {k: v for k, v in kernel_env.items() if k != "DURABLE_JOURNAL"}

    # stderr on a terminal: the progress bar is redrawn in place instead of printing a line per cell.
    terminal, attached = os.openpty()
    # TERM: a terminal that can redraw a line, whatever the one running the tests is.
    runner = subprocess.Popen(_cli(*command), stdout=subprocess.PIPE, stderr=attached, text=True,
                              env={**env, "TERM": "xterm"}, cwd=tmp_path)
    os.close(attached)
    seen = bytearray()
    reader = threading.Thread(target=_drain, args=(terminal, seen))
    reader.start()
    stdout, _ = runner.communicate(timeout=300)
    reader.join(timeout=60)
    os.close(terminal)
    shown = seen.decode()
    assert runner.returncode == 3, stdout + shown
    # Back to the start of the line and clear it: each picture of the bar replaces the one before.
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert "\r\x1b[2K" in shown and re.search(r"\d+/\d+  step refund \d+:\d\d:\d\d", plain), repr(shown)
    assert not re.search(r"^\[\d+/\d+\]", plain, re.M), "a line per cell instead of a bar redrawn in place"
    assert "\x1b" not in stdout  # the report goes to a pipe: plain text

    assert "suspended (waiting for a decision) after " in stdout
    assert "session shop 42: 1 step completed; 1 suspended (refund)" in stdout
    assert "pending approval refund-ana (step refund): Refund 120 EUR to Ana?" in stdout
    decide = re.search(r"decide: (durable approve .*?) \[--reject\] \[--comment TEXT\]; then run again", stdout)
    assert decide is not None, stdout
    assert decide.group(1) == f"durable approve 'shop 42' refund-ana --journal {journal}"

    # A recording that stops at an undecided approval is no regression test: --strict says why.
    strict = _durable([*command, "--strict"], env, tmp_path)
    assert strict.returncode == 1, strict.stdout
    assert "step 'refund', call 1 (approval refund-ana) would go live: the recording has this request but no " \
           "result (it was still undecided)" in strict.stdout
    assert decide.group(0) in strict.stdout

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    decided = _durable([*shlex.split(decide.group(1))[1:], "--reject"], env, elsewhere)
    assert decided.returncode == 0, decided.stderr

    resumed = _durable(command, env, tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "session shop 42: 2 steps completed, 2 of them replayed entirely" in resumed.stdout
    assert "calls: 3 replayed, 0 live" in resumed.stdout  # the tool, the model call and the decision
    assert "pending approval" not in resumed.stdout


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every process holding the terminal has closed it
            return
        if not chunk:
            return
        into.extend(chunk)
