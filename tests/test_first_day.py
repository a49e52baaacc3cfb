"""What a new user meets on the first day: --version, a mistyped command, a mistyped notebook path, a strict
replay that fails, the session a headless run journals to, a decision for a session that does not exist,
a query that names no view, and looking at a folder that has no journal yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from journal import Journal
from tests.harness import Kernel

SETUP = "%load_ext kernel_ext\nfrom openai import OpenAI\nclient = OpenAI(max_retries=0)"
PLAN = """%%durable plan
reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": PROMPT}])
print(reply.choices[0].message.content)
"""
VIEWS = "(views: sessions, steps, calls, approvals)"


def _durable(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def _no_journal_env() -> dict[str, str]:
    # The default journal: .durable/journal.duckdb in the working directory.
    return {k: v for k, v in os.environ.items() if k not in ("DURABLE_JOURNAL", "DURABLE_SESSION")}


def _record(journal: Path, cwd: Path) -> None:
    """A journal with one session, `trip`, of one completed step, made by a plain script."""
    script = ("import sys\nfrom kernel_ext import session, step, tool\n"
              "@tool\ndef lookup(city: str) -> str:\n    return city.upper()\n"
              "session('trip', journal=sys.argv[1])\nwith step('research'):\n    lookup('Lisbon')\n")
    done = subprocess.run([sys.executable, "-c", script, str(journal)], capture_output=True, text=True,
                          timeout=180, cwd=cwd)
    assert done.returncode == 0, done.stderr


def test_version_prints_the_installed_package_version(tmp_path):
    shown = _durable("--version", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"durable-kernel {version('durable-kernel')}\n"


def test_a_mistyped_command_names_the_closest_one(tmp_path):
    typo = _durable("shwo", "trip", cwd=tmp_path)
    assert typo.returncode == 2 and typo.stdout == ""
    assert typo.stderr.splitlines() == ["durable: unknown command 'shwo'; did you mean `show`? (see durable --help)"]
    unlike = _durable("xyzzy", cwd=tmp_path)
    assert unlike.returncode == 2 and len(unlike.stderr.splitlines()) == 1
    assert "unknown command 'xyzzy'; commands: demo, model, run, approve, ls, show" in unlike.stderr
    # Everything else is argparse's as before: a missing argument of a command that exists.
    missing = _durable("show", cwd=tmp_path)
    assert missing.returncode == 2 and "the following arguments are required: session" in missing.stderr


WRAPPER = """
import json, sys
from kernel_ext.cli.main import main
code = main(sys.argv[1:])
heavy = [m for m in ("nbclient", "nbformat", "jupyter_client", "zmq", "ipykernel", "IPython") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _run_checked(*args: str, cwd: Path) -> tuple[dict, list[str]]:
    """`durable run ARGS` through main(), with what it imported; and its stderr lines."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, "run", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr.splitlines()


def test_run_refuses_a_bad_notebook_path_before_importing_the_kernel_machinery(tmp_path):
    report, err = _run_checked("missing.ipynb", cwd=tmp_path)
    assert report == {"code": 2, "heavy": []}
    assert err == ["durable run: no notebook at missing.ipynb; pass the path of an .ipynb file"]

    (tmp_path / "notes.ipynb").write_text("not json")
    report, err = _run_checked("notes.ipynb", cwd=tmp_path)
    assert report == {"code": 2, "heavy": []} and len(err) == 1 and "notes.ipynb is not a notebook" in err[0]

    report, err = _run_checked(str(tmp_path), cwd=tmp_path)
    assert report == {"code": 2, "heavy": []} and len(err) == 1 and "is a folder" in err[0]

    nbformat.write(new_notebook(cells=[new_code_cell("1")]), tmp_path / "ok.ipynb")
    report, err = _run_checked("ok.ipynb", "-o", "nowhere/out.ipynb", cwd=tmp_path)
    assert report == {"code": 2, "heavy": []}
    assert err == ["durable run: -o nowhere/out.ipynb: there is no folder nowhere; create it first"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.ipynb", "ok.ipynb"]  # and nothing was created


def _error_lines(kernel: Kernel, code: str) -> tuple[str, list[str]]:
    """The error a cell showed: its reply status and the traceback lines the frontend renders."""
    errors: list[list[str]] = []

    def hook(msg: dict) -> None:
        if msg["header"]["msg_type"] == "error":
            errors.append(msg["content"]["traceback"])

    reply = kernel.kc.execute_interactive(code, output_hook=hook, timeout=60)
    return reply["content"]["status"], [line for tb in errors for line in tb]


def test_a_strict_replay_failure_is_one_line_in_the_notebook_and_in_durable_run(kernel, kernel_env, model_server,
                                                                                tmp_path):
    kernel.ok(SETUP + '\nPROMPT = "Plan a 3-day trip"')
    kernel.ok(PLAN)
    kernel.ok('PROMPT = "Plan a 4-day trip"')
    status, shown = _error_lines(kernel, PLAN.replace("%%durable plan", "%%durable plan --strict"))
    assert status == "error"
    (line,) = shown  # no frames of the SDK or the runtime under it
    assert line.startswith("StrictReplayError: strict replay: step 'plan', call 1 (chat.completions, model m)")
    assert "'Plan a 3-day trip' -> 'Plan a 4-day trip'" in line
    kernel.shutdown()

    notebook = tmp_path / "trip.ipynb"
    cells = [SETUP, 'PROMPT = "Plan a 3-day trip"', PLAN]
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), notebook)
    env = {**kernel_env, "DURABLE_JOURNAL": str(tmp_path / "run.duckdb")}
    assert _durable("run", str(notebook), cwd=tmp_path, env=env).returncode == 0
    edited = nbformat.read(notebook, as_version=4)
    edited.cells[1].source = 'PROMPT = "Plan a 4-day trip"'
    nbformat.write(edited, notebook)
    out = tmp_path / "out.ipynb"
    failed = _durable("run", str(notebook), "--strict", "-o", str(out), cwd=tmp_path, env=env)
    assert failed.returncode == 1
    (error,) = [o for o in nbformat.read(out, as_version=4).cells[2].outputs if o.output_type == "error"]
    (line,) = error.traceback
    assert line.startswith("StrictReplayError: strict replay: step 'plan', call 1 (chat.completions, model m)")
    assert "'Plan a 3-day trip' -> 'Plan a 4-day trip'" in line
    # The runner's report carries the same line the notebook shows, after the cell it failed in.
    assert f"cell 3/3 (step plan): {line}" in failed.stdout.splitlines()[1], failed.stdout
    assert "failed (strict)" in failed.stdout


def _notice(outputs: list) -> list[str]:
    return [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr" and "durable:" in o.text]


def test_a_headless_run_journals_to_the_notebooks_session_or_says_which_it_is(tmp_path, kernel_env, model_server):
    cells = [SETUP, 'PROMPT = "Plan a trip"', PLAN, PLAN.replace("plan", "again")]
    notebook = tmp_path / "lisbon trip.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), notebook)
    env = {k: v for k, v in kernel_env.items() if k != "DURABLE_SESSION"}

    # `durable run` tells the kernel the notebook's path: the session is named after it, without a word.
    out = tmp_path / "out.ipynb"
    assert _durable("run", str(notebook), "-o", str(out), cwd=tmp_path, env=env).returncode == 0
    assert not [_notice(c.outputs) for c in nbformat.read(out, as_version=4).cells if _notice(c.outputs)]
    sessions = json.loads(_durable("ls", "--json", cwd=tmp_path, env=env).stdout)
    assert [s["session"] for s in sessions] == ["lisbon trip"]

    # nbclient (as `jupyter nbconvert --execute` runs it) does not: the first durable step says so, once.
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120).execute(cwd=str(tmp_path), env=env)
    lines = "".join(_notice(nb.cells[2].outputs)).splitlines()
    assert lines == ["durable: steps journal to session 'default' (this kernel was not told its notebook's name); "
                     "to name the session: %durable session NAME, or run the notebook with `durable run`",
                     # and its steps are new there, though the notebook's own session holds them
                     "durable: session 'default' is new, but session 'lisbon trip' recorded step 'plan' with the "
                     "same code: its calls go live again here; `%durable session lisbon trip` replays them"]
    assert _notice(nb.cells[3].outputs) == []
    sessions = json.loads(_durable("ls", "--json", cwd=tmp_path, env=env).stdout)
    assert sorted(s["session"] for s in sessions) == ["default", "lisbon trip"]

    # Named before its first step, it has nothing to say about its name (only that its steps are new).
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[0].source += "\n%durable session lisbon"
    NotebookClient(nb, kernel_name="python3", timeout=120).execute(cwd=str(tmp_path), env=env)
    said = "".join(text for c in nb.cells for text in _notice(c.outputs))
    assert "not told its notebook's name" not in said and "session 'lisbon' is new" in said


def test_approve_in_a_session_that_does_not_exist_lists_the_sessions(tmp_path):
    journal = tmp_path / "j.duckdb"
    _record(journal, tmp_path)
    wrong = _durable("approve", "trp", "refund", "--journal", str(journal), cwd=tmp_path)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.splitlines() == [f"durable approve: no session 'trp' in {journal}; sessions: trip"]
    # A session that exists but waits for nothing still says so.
    none = _durable("approve", "trip", "refund", "--journal", str(journal), cwd=tmp_path)
    assert none.returncode == 1
    assert none.stderr.splitlines() == ["durable approve: no pending approval 'refund' in session 'trip'; "
                                        "pending: none"]


def test_sql_says_read_only_only_for_a_write(tmp_path):
    journal = tmp_path / "j.duckdb"
    _record(journal, tmp_path)

    def error(query: str) -> str:
        done = _durable("sql", query, "--journal", str(journal), cwd=tmp_path)
        assert done.returncode == 1 and done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
        return done.stderr.strip()

    assert error("SELECT * FROM call") == f"durable sql: Catalog Error: Table with name call does not exist!  {VIEWS}"
    assert error("SELECT nope FROM calls") == ("durable sql: Binder Error: Referenced column \"nope\" not found in "
                                              f"FROM clause!  {VIEWS}")
    for write in ("INSERT INTO calls VALUES (1)", "UPDATE sessions SET name = 'x'", "CREATE TABLE t (a INT)",
                  "DELETE FROM steps"):
        assert error(write).endswith("  (the journal is read-only here; views: sessions, steps, calls, approvals)")
    with Journal(journal, create=False).open(read_only=True) as store:
        assert store.session_names() == ["trip"]


def test_looking_at_a_folder_without_a_journal_creates_nothing(tmp_path):
    env = _no_journal_env()
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok("%load_ext kernel_ext")
        status = kernel.ok("%durable status")
        assert status[0]["text"] == (f"session 'default'  journal {tmp_path}/.durable/journal.duckdb (not there "
                                     "yet)\nno steps yet: run a %%durable cell\n")
        assert "has no approvals" in kernel.ok("%durable approvals")[0]["text"]
        assert "no completed step" in kernel.ok("%durable restore")[0]["text"]
        assert "no prices in it" in kernel.ok("%durable prices")[0]["text"]
        for command in ("history", "sql SELECT * FROM sessions", "forget plan", "fork other", "export x.py"):
            result, outputs = kernel.execute(f"%durable {command}")
            assert result == "error"
            assert outputs == [{"output_type": "stream", "name": "stderr", "text": (
                f"UsageError: no journal at {tmp_path}/.durable/journal.duckdb yet: run a %%durable cell first "
                "(or point the journal setting at one: %config Durable.journal = PATH)\n")}]
    finally:
        kernel.shutdown()
    for command in (["ls"], ["show", "trip"], ["sql", "SELECT 1"], ["approve", "trip", "k"], ["prices"]):
        done = _durable(*command, cwd=tmp_path, env=env)
        assert done.returncode == 1 and "no journal at" in done.stderr
    assert list(tmp_path.iterdir()) == []
