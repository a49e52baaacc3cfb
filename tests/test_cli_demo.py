"""The README's first command: `durable demo`, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_durable_demo_reports_replayed_and_live_calls(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "kernel_ext.cli", "demo", "--dir", str(tmp_path), "--turns", "4",
         "--kill-at", "3", "--latency", "0.05"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "2 calls replayed from the journal, 3 live" in out
    assert "5 calls replayed, 0 live" in out
    assert "model requests in all: 6 for 5 calls" in out
    assert (tmp_path / ".durable" / "journal.duckdb").exists()


def test_cli_usage_errors_exit_2():
    result = subprocess.run([sys.executable, "-m", "kernel_ext.cli", "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
