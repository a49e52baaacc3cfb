"""A journal on a disk that fills up: the step that cannot be journaled stops with one line before its
tool runs, the read-only commands answer from what the journal holds, and once space is freed the
same script replays every recorded call and runs each tool exactly once.

The disk is a real 2 MB tmpfs (the tests run as root); the tools' ledger lives outside it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = """
import sys
import kernel_ext
from kernel_ext import tool

journal, ledger, steps, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fill = sys.argv[5] if len(sys.argv) > 5 else None


@tool
def effect(step: int, n: int) -> dict:
    with open(ledger, "a") as file:
        file.write(f"{step}.{n}\\n")
    if fill and n == 1:  # the disk fills while the tool runs, between its start and its outcome
        fill_disk(fill)
    return {"step": step, "n": n, "text": "x" * 2000}


def fill_disk(path):
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


kernel_ext.session("ledger", journal=journal)
for s in range(steps):
    with kernel_ext.step(f"step{s}"):
        for n in range(calls):
            effect(s, n)
print("done")
"""


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a 2 MB tmpfs at {mount} ({done.stderr.strip() or done.returncode}): this test "
                    "fills a real disk and needs to run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _run(tmp_path: Path, journal: Path, steps: int, calls: int, *fill: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(journal), str(tmp_path / "ledger"), str(steps),
                           str(calls), *fill], capture_output=True, text=True, timeout=300, cwd=tmp_path)


def _durable(journal: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args, "--journal", str(journal)],
                          capture_output=True, text=True, timeout=120)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)


def _files(directory: Path) -> dict[str, int]:
    return {str(path.relative_to(directory)): path.stat().st_size for path in directory.rglob("*") if path.is_file()}


def _ledger(tmp_path: Path) -> Counter[str]:
    return Counter((tmp_path / "ledger").read_text().split())


@pytest.mark.slow
def test_a_full_disk_stops_the_step_in_one_line_and_loses_no_recorded_call(disk, tmp_path):
    journal = disk / "j.duckdb"
    first = _run(tmp_path, journal, 3, 3)
    assert first.returncode == 0, first.stderr
    assert sum(_ledger(tmp_path).values()) == 9

    _fill(disk / "filler")
    full = _run(tmp_path, journal, 3, 5)
    assert full.returncode == 1, (full.stdout, full.stderr)
    # Python's traceback of the script, ending in one line that says what happened and what to do.
    lines = full.stderr.splitlines()
    assert lines.count("Traceback (most recent call last):") == 1 and "During handling" not in full.stderr
    (error,) = [line for line in lines if line.startswith("journal.errors.")]
    assert error == ("journal.errors.JournalFullError: the disk is full: call 4 of step 'step0' (tool effect) "
                     "was not journaled and did not run; free space, then run the step again"), full.stderr
    assert "_duckdb." not in full.stderr and "Errno" not in full.stderr, full.stderr
    assert sum(_ledger(tmp_path).values()) == 9, "the tool whose start could not be journaled did not run"

    # Read-only commands answer from what the journal holds, leave its files as they are, and say what they left out.
    before = _files(disk)
    listed = _durable(journal, "ls")
    assert listed.returncode == 0, listed.stderr
    assert "ledger" in listed.stdout and "completed" in listed.stdout and "Traceback" not in listed.stderr
    (line,) = listed.stderr.splitlines()
    assert line.startswith("durable ls: the disk is full: ") and line.endswith(
        "records in logs are not shown yet (free space, then run it again)"), line
    shown = _durable(journal, "show", "ledger")
    assert shown.returncode == 0, shown.stderr
    assert "step0 · completed · 3 calls" in shown.stdout and "Traceback" not in shown.stderr
    assert shown.stderr.startswith("durable show: the disk is full: ")
    rows = _durable(journal, "sql", "SELECT count(*) AS n FROM calls", "--json")
    assert rows.returncode == 0 and json.loads(rows.stdout) == [{"n": 9}], rows.stderr
    assert _files(disk) == before, "a read-only command changed a file"

    (disk / "filler").unlink()
    again = _run(tmp_path, journal, 3, 5)
    assert again.returncode == 0, again.stderr
    ledger = _ledger(tmp_path)
    assert set(ledger.values()) == {1} and len(ledger) == 15, "every tool effect happened exactly once"
    steps = json.loads(_durable(journal, "show", "ledger", "--json").stdout)["steps"]
    assert [(s["replayed"], s["live"]) for s in steps] == [(3, 2)] * 3, "every recorded call replays"


@pytest.mark.slow
def test_a_disk_that_fills_while_a_tool_runs_still_gets_its_outcome(disk, tmp_path):
    """The room reserved before a tool's start takes its outcome: the call is journaled, not in doubt."""
    journal = disk / "j.duckdb"
    filled = _run(tmp_path, journal, 1, 3, str(disk / "filler"))
    assert (disk / "filler").stat().st_size > 1 << 20, "the tool filled the disk"
    assert filled.returncode == 0, filled.stderr
    assert "done" in filled.stdout
    (disk / "filler").unlink()
    again = _run(tmp_path, journal, 1, 3)
    assert again.returncode == 0, again.stderr
    assert _ledger(tmp_path) == Counter({"0.0": 1, "0.1": 1, "0.2": 1}), "no tool ran twice"


def test_a_record_cut_short_says_whether_the_disk_was_full(tmp_path):
    """A log whose last record is torn: its reader says why where the writer left word of a full disk."""
    from journal import Journal
    from journal._log import full_marker, logs_dir, logs_in

    path = tmp_path / "j.duckdb"
    done = _run(tmp_path, path, 1, 1)
    assert done.returncode == 0, done.stderr
    directory = logs_dir(path)
    host = socket.gethostname().replace("-", "_")
    for marked in (True, False):
        # A log of a process of this machine that is gone (pid 1 did not start then), its last record torn.
        log = directory / f"{host}-1-99999999999-{marked:d}.log"
        log.write_bytes(b"\x20\x00\x00\x00\x00\x00\x00\x00E{")
        if marked:
            full_marker(log).touch()
        result = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "ls", "--journal", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        why = "cut short by a full disk" if marked else "cut short (its process died or the disk was full)"
        assert why in result.stderr and log.name in result.stderr, result.stderr
        assert not log.exists() and not full_marker(log).exists()
    assert list(logs_in(directory)) == []
    with Journal(path).open() as store:
        assert store.sessions_overview()[0]["calls"] == 1
