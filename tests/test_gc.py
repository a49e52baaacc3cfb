"""What a journal leaves beside itself does not pile up: lock files go with the process that held them
(or with `durable gc` after a kill), `durable forget SESSION` removes a session's records, packs, lock
file and the blobs no other session uses, and what stays still replays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from journal._claim import lock_path, locks_dir
from journal._pack import pack_path, packs_dir

SCRIPT = """
import os, signal, sys
import kernel_ext
from kernel_ext import tool

journal, ledger, name, mode = sys.argv[1:5]


@tool
def book(what: str) -> dict:
    with open(ledger, "a") as file:
        file.write(f"{name}:{what}\\n")
    return {"booked": what}


kernel_ext.session(name, journal=journal)
with kernel_ext.step("plan"):
    book("shared")  # the same request and result in every session: their blobs are shared
    book(name)
if mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "hold":
    print("holding", flush=True)
    sys.stdin.read()
"""


def _session(tmp_path: Path, name: str, mode: str = "exit") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "j.duckdb"), str(tmp_path / "ledger"), name,
                           mode], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def _durable(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args, "--journal",
                           str(tmp_path / "j.duckdb")], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def _ledger(tmp_path: Path) -> Counter[str]:
    return Counter((tmp_path / "ledger").read_text().split())


@pytest.mark.slow
def test_gc_and_forget_leave_only_what_is_needed(tmp_path):
    journal = tmp_path / "j.duckdb"
    for name in ("a", "b", "d"):
        assert _session(tmp_path, name).returncode == 0
    killed = _session(tmp_path, "c", "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # A process that ends lets its lock file go with it; one killed cannot.
    assert sorted(locks_dir(journal).glob("*.lock")) == [lock_path(journal, "c")]
    assert all(pack_path(journal, name, "plan").exists() for name in "abd")

    forgot = _durable(tmp_path, "forget", "a")
    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stdout.startswith("durable forget: removed session 'a': ") and "1 replay pack" in forgot.stdout
    assert "2 blobs no record refers to" in forgot.stdout, forgot.stdout  # its own request and result
    assert not pack_path(journal, "a", "plan").exists()
    left = _durable(tmp_path, "sql", "SELECT count(*) AS n FROM records WHERE session = 'a'", "--json")
    assert left.stdout.split() == ["[", "{", '"n":', "0", "}", "]"], left.stdout
    missing = _durable(tmp_path, "forget", "a")
    assert missing.returncode == 1 and missing.stderr.startswith("durable forget: no session 'a' in "), missing.stderr

    holder = subprocess.Popen([sys.executable, "-c", SCRIPT, str(journal), str(tmp_path / "ledger"), "live", "hold"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert holder.stdout.readline().strip() == "holding"
        refused = _durable(tmp_path, "forget", "live")
        assert refused.returncode == 1
        (line,) = refused.stderr.splitlines()
        assert line.startswith("durable forget: session 'live' is being driven by process for 'live' (pid "), line

        (tmp_path / "ledger").unlink()
        stale = packs_dir(journal) / ("0" * 32 + ".pack")  # of no step, or of another file
        stale.write_bytes(b"not a pack")
        collected = _durable(tmp_path, "gc")
        assert collected.returncode == 0, collected.stderr
        (line,) = collected.stdout.splitlines()
        assert line.startswith("durable gc: removed 1 lock file, 1 replay pack (") and line.endswith(
            "; kept 1 lock file of sessions a live process drives"), line
        assert sorted(locks_dir(journal).glob("*.lock")) == [lock_path(journal, "live")], "only the held lock stays"
        assert not stale.exists() and not pack_path(journal, "a", "plan").exists()
        assert pack_path(journal, "b", "plan").exists() and pack_path(journal, "d", "plan").exists()

        for name in ("b", "c", "d"):  # b shared its blobs with the forgotten a: they stayed
            again = _session(tmp_path, name)
            assert again.returncode == 0, again.stderr
        assert not (tmp_path / "ledger").exists(), "every remaining session replayed: no tool ran again"
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    assert list(locks_dir(journal).glob("*.lock")) == []
    listed = _durable(tmp_path, "ls")
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()[1:]) == ["b", "c", "d", "live"]


def test_gc_and_forget_need_a_journal(tmp_path):
    for command in (["gc"], ["forget", "trip"]):
        result = _durable(tmp_path, *command)
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"durable {command[0]}: no journal at "), line
    assert os.listdir(tmp_path) == []
