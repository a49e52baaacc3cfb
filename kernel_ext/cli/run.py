"""`durable run`: execute a notebook headless (nbclient, a real kernel) as a durable session.

Killing the runner loses nothing. jupyter_client starts the kernel as a dependent child
(JPY_PARENT_PID), and ipykernel's parent poller makes such a kernel exit within about a
second of losing its parent, so the session it held is free again well before the next
run's kernel is up (that takes a few seconds). What the kernel had journaled stays; the
next run replays it and sends only the call that was in flight.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from journal import Journal, JournalError, Store, default_path, now

from ..approvals import decide_command, journal_option
from ..exit_codes import EXIT_COMPLETED, EXIT_FAILED, EXIT_SUSPENDED, EXIT_USAGE
from ..notebook.outputs import step_summaries

if TYPE_CHECKING:
    from rich.progress import Progress as Bar

_SKIP_TAG = "skip-execution"  # nbclient does not run cells tagged so (its skip_cells_with_tag default)
# ipykernel warns on stderr at every start that TCP is unencrypted, which is true but no news on loopback
# and drowns the run's own lines; IPC sockets are owner-only files, so it has no reason to.
_MAX_SOCKET_PATH = 100  # a Unix socket's path has to fit in 108 bytes, with "-N" appended per channel


def kernel_options() -> dict[str, str]:
    """Kernel manager options for an IPC kernel; none (TCP) where IPC is unavailable."""
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = Path(jupyter_runtime_dir())
    # Absolute: the default IPC path is relative, and the kernel runs in another working directory.
    ip = runtime / f"dk-{uuid.uuid4().hex[:12]}-ipc"
    if os.name == "nt" or len(str(ip)) > _MAX_SOCKET_PATH:  # ZeroMQ has no IPC on Windows
        return {}
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {"transport": "ipc", "ip": str(ip)}


def kernel_config() -> Any:
    """Config for nbclient's kernel manager: `kernel_options()`."""
    from traitlets.config import Config

    config = Config()
    for name, value in kernel_options().items():
        setattr(config.KernelManager, name, value)
    return config


def run(path: Path, *, session: str | None, journal: Path | None, output: Path | None, timeout: float,
        strict: bool = False, max_wait: float | None = None, budget_tokens: float | None = None,
        budget_usd: float | None = None) -> int:
    problem = _check_arguments(path, output)
    if problem is not None:
        print(f"durable run: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # Imported after the checks: they take longer to import than a mistyped path takes to report.
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    journal_path = (journal or default_path()).resolve()
    env = dict(os.environ, DURABLE_HEADLESS="1", JPY_SESSION_NAME=str(path.resolve()),
               DURABLE_JOURNAL=str(journal_path))
    if session:
        env["DURABLE_SESSION"] = session
    if strict:
        env["DURABLE_STRICT"] = "1"
    # The kernel reads these as settings: the environment comes before %config in the notebook.
    for name, value in (("DURABLE_MAX_WAIT", max_wait), ("DURABLE_BUDGET_TOKENS", budget_tokens),
                        ("DURABLE_BUDGET_USD", budget_usd)):
        if value is not None:
            env[name] = f"{value:g}"
    progress = Progress(nb, sys.stderr)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", config=kernel_config(),
                            resources={"metadata": {"path": str(path.resolve().parent)}},
                            on_cell_execute=progress.cell_started, on_cell_executed=progress.cell_finished)
    since = now()
    code, status, detail = EXIT_COMPLETED, "completed", None
    try:
        client.execute(cwd=str(path.resolve().parent), env=env)
    except CellExecutionError as exc:
        if exc.ename == "StepSuspended":
            code, status = EXIT_SUSPENDED, "suspended (waiting for a decision)"
        elif exc.ename == "BudgetExceeded":
            code, status, detail = EXIT_SUSPENDED, "suspended (budget spent)", exc.evalue
        elif exc.ename == "SleepSuspended":
            again = [str(path), "--journal", str(journal_path), *(["--session", session] if session else []),
                     *(["--strict"] if strict else []), *(["--max-wait", f"{max_wait:g}"] if max_wait != 60 else [])]
            code, status = EXIT_SUSPENDED, "suspended (sleeping)"
            detail = f"{exc.evalue}: durable run {' '.join(shlex.quote(a) for a in again)}"
        else:
            # The line the notebook shows for the error (our errors show no traceback there either).
            strict = exc.ename in ("StrictReplayError", "UnjournaledToolError")
            code, status = EXIT_FAILED, "failed (strict)" if strict else "failed"
            detail = f"{progress.where()}: {exc.ename}: {exc.evalue}"
    except CellTimeoutError:
        code, status, detail = EXIT_FAILED, "failed", f"{progress.where()} ran longer than --timeout {timeout:g} s"
    except DeadKernelError:
        code, status, detail = EXIT_FAILED, "failed", f"the kernel died at {progress.where()}"
    finally:
        progress.close()
        if output is not None:
            _write_atomically(nb, output)
    print(f"durable run {path.name}: {status} after {progress.elapsed():.1f} s")
    for line in ([detail] if detail else []) + _summary(journal_path, since, step_summaries(nb)):
        print(f"  {line}")
    print(f"  journal: {journal_path}")
    return code


def _check_arguments(path: Path, output: Path | None) -> str | None:
    """What is wrong with the notebook or output path, in one line; None when they can be used.

    Only what needs no kernel machinery, so that a mistyped path is reported at once.
    """
    if not path.exists():
        return f"no notebook at {path}; pass the path of an .ipynb file"
    if path.is_dir():
        return f"{path} is a folder; pass the path of an .ipynb file in it"
    try:
        with path.open("rb") as file:
            content = json.load(file)
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror or exc})"
    except ValueError:  # also a UnicodeDecodeError
        return f"{path} is not a notebook (not JSON); pass the path of an .ipynb file"
    if not isinstance(content, dict) or not ("cells" in content or "worksheets" in content):  # v4, or v3
        return f"{path} is not a notebook (JSON without cells); pass the path of an .ipynb file"
    if output is not None:
        if output.is_dir():
            return f"-o {output} is a folder; pass the path of the notebook to write"
        if not output.parent.is_dir():
            return f"-o {output}: there is no folder {output.parent}; create it first"
    return None


class Progress:
    """Where a run is, on stderr: a bar redrawn in place on a terminal, one line per cell in a log.

    Its methods are nbclient's `on_cell_execute` and `on_cell_executed` hooks.
    """

    def __init__(self, notebook: Any, stream: TextIO) -> None:
        self.stream = stream
        self.total = sum(1 for c in notebook.cells if c.cell_type == "code" and c.source.strip()
                         and _SKIP_TAG not in c.metadata.get("tags", []))
        self.done = 0
        self.started = time.monotonic()
        self.last: tuple[int, str] | None = None  # position and label of the latest cell started
        self._cell_started = 0.0
        self._running = False
        self._bar = _bar(stream)
        self._task = self._bar.add_task("", total=self.total, start=False) if self._bar is not None else None

    def cell_started(self, cell: Any, cell_index: int, **_: Any) -> None:
        position, label = self.last = (self.done + 1, _cell_label(cell.source))
        self._cell_started, self._running = time.monotonic(), True
        if self._bar is not None:
            # The clock starts again with each cell: during a long model call it shows how long the call has
            # waited, and that the run is alive.
            self._bar.reset(self._task, completed=self.done, description=f"{position}/{self.total}  {label}")
            self._bar.start()

    def cell_finished(self, cell: Any, cell_index: int, execute_reply: dict[str, Any], **_: Any) -> None:
        content = execute_reply.get("content", {})
        if content.get("status", "ok") == "ok":
            outcome = "ok"
        elif content.get("ename") == "StepSuspended":
            outcome = "suspended"
        else:
            outcome = f"failed ({content.get('ename', 'error')})"
        self.done += 1
        self._running = False
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        else:
            self._line(outcome)

    def close(self) -> None:
        """End the display; a cell still running (its kernel died, the run timed out) is reported as stopped."""
        if self._bar is not None:
            self._bar.stop()
        elif self._running:
            self._line("stopped")
        self._running = False

    def where(self) -> str:
        """The cell the run was in, for error messages."""
        if self.last is None:
            return "start-up"
        position, label = self.last
        return f"cell {position}/{self.total} ({label})"

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _line(self, outcome: str) -> None:
        position, label = self.last or (0, "")
        seconds = time.monotonic() - self._cell_started
        self.stream.write(f"[{position}/{self.total}] {label}: {outcome} in {seconds:.1f} s "
                          f"({self.elapsed():.1f} s in all)\n")
        self.stream.flush()


def _bar(stream: TextIO) -> Bar | None:
    """A rich progress bar on `stream` where it is a terminal that can redraw a line; None elsewhere."""
    if not stream.isatty():  # a log or a pipe: rich is not even imported
        return None
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    from .terminal import console

    # rich's own colour of a full bar is an RGB green that a 16-colour terminal turns grey, as if nothing were
    # done. Not markup: a cell's first line is code, and "[red]" in it must show as it is. stdout is left alone:
    # it is the run's report, and rich would move what is printed there to the bar's stream.
    bar = Bar(BarColumn(bar_width=20, finished_style="green"), TextColumn("{task.description}", markup=False),
              TimeElapsedColumn(), console=console(stream), refresh_per_second=2, redirect_stdout=False)
    if not bar.console.is_interactive:  # TERM=dumb: no redrawing in place, so the lines of a log
        return None
    return bar


def _cell_label(source: str) -> str:
    """How a cell is named in the progress display: `step NAME` for a durable cell, else its first line."""
    first = source.strip().split("\n", 1)[0].strip()
    if first == "%%durable" or first.startswith("%%durable "):
        # The step's name is the magic's one positional argument; options start with "-".
        name = next((word for word in first.split()[1:] if not word.startswith("-")), None)
        return f"step {name}" if name else "step (unnamed)"
    return first if len(first) <= 40 else first[:39] + "\u2026"


def _summary(journal_path: Path, since: datetime, marks: list[dict[str, Any]]) -> list[str]:
    """What the run did, from the journal: steps, calls, tokens and pending approvals, per session."""
    if not journal_path.is_file():
        return ["no durable step ran"]
    try:
        # Waits (Journal's retry) while the kernel that just shut down still writes its release.
        with Journal(journal_path).open() as store:
            names = [s["session"] for s in store.sessions_overview()
                     if s["last_activity"] is not None and s["last_activity"] >= since]
            lines: list[str] = []
            for name in names:
                holder = store.session_holder(name)
                if holder is not None and holder.is_alive():
                    continue  # another process drives it right now: its activity is not this run's
                lines += _session_summary(store, name, since, marks)
    except JournalError as exc:
        return [f"no summary: {exc}"]
    return lines or ["no durable step ran"]


def _session_summary(store: Store, name: str, since: datetime, marks: list[dict[str, Any]]) -> list[str]:
    steps = [s for s in store.steps_of(name) if s["updated_at"] is not None and s["updated_at"] >= since]
    by_status: dict[str, list[str]] = {}
    for step in steps:
        by_status.setdefault(step["status"], []).append(step["name"])
    completed = by_status.pop("completed", [])
    # A step's replayed calls leave no row, so they are counted from the marks the finished steps showed.
    mine = [m for m in marks if m["step"] in completed]
    whole = sum(1 for m in mine if m["live"] == 0 and m["replayed"] > 0)
    text = f"session {name}: {_count(len(completed), 'step')} completed"
    if whole:
        text += f", {whole} of them replayed entirely"
    for status, names in by_status.items():
        # A step still 'running' after its run ended was cut off: its kernel died inside it.
        shown = "interrupted" if status == "running" else status
        text += f"; {len(names)} {shown} ({', '.join(names)})"
    calls = [c for step_calls in store.session_calls(name).values() for c in step_calls]
    live = [c for c in calls if c["started_at"] is not None and c["started_at"] >= since]
    lines = [text, f"calls: {sum(m['replayed'] for m in mine)} replayed, {len(live)} live; "
                   f"tokens: {_tokens(live):,} spent in this run, {_tokens(calls):,} in the session"]
    ran = {step["name"] for step in steps}
    for mark in marks:
        if mark["step"] in ran:
            lines += [f"warning, step {mark['step']}: {w}" for w in mark.get("warnings", ())]
    journal = journal_option(store.journal)
    for approval in store.approvals(name, pending_only=True):
        lines.append(f"pending approval {approval['key']} (step {approval['step']}): {approval['prompt']}")
        lines.append(f"  decide: {decide_command(name, approval['key'], journal)}; then run again")
    return lines


def _tokens(calls: list[dict[str, Any]]) -> int:
    return sum((c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in calls)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _write_atomically(nb: Any, output: Path) -> None:
    # A runner killed while writing must not leave half a notebook where a whole one was.
    import nbformat

    partial = output.with_name(f".{output.name}.partial")
    nbformat.write(nb, partial)
    os.replace(partial, output)
