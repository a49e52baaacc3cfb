"""A journal written by a previous release opens, is migrated and replays with the current code.

The fixture tests/fixtures/previous_release.duckdb was written by the code of commit dbbd5f4 (schema
5), and tests/fixtures/schema7/previous_release.duckdb by that of commit 0199d57 (schema 7, the last
release before calls, steps and runs moved into one table);
tests/fixtures/make_previous_journal.py says how, and each previous_release.json holds what each step
returned then and what the journal held. Every test runs on both, on a copy, never on the committed
file. With the current code: `durable ls`, `show` and `sql` read it; the same steps run again, in a
plain Python process and in a real kernel, replay everything from it: no request reaches the model
server, no tool runs again (the tools append to a ledger file when they really run), and the final
answers are the recorded ones. Those releases stored tool results as unsealed pickles: they load only
once the journal's owner says it is theirs (`durable trust`); until then the replay stops, naming the call.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kernel_ext.scripted.server import ScriptedModelServer
from tests.harness import Kernel

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCRIPT = FIXTURES / "make_previous_journal.py"


class Release:
    """A journal fixture and what its release recorded in it."""

    def __init__(self, folder: Path) -> None:
        self.journal = folder / "previous_release.duckdb"
        self.recorded: dict[str, Any] = json.loads((folder / "previous_release.json").read_text(encoding="utf-8"))
        # The steps' final answers; "summary-draft" is the first version of the step "summary", superseded.
        self.answers = {name: self.recorded["answers"][name] for name in self.recorded["steps"]}


RELEASES = {"dbbd5f4": Release(FIXTURES), "0199d57": Release(FIXTURES / "schema7")}
# The same script recorded both: the same session and steps.
SESSION = RELEASES["dbbd5f4"].recorded["session"]
STEPS: list[str] = RELEASES["dbbd5f4"].recorded["steps"]
SUPERSEDED = 1  # the draft summary's call: kept as history, not used by the last run


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLE_JOURNAL", "DURABLE_SESSION", "DURABLE_STRICT")}
    # The code under test is the tree this test file belongs to, whatever the editable install points at.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(DURABLE_HEADLESS="1", **extra)
    return env


def _durable(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          env=_env(), cwd=cwd, timeout=120)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done.stdout


@pytest.fixture(params=list(RELEASES))
def release(request: pytest.FixtureRequest) -> Release:
    return RELEASES[request.param]


@pytest.fixture
def journal_copy(release: Release, tmp_path: Path) -> Path:
    # The committed file is only ever copied: opening it in place with newer code would migrate it.
    journal = release.journal
    assert not journal.with_name(journal.name + ".wal").exists(), "the committed fixture was opened in place"
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == release.recorded["sha256"], (
        f"{journal} is not the file previous_release.json describes")
    copy = tmp_path / "copy" / "journal.duckdb"
    copy.parent.mkdir()
    shutil.copyfile(journal, copy)
    return copy


def _calls_by_step(shown: dict[str, Any]) -> dict[str, Counter[tuple[str, str, str]]]:
    return {s["name"]: Counter((c["kind"], c["name"], c["status"]) for c in s["calls"]) for s in shown["steps"]}


def _check_listed(journal: Path, cwd: Path, recorded: dict[str, Any]) -> dict[str, Any]:
    """`durable ls` and `durable show` list the session, its steps and every recorded call."""
    listed = _ok(_durable("ls", "--journal", str(journal), cwd=cwd))
    assert SESSION in listed
    (row,) = [r for r in json.loads(_ok(_durable("ls", "--journal", str(journal), "--json", cwd=cwd)))
              if r["session"] == SESSION]
    recorded_calls = sum(len(calls) for calls in recorded["show_calls"].values())
    assert (row["steps"], row["steps_completed"], row["pending_approvals"]) == (len(STEPS), len(STEPS), 0)
    assert row["calls"] == recorded_calls - SUPERSEDED

    text = _ok(_durable("show", SESSION, "--journal", str(journal), cwd=cwd))
    for name in STEPS:
        assert name in text, f"step {name} missing from durable show:\n{text}"
    for calls in recorded["show_calls"].values():
        for _, call, _ in calls:
            assert call in text, f"call {call} missing from durable show:\n{text}"

    shown = json.loads(_ok(_durable("show", SESSION, "--journal", str(journal), "--json", cwd=cwd)))
    assert [s["name"] for s in shown["steps"]] == STEPS
    assert all(s["status"] == "completed" for s in shown["steps"])
    expected = {step: Counter(tuple(c) for c in calls) for step, calls in recorded["show_calls"].items()}
    assert _calls_by_step(shown) == expected
    return shown


def _check_sql(journal: Path, cwd: Path, recorded: dict[str, Any]) -> None:
    """The documented views answer queries."""
    total = sum(c["count"] for c in recorded["calls"])
    counted = json.loads(_ok(_durable("sql", "select count(*) as n from calls", "--journal", str(journal),
                                      "--json", cwd=cwd)))
    assert counted == [{"n": total}]
    assert str(total) in _ok(_durable("sql", "select count(*) from calls", "--journal", str(journal), cwd=cwd))
    by_kind = json.loads(_ok(_durable(
        "sql", "select step, kind, name, status, count(*) as n from calls group by all order by all",
        "--journal", str(journal), "--json", cwd=cwd)))
    assert [[r["step"], r["kind"], r["name"], r["status"], r["n"]] for r in by_kind] == [
        [c["step"], c["kind"], c["name"], c["status"], c["count"]] for c in recorded["calls"]]
    for view in ("sessions", "steps", "approvals"):
        rows = json.loads(_ok(_durable("sql", f"select * from {view}", "--journal", str(journal), "--json",
                                       cwd=cwd)))
        assert rows, f"view {view} is empty"
    approvals = json.loads(_ok(_durable("sql", "select count(*) as n from approvals", "--journal", str(journal),
                                        "--json", cwd=cwd)))
    assert approvals == [{"n": 2}]


def _check_replayed(journal: Path, cwd: Path, ledger: Path, server: ScriptedModelServer,
                    recorded: dict[str, Any]) -> None:
    """After a replay: nothing went live and every call of each step's last run was replayed."""
    assert server.stats()["requests"] == 0, f"requests reached the model: {server.requests()}"
    ran = ledger.read_text(encoding="utf-8").splitlines() if ledger.exists() else []
    assert ran == [], f"tools ran again on replay: {ran}"
    shown = _check_listed(journal, cwd, recorded)
    unused = 0
    for step in shown["steps"]:
        uses = Counter(c["use"] for c in step["calls"])
        unused += uses.pop("not used by the last run", 0)
        assert step["live"] == 0 and set(uses) == {"replayed"} and step["replayed"] == uses["replayed"], step
    assert unused == SUPERSEDED


@pytest.mark.parametrize(("commit", "schema"), [("dbbd5f4", 5), ("0199d57", 7)])
def test_the_fixture_was_written_by_the_previous_release(commit: str, schema: int) -> None:
    release = RELEASES[commit]
    assert release.recorded["commit"].startswith(commit) and release.recorded["schema_version"] == schema
    assert release.journal.stat().st_size < 1_000_000
    assert b"sk-previous-release-fixture" not in release.journal.read_bytes()
    # What the recording did for real, which a replay must not do again.
    assert release.recorded["model_requests_while_recording"] > 0
    assert Counter(e["event"] for e in release.recorded["ledger"]) == {
        "lookup_weather": 5, "charge_card": 1, "fetch_invoice": 1, "refund": 1}


def test_cli_reads_the_previous_journal(release: Release, journal_copy: Path, tmp_path: Path) -> None:
    # Read-only commands first, on a journal no current code has written to yet.
    _check_listed(journal_copy, tmp_path, release.recorded)
    _check_sql(journal_copy, tmp_path, release.recorded)
    assert not journal_copy.with_name(journal_copy.name + ".wal").exists()


def _replay_script(journal: Path, server: ScriptedModelServer, ledger: Path, answers: Path, cwd: Path,
                   strict: str = "0") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "replay", "--journal", str(journal), "--base-url", server.base_url,
         "--ledger", str(ledger), "--answers", str(answers)],
        capture_output=True, text=True, env=_env(DURABLE_STRICT=strict), cwd=cwd, timeout=180)


def test_the_previous_journal_loads_no_pickle_until_its_owner_trusts_it(release: Release, journal_copy: Path,
                                                                        tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    with ScriptedModelServer() as server:
        done = _replay_script(journal_copy, server, ledger, tmp_path / "answers.json", tmp_path)
        assert done.returncode != 0
        (line,) = [line for line in done.stderr.splitlines()
                   if line.startswith("kernel_ext.errors.UntrustedPickleError")]
        assert "written before pickles were sealed" in line and f"durable trust {journal_copy}" in line
        assert not ledger.exists(), "a tool ran instead of its recorded result"
        trusted = _ok(_durable("trust", str(journal_copy), cwd=tmp_path))
        assert f"trusted {journal_copy}" in trusted
        _ok(_replay_script(journal_copy, server, ledger, tmp_path / "answers.json", tmp_path))
        assert json.loads((tmp_path / "answers.json").read_text(encoding="utf-8")) == release.answers
        assert not ledger.exists() and server.stats()["requests"] == 0


def test_a_script_replays_the_previous_journal(release: Release, journal_copy: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    _ok(_durable("trust", str(journal_copy), cwd=tmp_path))  # its owner says it is theirs
    with ScriptedModelServer() as server:
        for strict in ("0", "1"):  # then once more in CI mode: any call that would go live is an error
            answers = tmp_path / f"answers-{strict}.json"
            _ok(_replay_script(journal_copy, server, ledger, answers, tmp_path, strict))
            assert json.loads(answers.read_text(encoding="utf-8")) == release.answers
            _check_replayed(journal_copy, tmp_path, ledger, server, release.recorded)
    _check_sql(journal_copy, tmp_path, release.recorded)


def _cell(step: str) -> str:
    function = "step_" + step.replace("-", "_")
    return f"%%durable {step}\nanswers[{step!r}] = fx.{function}(client, tools)\n"


def test_a_kernel_replays_the_previous_journal(release: Release, journal_copy: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    _ok(_durable("trust", str(journal_copy), cwd=tmp_path))
    with ScriptedModelServer() as server:
        env = _env(DURABLE_JOURNAL=str(journal_copy), DURABLE_FIXTURE_LEDGER=str(ledger))
        env["PYTHONPATH"] = os.pathsep.join([str(FIXTURES), env["PYTHONPATH"]])
        kernel = Kernel(env, tmp_path)
        try:
            kernel.ok(f"%load_ext kernel_ext\n%durable session {SESSION}\n"
                      "import json\nimport make_previous_journal as fx\n"
                      f"client, tools, answers = fx.client_for({server.base_url!r}), fx.make_tools(), {{}}\n")
            for step in STEPS:
                kernel.ok(_cell(step))
            outputs = kernel.ok("print(json.dumps(answers))")
            printed = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
            assert json.loads(printed) == release.answers
        finally:
            kernel.shutdown()
        _check_replayed(journal_copy, tmp_path, ledger, server, release.recorded)
