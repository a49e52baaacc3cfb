"""Every file and folder a journal creates is its user's alone (0600 / 0700) under a permissive umask: the
journal's folder, the DuckDB file and the WAL a killed process leaves, the append logs, replay packs,
locks, and the scripts and DBOS app exported from it. A mode the user set on an existing journal stays."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from journal import Journal
from tests.harness import Kernel

SETUP = '''import os, time
from openai import OpenAI
from kernel_ext import tool

client = OpenAI(max_retries=0)
MARKER = os.environ["MARKER"]

@tool
def lookup(city: str) -> dict:
    """Facts about a city."""
    return {"city": city, "people": 545000}

@tool(idempotent=True)
def wait_here() -> str:
    """Waits the first time it runs, long enough to be killed."""
    if not os.path.exists(MARKER):
        open(MARKER, "w").close()
        time.sleep(600)
    return "waited"
'''

ASK = '''%%durable ask
reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Lisbon?"}])
facts = lookup("Lisbon")
'''

WAIT = '''%%durable wait
waited = wait_here()
'''

CELLS = ["%load_ext kernel_ext", "%durable session modes", SETUP, ASK]

# A process that dies holding the journal open with rows DuckDB has not merged into the file yet.
HOLD = '''
import os, sys, time
from journal import Journal
store = Journal(sys.argv[1]).connect()
store.put_bytes(os.urandom(64))
print("held", flush=True)
time.sleep(600)
'''


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _not_private(*roots: Path) -> list[tuple[str, str]]:
    """Files not 0600 and folders not 0700 among `roots` and everything under them."""
    found = []
    paths = [path for root in roots for path in ([root, *root.rglob("*")] if root.is_dir() else [root])]
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            found.append((str(path), oct(mode)))
    return found


def _durable(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          timeout=180, env=env)


def test_every_file_and_folder_of_a_journal_and_its_exports_is_owner_only(kernel_env, tmp_path):
    state = tmp_path / "state"  # not there yet: every folder down to the journal is the journal's to create
    path = state / ".durable" / "journal.duckdb"
    env = {**kernel_env, "DURABLE_JOURNAL": str(path), "MARKER": str(tmp_path / "marker")}
    with _umask(0o022):
        kernel = Kernel(env, tmp_path)
        try:
            for cell in CELLS:
                kernel.ok(cell)
            kernel.kc.execute(WAIT)  # killed inside its tool call
            deadline = time.monotonic() + 60
            while not (tmp_path / "marker").exists():
                assert time.monotonic() < deadline, "the tool never started"
                time.sleep(0.05)
            kernel.kill()
            assert any(p.suffix == ".log" for p in state.rglob("*")), "the killed kernel's log stays"
            assert _not_private(state) == []
            holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True,
                                      env=env)  # opening the journal absorbs (and deletes) that log
            assert holder.stdout.readline().strip() == "held"
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=60)
            assert (path.parent / "journal.duckdb.wal").exists()
            assert _not_private(state) == []

            kernel.restart()  # the notebook again: steps begin from their packs, the killed one finishes
            for cell in [*CELLS, WAIT]:
                kernel.ok(cell)
            kernel.ok(f"%durable export {tmp_path / 'notebook.py'}")
            kernel.km.shutdown_kernel()  # a clean exit: the kernel packs what ran for the next run
        finally:
            kernel.shutdown()
        assert any(state.rglob("*.pack")), sorted(p.name for p in state.rglob("*"))
        assert _not_private(state) == []
        script = _durable("export", "modes", "-o", str(tmp_path / "cli.py"), "--journal", str(path), env=env)
        assert script.returncode == 0, script.stderr
        app = _durable("export", "modes", "--engine", "dbos", "-o", str(tmp_path / "app.py"), "--journal",
                       str(path), env=env)
        assert app.returncode == 0, app.stderr
    exports = [tmp_path / name for name in ("notebook.py", "cli.py", "app.py", "app.recording")]
    assert _not_private(state, *exports) == []


RECORD = '''
import sys
from kernel_ext import session, step, tool

@tool
def lookup(city: str) -> dict:
    return {"city": city, "notes": "x" * 2000}

session("shared", journal=sys.argv[1])
for name in ("a", "b", "c"):
    with step(name):
        lookup(name)
'''


def test_a_mode_the_user_set_on_an_existing_journal_stays(tmp_path):
    folder = tmp_path / "team"
    path = folder / "journal.duckdb"
    with Journal(path).open():
        pass
    os.chmod(folder, 0o750)
    os.chmod(path, 0o640)
    with _umask(0o022):
        for _ in range(2):  # a recording, then a replay from the packs the first one wrote
            run = subprocess.run([sys.executable, "-c", RECORD, str(path)], capture_output=True, text=True,
                                 timeout=180)
            assert run.returncode == 0, run.stderr
    assert oct(stat.S_IMODE(path.stat().st_mode)) == oct(0o640)
    assert oct(stat.S_IMODE(folder.stat().st_mode)) == oct(0o750)
    made = [p for p in folder.iterdir() if p != path]  # the logs beside it are this release's own
    assert made and _not_private(*made) == []
