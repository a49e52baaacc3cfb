"""Kernels and the CLI side by side on one journal while cells run: no lock error reaches anyone.

A running durable cell journals into its process's append log and does not hold the DuckDB file,
so another kernel's cells and every `durable` command work meanwhile, and the commands show the
running cell's calls. Two kernels driving the same session are still refused, by name.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from tests.harness import Kernel

CALLS = 8

SETUP = "%load_ext kernel_ext\nfrom openai import OpenAI\nclient = OpenAI()\n"


def _cell(session: str) -> str:
    return f"""%%durable talk
answers = []
for n in range({CALLS}):
    reply = client.chat.completions.create(model="scripted-chat",
                                           messages=[{{"role": "user", "content": "{session} " + str(n)}}])
    answers.append(reply.choices[0].message.content)
print("{session}", len(answers))
"""


def _durable(journal: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args, "--journal", str(journal)],
                          capture_output=True, text=True, timeout=120)


def _calls(journal: Path, session: str) -> str:
    result = _durable(journal, "sql", f"SELECT count(*) AS n FROM calls WHERE session = '{session}'")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_two_kernels_run_cells_on_one_journal_at_the_same_time(model_server, kernel_env, tmp_path):
    model_server.configure(delay=0.3)  # calls overlap: each cell runs for a few seconds
    journal = Path(kernel_env["DURABLE_JOURNAL"])
    kernels = [Kernel(kernel_env, tmp_path) for _ in range(2)]
    try:
        for name, kernel in zip("ab", kernels, strict=True):
            kernel.ok(SETUP + f"%durable session {name}")
        results: dict[str, list] = {}

        def run(name: str, kernel: Kernel) -> None:
            results[name] = kernel.execute(_cell(name), timeout=300)

        threads = [threading.Thread(target=run, args=(n, k)) for n, k in zip("ab", kernels, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name in "ab":
            status, outputs = results[name]
            assert status == "ok", outputs
            assert any(f"{name} {CALLS}" in o.get("text", "") for o in outputs), outputs
        assert model_server.stats()["requests"] == 2 * CALLS
        for name in "ab":
            assert f"\n{CALLS}" in _calls(journal, name) or f" {CALLS}" in _calls(journal, name)
        # Each replays on its own kernel after a restart, sending nothing.
        for name, kernel in zip("ab", kernels, strict=True):
            kernel.restart()
            kernel.ok(SETUP + f"%durable session {name}")
            kernel.ok(_cell(name))
        assert model_server.stats()["requests"] == 2 * CALLS
    finally:
        for kernel in kernels:
            kernel.shutdown()


def test_the_cli_answers_during_a_running_cell_and_lists_its_calls(model_server, kernel_env, tmp_path):
    journal = Path(kernel_env["DURABLE_JOURNAL"])
    model_server.configure(hold_request=4)  # the cell's fourth call waits until the test releases it
    kernel = Kernel(kernel_env, tmp_path)
    try:
        kernel.ok(SETUP + "%durable session busy")
        done: list = []
        runner = threading.Thread(target=lambda: done.append(kernel.execute(_cell("busy"), timeout=300)))
        runner.start()
        model_server.wait_for_held(timeout=120)
        listed = _durable(journal, "ls")
        assert listed.returncode == 0, listed.stderr
        assert "busy" in listed.stdout and "running" in listed.stdout, listed.stdout
        shown = _durable(journal, "show", "busy")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.count("chat.completions") == 3, shown.stdout  # the three calls done so far
        assert "running" in shown.stdout, shown.stdout
        assert "3" in _calls(journal, "busy")
        # A second kernel cannot drive the same session: refused at once, by name.
        other = Kernel(kernel_env, tmp_path)
        try:
            status, outputs = other.execute(SETUP + "%durable session busy\n", timeout=120)
            if status == "ok":
                status, outputs = other.execute(_cell("busy"), timeout=120)
            said = " ".join(o.get("evalue", "") + o.get("text", "") for o in outputs)
            assert "session 'busy' is being driven by kernel" in said, outputs
        finally:
            other.shutdown()
        model_server.release()
        runner.join(timeout=300)
        status, outputs = done[0]
        assert status == "ok", outputs
        assert f"\n{CALLS}" in _calls(journal, "busy") or f" {CALLS}" in _calls(journal, "busy")
    finally:
        model_server.release()
        kernel.shutdown()
