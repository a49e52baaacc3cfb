"""Settings (`%config Durable`, environment variables, `[tool.durable]` in pyproject.toml), the help of
`%%durable?` and `%durable?`, and the `durable` command line's help and number checks.

Where a kernel is involved it is a real one; settings alone are resolved in-process, with a real
pyproject.toml in a real folder and real environment variables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from kernel_ext.cli.main import _parser, main
from kernel_ext.config import SettingError, settings
from tests.harness import Kernel

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ENV_NAMES = ("DURABLE_JOURNAL", "DURABLE_SYNC", "DURABLE_STRICT", "DURABLE_PRICES", "DURABLE_PROGRESS")
MODEL_CALL = 'OpenAI(max_retries=0).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])'


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def _pyproject(folder: Path, table: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pyproject.toml"
    path.write_text(f'[project]\nname = "agents"\n\n[tool.durable]\n{table}\n')
    return path


def _kernel_env(kernel_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in kernel_env.items() if k not in ENV_NAMES}
    env.update(extra)
    return env


def _steps(journal: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The step names a journal holds, read as a user reads them: `durable sql`."""
    capsys.readouterr()
    assert main(["sql", "SELECT name FROM steps ORDER BY name", "--json", "--journal", str(journal)]) == 0
    return [row["name"] for row in json.loads(capsys.readouterr().out)]


def _text(outputs: list[dict]) -> str:
    shown = [o.get("text", "") or f"{o.get('ename', '')}: {o.get('evalue', '')}" for o in outputs]
    return ANSI.sub("", "\n".join(shown))


# -- where each setting comes from -------------------------------------------------------------------------

def test_pyproject_is_found_from_a_subfolder_and_its_paths_are_taken_from_its_folder(tmp_path, clean_env,
                                                                                      monkeypatch):
    _pyproject(tmp_path, 'journal = "runs/agents.duckdb"\nsync = "always"\nstrict = true\nprogress = false\n'
                         'prices = "prices.toml"')
    (tmp_path / "notebooks" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "notebooks" / "deep")
    chosen = settings()
    assert chosen.journal == tmp_path.resolve() / "runs" / "agents.duckdb"
    assert chosen.prices == tmp_path.resolve() / "prices.toml"
    assert (chosen.sync, chosen.strict, chosen.progress) == ("always", True, False)
    assert chosen.origin("sync") == f"[tool.durable] in {tmp_path.resolve() / 'pyproject.toml'}"


def test_defaults_without_any_source(tmp_path, clean_env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    chosen = settings()
    assert chosen.journal == tmp_path / ".durable" / "journal.duckdb"
    assert (chosen.sync, chosen.strict, chosen.prices, chosen.progress) == ("effects", False, None, True)
    assert set(chosen.origins.values()) == {"default"}


def test_environment_wins_over_pyproject_and_an_explicit_argument_over_both(tmp_path, clean_env, monkeypatch):
    _pyproject(tmp_path, 'journal = "project.duckdb"\nsync = "never"\nstrict = true')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DURABLE_JOURNAL", str(tmp_path / "env.duckdb"))
    monkeypatch.setenv("DURABLE_SYNC", "always")
    monkeypatch.setenv("DURABLE_STRICT", "0")
    chosen = settings()
    assert (chosen.journal, chosen.sync, chosen.strict) == (tmp_path / "env.duckdb", "always", False)
    assert chosen.origin("strict") == "DURABLE_STRICT=0"
    assert settings(journal=tmp_path / "flag.duckdb").journal == tmp_path / "flag.duckdb"
    # An empty variable is unset: pyproject.toml speaks again.
    monkeypatch.setenv("DURABLE_SYNC", "")
    assert settings().sync == "never"


@pytest.mark.parametrize("env, table, expected", [
    ({"DURABLE_SYNC": "sometimes"}, "", "DURABLE_SYNC='sometimes' is not a valid sync setting; "
                                        "valid values: always, effects, never"),
    ({"DURABLE_STRICT": "maybe"}, "", "DURABLE_STRICT='maybe' is not a valid strict setting; "
                                      "valid values: true or false (also 1/0, yes/no, on/off)"),
    ({"DURABLE_PROGRESS": "loud"}, "", "valid values: true or false"),
    ({}, 'sync = "sometimes"', "valid values: always, effects, never"),
    ({}, "strict = 3", "strict = 3 in [tool.durable] in "),
    ({}, 'jornal = "x.duckdb"', "has no setting 'jornal'; valid settings: journal, sync, strict, prices, progress"),
    # A losing source is checked too: a typo in pyproject.toml is not hidden by an environment variable.
    ({"DURABLE_SYNC": "always"}, 'sync = "sometimes"', "valid values: always, effects, never"),
])
def test_invalid_values_are_refused_in_one_line_that_lists_the_valid_ones(tmp_path, clean_env, monkeypatch, env,
                                                                          table, expected):
    _pyproject(tmp_path, table)
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingError) as raised:
        settings()
    assert expected in str(raised.value) and "\n" not in str(raised.value)


# -- the kernel: %config, pyproject.toml, the environment ---------------------------------------------------

def test_config_journal_sends_the_next_durable_cell_there(tmp_path, kernel_env, capsys):
    work = tmp_path / "work"
    work.mkdir()
    kernel = Kernel(_kernel_env(kernel_env), work)
    try:
        kernel.ok("%load_ext kernel_ext")
        listed = _text(kernel.ok("%config Durable"))
        for name in ("Durable.journal", "Durable.sync", "Durable.strict", "Durable.prices", "Durable.progress"):
            assert name in listed
        assert "always" in listed and "effects" in listed and "DURABLE_SYNC" in listed
        kernel.ok("%%durable first\nx = 1")
        moved = _text(kernel.ok("%config Durable.journal = 'moved.duckdb'"))
        assert f"durable: session 'default' now journals to {work / 'moved.duckdb'}" in moved
        kernel.ok("%%durable second\ny = x + 1")
        assert _text(kernel.ok("print(y)")).strip() == "2"
        # A cell that changes the working directory does not move the session: the setting did not change.
        kernel.ok("import os\nos.mkdir('data')\nos.chdir('data')")
        kernel.ok("%%durable third\nz = y + 1")
    finally:
        kernel.shutdown()
    assert _steps(work / ".durable" / "journal.duckdb", capsys) == ["first"]
    assert _steps(work / "moved.duckdb", capsys) == ["second", "third"]
    assert list((work / "data").iterdir()) == []


def test_pyproject_in_the_kernels_folder_sets_journal_and_strict(tmp_path, kernel_env, model_server, capsys):
    work = tmp_path / "work"
    pyproject = _pyproject(work, 'journal = "project.duckdb"\nstrict = true')
    kernel = Kernel(_kernel_env(kernel_env), work)
    try:
        kernel.ok("%load_ext kernel_ext\nfrom openai import OpenAI")
        kernel.ok("%%durable plain\nx = 1")
        status, outputs = kernel.execute(f"%%durable asks\n{MODEL_CALL}")
        assert status == "error" and "StrictReplayError" in _text(outputs)
        status, outputs = kernel.execute("%%durable again --rerun\nx = 2")
        assert status == "error"
        assert f"strict is on ([tool.durable] in {pyproject.resolve()}), so no call may go live" in _text(outputs)
    finally:
        kernel.shutdown()
    assert model_server.stats()["requests"] == 0
    assert _steps(work / "project.duckdb", capsys) == ["asks", "plain"]
    assert not (work / ".durable").exists()


def test_environment_wins_over_config_and_pyproject_in_a_kernel(tmp_path, kernel_env, capsys):
    work = tmp_path / "work"
    _pyproject(work, 'journal = "project.duckdb"')
    env_journal = tmp_path / "env.duckdb"
    kernel = Kernel(_kernel_env(kernel_env, DURABLE_JOURNAL=str(env_journal)), work)
    try:
        kernel.ok("%load_ext kernel_ext")
        said = _text(kernel.ok("%config Durable.journal = 'config.duckdb'"))
        assert f"%config Durable.journal has no effect while DURABLE_JOURNAL={env_journal} is set" in said
        kernel.ok("%%durable step\nx = 1")
        # Cleared from the notebook, the environment no longer speaks: %config does.
        kernel.ok("%env DURABLE_JOURNAL=")
        kernel.ok("%config Durable.journal = 'config.duckdb'")
        kernel.ok("%%durable later\nx = 2")
    finally:
        kernel.shutdown()
    assert _steps(env_journal, capsys) == ["step"]
    assert _steps(work / "config.duckdb", capsys) == ["later"]
    assert not (work / "project.duckdb").exists()


def test_invalid_settings_in_a_kernel_are_one_line_usage_errors(tmp_path, kernel_env):
    kernel = Kernel(_kernel_env(kernel_env, DURABLE_SYNC="sometimes"), tmp_path)
    try:
        kernel.ok("%load_ext kernel_ext")
        status, outputs = kernel.execute("%%durable s\nx = 1")
        assert status == "error"
        text = _text(outputs)
        assert "UsageError: DURABLE_SYNC='sometimes' is not a valid sync setting; " \
               "valid values: always, effects, never" in text
        assert "Traceback" not in text
        # %config refuses a bad value before it is set (IPython reports it and the cell goes on).
        said = _text(kernel.ok("%config Durable.progress = 'loud'"))
        assert "Durable.progress = 'loud' is not valid; valid values: true or false" in said
        assert _text(kernel.ok("print(get_ipython().run_line_magic('config', 'Durable.progress'))")).strip() == "None"
    finally:
        kernel.shutdown()


def test_progress_off_shows_only_the_summary_line(tmp_path, kernel_env, model_server):
    kernel = Kernel(_kernel_env(kernel_env, DURABLE_JOURNAL=str(tmp_path / "j.duckdb")), tmp_path)
    try:
        kernel.ok("%load_ext kernel_ext\nfrom openai import OpenAI")

        def states(code: str) -> list[str]:
            seen: list[str] = []

            def hook(msg: dict) -> None:
                mark = msg["content"].get("metadata", {}).get("durable")
                if msg["header"]["msg_type"] in ("display_data", "update_display_data") and mark:
                    seen.append(mark.get("state", "summary"))

            reply = kernel.kc.execute_interactive(code, output_hook=hook, timeout=60)
            assert reply["content"]["status"] == "ok"
            return seen

        assert "running" in states(f"%%durable on\n{MODEL_CALL}")
        kernel.ok("%config Durable.progress = False")
        shown = states(f"%%durable off\n{MODEL_CALL}")
        assert shown == ["summary"]
    finally:
        kernel.shutdown()
    assert model_server.stats()["requests"] == 2


def test_prices_setting_is_loaded_into_the_journal(tmp_path, kernel_env):
    prices = tmp_path / "prices.toml"
    prices.write_text('[scripted-model]\ninput = 1.5\noutput = 2.0\ncurrency = "EUR"\n')
    kernel = Kernel(_kernel_env(kernel_env, DURABLE_JOURNAL=str(tmp_path / "j.duckdb"),
                                DURABLE_PRICES=str(prices)), tmp_path)
    try:
        kernel.ok("%load_ext kernel_ext")
        kernel.ok("%%durable s\nx = 1")
        shown = _text(kernel.ok("%durable prices"))
    finally:
        kernel.shutdown()
    assert "scripted-model  1.5  2  EUR" in shown and f"(from {prices})" in shown


# -- help and usage errors of the magics ----------------------------------------------------------------------

def _help(kernel: Kernel, code: str) -> str:
    reply = kernel.kc.execute_interactive(code, timeout=60)
    assert reply["content"]["status"] == "ok"
    pages = [p["data"]["text/plain"] for p in reply["content"].get("payload", []) if p.get("source") == "page"]
    assert pages, reply["content"]
    return ANSI.sub("", "".join(pages))


def test_magic_help_shows_the_options_and_every_command(kernel):
    kernel.ok("%load_ext kernel_ext")
    cell = _help(kernel, "%%durable?")
    assert "%%durable [NAME] [--strict] [--rerun] [--budget-tokens N] [--budget-usd X]" in cell
    for option in ("NAME", "--strict", "--rerun", "--budget-tokens N", "--budget-usd X"):
        assert re.search(rf"^\s+{re.escape(option)}\s+\S", cell, re.MULTILINE), option
    line = _help(kernel, "%durable?")
    for usage in ("session NAME [--budget-tokens N] [--budget-usd X]", "status", "history [SESSION]", "sql QUERY",
                  "fork NEW [--from STEP]", "forget STEP",
                  "restore", "settle CALL_ID --value JSON|--retry", "approvals", "prices [FILE]",
                  "export PATH [--engine dbos]"):
        assert f"%durable {usage}\n" in line, usage
    assert "--from: copy only the steps" in line and "%config Durable" in line


def test_unknown_or_malformed_commands_are_usage_errors_that_show_the_valid_ones(kernel):
    kernel.ok("%load_ext kernel_ext")
    cases = {
        "%durable sesion x": "UsageError: unknown %durable command 'sesion'; available: session NAME "
                             "[--budget-tokens N] [--budget-usd X], status, "
                             "history [SESSION], sql QUERY, fork NEW [--from STEP], forget STEP, restore, "
                             "settle CALL_ID --value JSON|--retry, approvals, prices [FILE], export PATH",
        "%durable fork": "UsageError: %durable fork: the following arguments are required: NEW; "
                         "usage: %durable fork NEW [--from STEP]",
        "%durable settle 4": "--value JSON or --retry is missing; usage: %durable settle CALL_ID --value JSON|--retry",
        "%durable status now": "unrecognized arguments: now; usage: %durable status",
        "%%durable a --strikt\nx = 1": "UsageError: %%durable: unrecognized arguments: --strikt; "
                                       "usage: %%durable [NAME] [--strict] [--rerun] [--budget-tokens N] "
                                       "[--budget-usd X]",
    }
    for code, expected in cases.items():
        status, outputs = kernel.execute(code)
        assert status == "error" and expected in _text(outputs), (code, _text(outputs))


# -- the command line ----------------------------------------------------------------------------------------

def _commands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_and_positional_argument_has_help(capsys):
    (action,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert {choice.dest for choice in action._choices_actions if choice.help} == set(action.choices)
    for name, command in _commands().items():
        positionals = [a for a in command._actions if not a.option_strings]
        for argument in positionals:
            assert argument.help, f"durable {name} {argument.dest} has no help"
        capsys.readouterr()
        assert main([name, "--help"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert shown.startswith(f"usage: durable {name}")
        for argument in positionals:
            assert " ".join(argument.help.split()[:3]) in shown, (name, argument.dest)


@pytest.mark.parametrize("argv, line", [
    (["model", "--port", "70000"], "durable model: --port takes 0 to 65535, got 70000"),
    (["model", "--port", "-1"], "durable model: --port takes 0 to 65535, got -1"),
    (["model", "--tool-rounds", "-2"], "durable model: --tool-rounds takes a whole number >= 0, got -2"),
    (["demo", "--turns", "0"], "durable demo: --turns takes a whole number >= 1, got 0"),
    (["demo", "--turns", "two"], "durable demo: --turns takes a whole number >= 1, got two"),
    (["demo", "--latency", "-0.5"], "durable demo: --latency takes a number of seconds >= 0, got -0.5"),
    (["demo", "--turns", "3", "--kill-at", "5"],
     "durable demo: --kill-at takes 1 to 4 (with --turns 3 the notebook makes 4 calls), got 5"),
    (["run", "n.ipynb", "--timeout", "-5"], "durable run: --timeout takes a positive number of seconds, got -5"),
    (["run", "n.ipynb", "--timeout", "inf"], "durable run: --timeout takes a positive number of seconds, got inf"),
    (["settle", "s", "0", "--retry"], "durable settle: CALL_ID takes a whole number >= 1, got 0"),
])
def test_invalid_numbers_exit_2_with_one_line(argv, line, capsys, tmp_path, monkeypatch, clean_env):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [line] and captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_exits_2_on_a_bad_number_and_a_bad_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    bad_port = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "model", "--port", "65536"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert bad_port.returncode == 2 and bad_port.stderr == "durable model: --port takes 0 to 65535, got 65536\n"
    bad_sync = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "ls"], capture_output=True, text=True,
                              env={**env, "DURABLE_SYNC": "sometimes"}, cwd=tmp_path, timeout=60)
    assert bad_sync.returncode == 2
    assert bad_sync.stderr == ("durable ls: DURABLE_SYNC='sometimes' is not a valid sync setting; "
                               "valid values: always, effects, never\n")


def test_cli_journal_is_flag_then_environment_then_pyproject(tmp_path, clean_env, monkeypatch, capsys):
    _pyproject(tmp_path, 'journal = "project.duckdb"')
    monkeypatch.chdir(tmp_path)

    def refused_at() -> str:
        capsys.readouterr()
        assert main(["ls", *flag]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        return line.split("no journal at ", 1)[1].split(";")[0]

    flag: list[str] = []
    assert refused_at() == str(tmp_path.resolve() / "project.duckdb")
    monkeypatch.setenv("DURABLE_JOURNAL", str(tmp_path / "env.duckdb"))
    assert refused_at() == str(tmp_path / "env.duckdb")
    flag = ["--journal", str(tmp_path / "flag.duckdb")]
    assert refused_at() == str(tmp_path / "flag.duckdb")


def test_durable_run_journals_where_pyproject_says_and_shows_no_kernel_transport_warning(tmp_path):
    _pyproject(tmp_path, 'journal = "runs/project.duckdb"')
    notebook = tmp_path / "n.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("%load_ext kernel_ext"), new_code_cell("%%durable s\nx = 1")]),
                   notebook)
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    result = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "run", str(notebook)], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"journal: {tmp_path.resolve() / 'runs' / 'project.duckdb'}" in result.stdout
    # ipykernel warns at every start that TCP is unencrypted; `durable run` uses IPC, so nothing to warn about.
    assert "TCP" not in result.stderr and "encryption" not in result.stderr, result.stderr
    assert not (tmp_path / ".durable").exists()
