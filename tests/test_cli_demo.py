"""The README's first command: `durable demo`, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_durable_demo_reports_replayed_and_live_calls(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kernel_ext.cli.main", "demo", "--dir", str(tmp_path), "--turns", "4",
         "--kill-at", "3", "--latency", "0.05"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # Turns 1 and 3 ask for a tool: model calls 1 and 2 and turn 1's tool call are journaled before the kill.
    assert "journaled: 2 model answers, 1 tool results" in out
    assert "3 calls replayed from the journal (2 model, 1 tool; no tool ran twice), 4 live" in out
    assert "7 calls replayed, 0 live" in out
    assert "model requests in all: 6 for 5 calls" in out
    assert (tmp_path / ".durable" / "journal.duckdb").exists()


def test_cli_usage_errors_exit_2():
    result = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown command 'nonsense'" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("timeout", ["-5", "0", "nan"])
def test_run_refuses_a_timeout_that_is_not_positive_in_one_line(tmp_path, timeout):
    notebook = tmp_path / "n.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    result = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "run", str(notebook), "--timeout", timeout],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"durable run: --timeout takes a positive number of seconds, got {timeout}"]
    assert not (tmp_path / ".durable").exists()
