"""A damaged journal: a one-line error from every command and from a kernel, not one byte written into
it, and `durable recover` copying what DuckDB can still read.

The journal is made by a real script (the openai client against the scripted model server, a `@tool`
that appends to a ledger file), then damaged three ways on a copy: cut to half its size, 4 KB of random
bytes written over a block of recorded results, and bytes flipped inside the block of call records so
that its checksum fails. DuckDB's file is three 4 KB headers, then blocks of 16 KB (the journal's size).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from journal import Holder, Journal, JournalDamagedError

MAKER = """
import os, random, sys
from openai import OpenAI
from kernel_ext import session, step, tool
from kernel_ext.scripted.server import ScriptedModelServer

@tool
def lookup(city: str) -> dict:
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(city + "\\n")
    rng = random.Random(city)  # a result too large to ride in its call's row: it is a blob of its own
    return {"city": city, "guide": "".join(rng.choice("abcdefghij ") for _ in range(8000))}

with ScriptedModelServer() as server:
    client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    for name in ["lisbon", "porto", "faro", "braga"]:
        session(name, journal=sys.argv[1])
        for part in ["plan", "book"]:
            with step(part):
                for day in range(3):
                    client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": f"{part} {name} {day}"}])
                    lookup(f"{name}-{day}")
"""
KINDS = ["truncate", "scribble", "flip"]
HEADERS, BLOCK = 3 * 4096, 16384


def _make(path: Path, ledger: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MAKER, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LEDGER": str(ledger)})


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pristine")
    made = _make(folder / "journal.duckdb", folder / "ledger")
    assert made.returncode == 0, made.stderr
    assert len((folder / "ledger").read_text().splitlines()) == 24
    return folder / "journal.duckdb"


def _blocks(path: Path, table: str, column: str | None = None) -> list[int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(f"SELECT DISTINCT block_id FROM pragma_storage_info('{table}') WHERE block_id >= 0 "
                           "AND (? IS NULL OR column_name = ?) ORDER BY block_id", [column, column]).fetchall()
    finally:
        con.close()
    return [block for (block,) in rows]


def damage(pristine: Path, target: Path, kind: str) -> str:
    """Copy the journal to `target` and damage the copy; return the sha256 of the damaged bytes."""
    shutil.copy(pristine, target)
    size = target.stat().st_size
    with target.open("r+b") as f:
        if kind == "truncate":
            f.truncate(size // 2)
        elif kind == "scribble":
            blobs = _blocks(pristine, "blobs")
            f.seek(HEADERS + blobs[len(blobs) // 2] * BLOCK + 2048)
            f.write(random.Random(7).randbytes(4096))
        else:
            (calls,) = _blocks(pristine, "records", "doc")  # the records' documents, calls' among them
            f.seek(HEADERS + calls * BLOCK + 1000)
            flipped = bytes(b ^ 0xFF for b in f.read(16))
            f.seek(HEADERS + calls * BLOCK + 1000)
            f.write(flipped)
    return _sha(target)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _durable(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def _one_damage_line(result: subprocess.CompletedProcess[str], path: Path) -> None:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"journal {path} is damaged (DuckDB: " in lines[0], lines
    assert f"`durable recover {path} -o NEW.duckdb`, then point DURABLE_JOURNAL at NEW" in lines[0]


@pytest.mark.parametrize("kind", KINDS)
def test_every_command_refuses_a_damaged_journal_in_one_line(kind, pristine, tmp_path, model_server):
    path = tmp_path / "journal.duckdb"
    sha = damage(pristine, path, kind)
    prices = tmp_path / "prices.json"
    prices.write_text('{"m": {"input": 1, "output": 2, "currency": "EUR"}}')
    before = sorted(os.listdir(tmp_path))
    commands = [["ls"], ["ls", "--json"], ["show", "lisbon"], ["sql", "SELECT count(*) FROM calls"],
                ["approve", "lisbon", "refund-ana"], ["prices"], ["prices", str(prices)],
                ["settle", "lisbon", "1", "--retry"], ["export", "lisbon", "-o", str(tmp_path / "lisbon.py")],
                ["gc"], ["forget", "lisbon"]]
    for command in commands:
        result = _durable(*command, "--journal", str(path), cwd=tmp_path)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        _one_damage_line(result, path)

    notebook = tmp_path / "trip.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("%load_ext kernel_ext"),
                                       new_code_cell("%%durable plan\nprint('planning')")]), notebook)
    env = {**os.environ, "OPENAI_BASE_URL": model_server.base_url, "OPENAI_API_KEY": "unused"}
    run = _durable("run", str(notebook), "--journal", str(path), cwd=tmp_path, env=env)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    assert f"(step plan): UsageError: journal {path} is damaged" in run.stdout
    assert f"no summary: journal {path} is damaged" in run.stdout

    assert _sha(path) == sha  # not a byte written, and no WAL left beside it
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "trip.ipynb"])


@pytest.mark.parametrize("kind", KINDS)
def test_a_kernel_refuses_a_damaged_journal_in_one_line(kind, pristine, kernel, kernel_env):
    path = Path(kernel_env["DURABLE_JOURNAL"])
    sha = damage(pristine, path, kind)
    kernel.ok("%load_ext kernel_ext")
    for attempt in range(3):
        if attempt == 2:
            kernel.restart()  # a later run of the notebook, in a fresh kernel
            kernel.ok("%load_ext kernel_ext")
        for cell in ("%%durable plan\nprint('planning')", "%durable status", "%durable history lisbon"):
            status, outputs = kernel.execute(cell)
            assert status == "error"
            # IPython shows a UsageError as one line on stderr, with no traceback.
            assert [o["output_type"] for o in outputs] == ["stream"], (cell, outputs)
            (line,) = outputs[0]["text"].splitlines()
            assert line.startswith(f"UsageError: journal {path} is damaged (DuckDB: "), line
    kernel.shutdown()
    assert _sha(path) == sha
    assert sorted(os.listdir(path.parent)) == ["journal.duckdb"]


@pytest.mark.parametrize("kind", KINDS)
def test_recover_copies_what_duckdb_can_read(kind, pristine, tmp_path):
    damaged, new = tmp_path / "journal.duckdb", tmp_path / "new.duckdb"
    sha = damage(pristine, damaged, kind)
    result = _durable("recover", str(damaged), "-o", str(new), cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # something was lost, and the report says what
    if kind == "truncate":
        # The journal was compacted when its last step closed, and a copy's catalog is written last: it is
        # past the cut, so DuckDB cannot open the file (every table's rows were past the cut all the same).
        assert result.stderr.startswith(f"durable recover: DuckDB cannot open {damaged} at all (the file is "
                                        "cut short"), result.stderr
        assert result.stderr.strip().endswith("nothing can be salvaged from it") and not new.exists()
        assert _sha(damaged) == sha
        return
    report = result.stdout
    assert report.startswith(f"recovered {damaged} into {new}: some of it could not be read")
    assert f"go on from it: DURABLE_JOURNAL={new}" in report
    assert _sha(damaged) == sha
    copied = {line.split()[0]: line for line in report.splitlines()[1:4]}
    assert set(copied) == {"blobs", "prices", "records"}  # since schema 8 one table holds calls, steps, runs...
    listed = _durable("ls", "--json", "--journal", str(new), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    sessions = {s["session"] for s in json.loads(listed.stdout)}

    if kind == "scribble":
        # Only recorded results (blobs) were overwritten: every session, step and call is copied, and
        # what lost its result runs again the safe way (a model call is sent again, a tool is in doubt).
        assert "checksum mismatch" in copied["blobs"] and "lost rows" in copied["blobs"]
        # 4 sessions, 8 steps, 8 runs, 48 calls and the call-id floor
        assert "69 of 69 rows copied" in copied["records"]
        assert sessions == {"lisbon", "porto", "faro", "braga"}
        assert "whose result was lost" in report
        _rerun_runs_no_tool_twice(new, tmp_path, in_doubt="tool calls whose result was lost, in doubt" in report)
    else:
        # The block of the records' documents fails its checksum. A small journal's records share their
        # blocks, so every record is lost: the report says so, and that their calls would run live again.
        assert "0 of 69 rows copied; lost rows 0-68 (69) (DuckDB: checksum mismatch" in copied["records"]
        copied_blobs, _, counted_blobs = copied["blobs"].split()[1:4]
        assert copied_blobs == counted_blobs and "lost" not in copied["blobs"]  # every blob row is copied
        assert sessions == set()
        assert ("rows of unknown sessions: 69 records lost (calls, runs, steps or sessions: those calls run live "
                "again, tools included)") in report

    again = _durable("recover", str(damaged), "-o", str(new), cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.strip() == (
        f"durable recover: {new} exists already; recover writes a new journal: choose another -o")


def _rerun_runs_no_tool_twice(journal: Path, tmp_path: Path, *, in_doubt: bool) -> None:
    """Run the script again on the recovered journal: recorded tools replay, lost ones stop as in doubt."""
    ledger = tmp_path / "ledger"
    ledger.write_text("")
    rerun = _make(journal, ledger)
    assert ledger.read_text() == ""
    if in_doubt:
        assert rerun.returncode == 1 and "InDoubtError" in rerun.stderr
    else:
        assert rerun.returncode == 0, rerun.stderr


def test_recover_of_a_healthy_journal_copies_everything(pristine, tmp_path):
    new = tmp_path / "new.duckdb"
    result = _durable("recover", str(pristine), "-o", str(new), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "everything was copied" in result.stdout and "69 of 69 rows copied" in result.stdout
    ledger = tmp_path / "ledger"
    ledger.write_text("")
    rerun = _make(new, ledger)  # the copy replays: no tool runs, and new calls get new ids
    assert rerun.returncode == 0 and ledger.read_text() == ""


def test_recover_refuses_what_duckdb_cannot_open(tmp_path):
    (tmp_path / "zero.duckdb").write_bytes(b"")
    result = _durable("recover", "zero.duckdb", "-o", "new.duckdb", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"durable recover: DuckDB cannot open {tmp_path / 'zero.duckdb'} at all (not a "
                                     "DuckDB database file, its header is missing or overwritten); nothing can be "
                                     "salvaged from it")
    assert not (tmp_path / "new.duckdb").exists()
    missing = _durable("recover", "nope.duckdb", "-o", "new.duckdb", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"durable recover: no journal at {tmp_path / 'nope.duckdb'}"


def test_damage_met_after_opening_stops_writing(pristine, tmp_path):
    """Damage this process has not seen at open (the file was read whole before, and its size and time are
    unchanged) fails the read that meets it, and nothing is written from then on."""
    path = tmp_path / "journal.duckdb"
    shutil.copy(pristine, path)
    journal = Journal(path)
    with journal.open() as store:
        assert len(store.sessions_overview()) == 4
    stat = path.stat()
    (calls,) = _blocks(path, "records", "doc")
    with path.open("r+b") as f:  # bit rot under the file system: size and time stay the same
        f.seek(HEADERS + calls * BLOCK + 1000)
        f.write(b"\xff" * 16)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    sha = _sha(path)

    with pytest.raises(JournalDamagedError, match="nothing more was written to it") as met, journal.open() as store:
        store.claim_session("lisbon", _holder())  # a write before the damage is met...
        store.sessions_overview()  # ...and the read that meets it
    assert met.value.path == str(path)
    with pytest.raises(JournalDamagedError, match="checksum mismatch .*; nothing was written to it"):
        journal.connect()
    # The claim committed before the damage was met stays in the WAL, never merged into the file.
    assert _sha(path) == sha


def _holder() -> Holder:
    return Holder.current("test")


def test_a_script_stops_before_its_first_step(pristine, tmp_path):
    path = tmp_path / "journal.duckdb"
    sha = damage(pristine, path, "flip")
    script = ("import kernel_ext, sys\nkernel_ext.session('lisbon', journal=sys.argv[1])\n"
              "with kernel_ext.step('plan'):\n    print('ran')\n")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "ran" not in result.stdout
    assert f"JournalDamagedError: journal {path} is damaged" in result.stderr
    assert _sha(path) == sha
