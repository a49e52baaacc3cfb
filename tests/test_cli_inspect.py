"""`durable ls`, `show`, `sql` and `prices` against a journal made by a real headless run, and the
commands that read or decide refusing a path where there is no journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

CELLS = [
    "%load_ext kernel_ext\nfrom openai import OpenAI\nfrom kernel_ext import tool\nclient = OpenAI(max_retries=0)",
    """@tool
def lookup(city: str) -> dict:
    return {"city": city, "sunny": True}
""",
    """%%durable research
for city in ["Lisbon", "Porto"]:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": city}])
    lookup(city)
""",
    '%%durable summary\nclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "sum"}])',
]


def _durable(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_ls_and_show_read_a_recorded_session(tmp_path, kernel_env, model_server):
    notebook = tmp_path / "trip.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in CELLS]), notebook)
    assert _durable("run", str(notebook), env=kernel_env, cwd=tmp_path).returncode == 0

    listed = _durable("ls", env=kernel_env, cwd=tmp_path)
    assert listed.returncode == 0 and "\x1b" not in listed.stdout, listed.stdout  # piped: plain text
    header, row = listed.stdout.splitlines()
    assert header.split() == ["session", "status", "steps", "calls", "tokens", "last", "activity"]
    assert row.split()[:4] == ["trip", "completed", "2/2", "5"] and row.endswith(" UTC")
    (session,) = json.loads(_durable("ls", "--json", env=kernel_env, cwd=tmp_path).stdout)
    assert (session["session"], session["steps"], session["calls"]) == ("trip", 2, 5)
    assert session["tokens"] > 0

    shown = _durable("show", "trip", env=kernel_env, cwd=tmp_path)
    assert shown.returncode == 0
    assert "✓ research · completed · 4 calls" in shown.stdout and "✓ summary · completed · 1 call ·" in shown.stdout
    # Each call by its place in its step, the number the notebook's history and the runtime's messages use.
    assert "call 1 · llm chat.completions [m] · completed · live" in shown.stdout
    assert "call 2 · tool lookup · completed · live" in shown.stdout
    assert "replay saved nothing yet" in shown.stdout
    detail = json.loads(_durable("show", "trip", "--json", env=kernel_env, cwd=tmp_path).stdout)
    research = detail["steps"][0]
    assert research["name"] == "research" and [c["kind"] for c in research["calls"]] == ["llm", "tool"] * 2

    missing = _durable("show", "nope", env=kernel_env, cwd=tmp_path)
    assert missing.returncode == 1 and "no session 'nope'" in missing.stdout and "trip" in missing.stdout

    # A page of a long session: one step, or the last N.
    one = _durable("show", "trip", "--step", "summary", env=kernel_env, cwd=tmp_path)
    assert one.returncode == 0 and "summary · completed" in one.stdout and "research" not in one.stdout
    last = _durable("show", "trip", "--last", "1", "--json", env=kernel_env, cwd=tmp_path)
    assert [s["name"] for s in json.loads(last.stdout)["steps"]] == ["summary"]
    unknown = _durable("show", "trip", "--step", "nope", env=kernel_env, cwd=tmp_path)
    assert unknown.returncode == 1 and "no step 'nope'" in unknown.stdout and "research" in unknown.stdout


def test_sql_and_prices_over_a_recorded_session(tmp_path, kernel_env, model_server):
    notebook = tmp_path / "trip.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in CELLS]), notebook)
    assert _durable("run", str(notebook), env=kernel_env, cwd=tmp_path).returncode == 0

    table = _durable("sql", "SELECT step, kind, name FROM calls ORDER BY id", env=kernel_env, cwd=tmp_path)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["step", "kind", "name"] and lines[-1] == "(5 rows)" and len(lines) == 7
    assert lines[1].split() == ["research", "llm", "chat.completions"]
    assert lines[2].split() == ["research", "tool", "lookup"]
    assert lines[5].split() == ["summary", "llm", "chat.completions"]
    assert "\x1b" not in table.stdout  # piped: plain text
    rows = json.loads(_durable("sql", "SELECT name, steps, calls, tokens, cost FROM sessions", "--json",
                               env=kernel_env, cwd=tmp_path).stdout)
    assert rows[0]["name"] == "trip" and rows[0]["steps"] == 2 and rows[0]["calls"] == 5
    assert rows[0]["cost"] is None  # no price set: no cost shown as fact

    prices = tmp_path / "prices.toml"
    prices.write_text('[m]\ninput = 2.0\noutput = 8.0\ncurrency = "EUR"\n')
    assert _durable("prices", str(prices), env=kernel_env, cwd=tmp_path).returncode == 0
    (row,) = json.loads(_durable("sql", "SELECT sum(prompt_tokens) AS p, sum(completion_tokens) AS c, "
                                 "sum(cost) AS cost, any_value(currency) AS currency FROM calls WHERE kind = 'llm'",
                                 "--json", env=kernel_env, cwd=tmp_path).stdout)
    assert row["p"] > 0 and abs(row["cost"] - (row["p"] * 2.0 + row["c"] * 8.0) / 1e6) < 1e-5
    assert row["currency"] == "EUR"
    header, listed = _durable("ls", env=kernel_env, cwd=tmp_path).stdout.splitlines()
    assert header.split()[5] == "cost" and abs(float(listed.split()[5]) - row["cost"]) < 6e-5, listed

    # Queries people type cannot change the journal, and a mistake is one line that names the views.
    refused = _durable("sql", "DELETE FROM call_records", env=kernel_env, cwd=tmp_path)
    assert refused.returncode == 1 and "read-only" in refused.stderr and len(refused.stderr.splitlines()) == 1
    typo = _durable("sql", "SELECT * FROM cals", env=kernel_env, cwd=tmp_path)
    assert typo.returncode == 1 and "sessions, steps, calls, approvals" in typo.stderr
    count = _durable("sql", "SELECT count(*) AS n FROM calls", "--json", env=kernel_env, cwd=tmp_path)
    assert json.loads(count.stdout) == [{"n": 5}]

    bad = tmp_path / "bad.json"
    bad.write_text('{"m": {"input": "cheap"}}')
    wrong = _durable("prices", str(bad), env=kernel_env, cwd=tmp_path)
    assert wrong.returncode == 1 and "needs non-negative numbers" in wrong.stderr


def test_read_only_commands_create_no_journal(tmp_path):
    """A mistyped --journal, or a folder where nothing ran, is an error: no new journal, no .durable/ folder."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    prices = elsewhere / "prices.json"
    prices.write_text('{"m": {"input": 1, "output": 2}}')
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_JOURNAL"}
    commands = [["ls"], ["ls", "--json"], ["show", "trip"], ["sql", "SELECT 1"], ["approve", "trip", "refund"],
                ["prices"], ["prices", str(prices)], ["settle", "trip", "1", "--retry"],
                ["export", "trip", "-o", str(elsewhere / "trip.py")]]
    for journal, shown in ((None, work / ".durable" / "journal.duckdb"), ("typo.duckdb", "typo.duckdb")):
        for command in commands:
            args = [*command, "--journal", journal] if journal else command
            result = _durable(*args, env=env, cwd=work)
            assert result.returncode == 1, (args, result.stdout, result.stderr)
            (line,) = (result.stdout + result.stderr).splitlines()
            assert line.startswith(f"durable {command[0]}: no journal at {shown}; ") and "pass --journal" in line
    assert list(work.iterdir()) == [] and sorted(p.name for p in elsewhere.iterdir()) == ["prices.json"]


def test_an_edited_call_reads_as_not_used_by_the_last_run(tmp_path, model_server):
    from openai import OpenAI

    import kernel_ext
    from journal import Journal
    from kernel_ext.history import load_history

    client = OpenAI(base_url=model_server.base_url, api_key="unused", max_retries=0)
    kernel_ext.session("edits", journal=tmp_path / "j.duckdb")
    for prompt in ("Plan a trip", "Plan a 4-day trip", "Plan a 4-day trip"):
        with kernel_ext.step("plan"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    [plan] = load_history(Journal(tmp_path / "j.duckdb"), "edits").steps
    assert [(c.seq, c.use) for c in plan.calls] == [(1, "not used by the last run"), (1, "replayed")]
    assert "not used by the last run" in plan.calls[0].label()
