"""The terminal output rich draws: `durable run`'s progress, the tables of `durable ls`, `durable sql` and
`%durable status`. On a terminal it is styled and redrawn in place; anywhere else (a pipe, a log, a notebook)
it is plain text: no escape codes, one line per row whatever its width, nothing read as markup.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from nbformat.v4 import new_code_cell, new_notebook

from kernel_ext.cli.run import Progress
from kernel_ext.cli.show import list_sessions
from kernel_ext.sql import QueryTable

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
WHEN = datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc)
LONG = " and ".join(["a session with a name far longer than any terminal is wide"] * 3)


class Terminal(io.StringIO):
    """What rich takes for a terminal: it asks the stream."""

    def isatty(self) -> bool:
        return True


class FakeJournal:
    """`durable ls` reads one overview from the journal; these are its rows, as journal/_history.py makes them."""

    path = "fake.duckdb"

    def __init__(self, sessions: list[dict]) -> None:
        self.sessions = sessions

    @contextmanager
    def open(self, read_only: bool = False):
        yield self

    def sessions_overview(self) -> list[dict]:
        return self.sessions


def _session(name: str, **changes) -> dict:
    row = {"session": name, "status": "completed", "steps": 2, "steps_completed": 2, "calls": 5, "tokens": 1234,
           "cost": None, "pending_approvals": 0, "last_activity": WHEN, "sleeping_until": None}
    return {**row, **changes}


def _notebook(*sources: str):
    return new_notebook(cells=[new_code_cell(s) for s in sources])


def _run_cells(progress: Progress, notebook, *, last_finishes: bool = True) -> None:
    for index, cell in enumerate(notebook.cells):
        progress.cell_started(cell, index)
        if index < len(notebook.cells) - 1 or last_finishes:
            progress.cell_finished(cell, index, {"content": {"status": "ok"}})
    progress.close()


def test_ls_piped_is_plain_text_one_line_per_session(capsys):
    sessions = [_session("trip"), _session(LONG, status="suspended", steps_completed=1, pending_approvals=2),
                _session("[bold]shop[/bold] :smile:", status="running", steps=12, steps_completed=10, calls=123456)]
    assert list_sessions(FakeJournal(sessions), as_json=False) == 0
    out = capsys.readouterr().out
    assert not ESCAPE.search(out)
    lines = out.splitlines()
    assert len(lines) == 4, out  # a header and one line per session: the long name is neither wrapped nor cut
    assert lines[0].split() == ["session", "status", "steps", "calls", "tokens", "last", "activity"]
    assert lines[1].split() == ["trip", "completed", "2/2", "5", "1234", "2026-03-04", "05:06", "UTC"]
    assert lines[2].startswith(LONG + "  suspended  ")
    assert lines[2].endswith("  2026-03-04 05:06 UTC  (2 approvals pending)")
    # Names are shown as they are, not read as rich's markup or emoji codes.
    assert lines[3].split()[:4] == ["[bold]shop[/bold]", ":smile:", "running", "10/12"]
    # Numbers are aligned on their right, under their heading's end; nothing is left at the end of a line.
    for column in ("steps", "calls", "tokens"):
        end = lines[0].index(column) + len(column)
        assert all(line[end - 1] != " " and line[end] == " " for line in lines[1:]), (column, out)
    assert all(line == line.rstrip() for line in lines)


def test_ls_shows_cost_only_once_a_price_is_set(capsys):
    list_sessions(FakeJournal([_session("trip")]), as_json=False)
    assert "cost" not in capsys.readouterr().out
    wake = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    list_sessions(FakeJournal([_session("trip", cost=0.01234), _session("free", sleeping_until=wake)]), as_json=False)
    header, priced, unpriced = capsys.readouterr().out.splitlines()
    assert header.split()[:6] == ["session", "status", "steps", "calls", "tokens", "cost"]
    assert priced.split()[5] == "0.0123" and unpriced.split()[5] == "-"
    assert "(sleeping until " in unpriced


def test_ls_on_a_terminal_is_styled_and_keeps_its_rows(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    list_sessions(FakeJournal([_session("trip")]), as_json=False)
    shown = terminal.getvalue()
    assert "\x1b[1m" in shown  # the heading, in bold
    assert ESCAPE.sub("", shown).splitlines()[1].split()[:3] == ["trip", "completed", "2/2"]


def test_sql_table_piped_and_as_a_value(capsys):
    table = QueryTable(["step", "kind", "name"], [("research", "llm", "chat.completions"), ("plan", "tool", None),
                                                 ("[m]", "value", "x" * 300)])
    text = repr(table)
    lines = text.splitlines()
    assert lines[0].split() == ["step", "kind", "name"] and lines[-1] == "(3 rows)"
    assert lines[1].split() == ["research", "llm", "chat.completions"]
    assert lines[2].split() == ["plan", "tool"]  # NULL is shown as nothing
    assert lines[3].split() == ["[m]", "value", "x" * 300]
    assert all(line == line.rstrip() for line in lines)
    # `durable sql` prints to a pipe what the value shows.
    from kernel_ext.cli.terminal import echo

    echo(*table.shown())
    assert capsys.readouterr().out == text + "\n"
    assert repr(QueryTable(["n"], [])).splitlines() == ["n", "(0 rows)"]


def test_run_progress_in_a_log_is_a_line_per_cell():
    log = io.StringIO()
    notebook = _notebook("%load_ext kernel_ext", "%%durable plan\nx = 1", 'print("[red]x[/red]")')
    _run_cells(Progress(notebook, log), notebook, last_finishes=False)
    lines = log.getvalue().splitlines()
    assert not ESCAPE.search(log.getvalue())
    assert [re.sub(r"\d+\.\d s", "T", line) for line in lines] == [
        "[1/3] %load_ext kernel_ext: ok in T (T in all)",
        "[2/3] step plan: ok in T (T in all)",
        '[3/3] print("[red]x[/red]"): stopped in T (T in all)',  # the kernel died, or the run timed out, in it
    ]


def test_run_progress_on_a_terminal_is_one_bar_redrawn_in_place(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    terminal = Terminal()
    notebook = _notebook("%load_ext kernel_ext", "%%durable plan\nx = 1", 'print("[red]x[/red]")')
    progress = Progress(notebook, terminal)
    _run_cells(progress, notebook)
    shown = terminal.getvalue()
    assert "\r\x1b[2K" in shown  # back to the start of the line, and clear it
    plain = ESCAPE.sub("", shown)
    assert not re.search(r"^\[\d+/\d+\]", plain, re.M), "a line per cell instead of a bar redrawn in place"
    frames = [frame.strip() for frame in plain.split("\r")]
    assert any(re.fullmatch(r"\S+ 2/3  step plan \d+:\d\d:\d\d", f) for f in frames), frames
    # Code is shown as it is: "[red]" in it is no markup.
    assert re.fullmatch(r'\S+ 3/3  print\("\[red\]x\[/red\]"\) \d+:\d\d:\d\d', frames[-1]), frames
    assert shown.endswith("\n\x1b[?25h")  # the last picture stays, on its own line, and the cursor is back
    assert "\x1b[3" in shown or "\x1b[9" in shown  # coloured


def test_run_progress_honours_no_color_and_a_dumb_terminal(monkeypatch):
    notebook = _notebook("%%durable plan\nx = 1")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = Terminal()
    _run_cells(Progress(notebook, terminal), notebook)
    assert "1/1  step plan" in terminal.getvalue()
    assert not re.search(r"\x1b\[[0-9;]*(3|9)\dm", terminal.getvalue()), repr(terminal.getvalue())
    # A terminal that cannot redraw a line gets the lines of a log.
    monkeypatch.setenv("TERM", "dumb")
    terminal = Terminal()
    _run_cells(Progress(notebook, terminal), notebook)
    assert re.fullmatch(r"\[1/1\] step plan: ok in \d+\.\d s \(\d+\.\d s in all\)\n", terminal.getvalue())


def test_status_table_in_a_notebook_is_plain(tmp_path):
    import kernel_ext
    from kernel_ext.status import render_status

    current = kernel_ext.session("status", journal=tmp_path / "j.duckdb")
    for name in ("plan", "a step with a [long] name"):
        with kernel_ext.step(name):
            pass
    lines = render_status(current).splitlines()
    assert not ESCAPE.search("\n".join(lines))
    header = next(i for i, line in enumerate(lines) if line.startswith("step "))
    assert lines[header].split() == ["step", "status", "calls", "tokens", "runs", "last", "run"]
    rows = [line.split("  ") for line in lines[header + 1:]]
    assert [[cell.strip() for cell in row if cell.strip()][:5] for row in rows] == [
        ["plan", "completed", "0", "0", "1"], ["a step with a [long] name", "completed", "0", "0", "1"]]


def test_commands_that_draw_no_table_do_not_import_rich():
    check = ("import sys\nfrom kernel_ext.cli.main import main\nmain(['ls', '--help'])\n"
             "assert 'rich' not in sys.modules, 'rich imported'")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
