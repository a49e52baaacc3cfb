"""`%durable export PATH` and `durable export SESSION -o FILE`: a session as a standalone script.

The script is what the session's latest kernel ran, in the order it first ran it: the plain
cells as setup code, each durable cell once, with its current body, as a `with step(NAME):`
block under the same name. So it is durable the same way as the notebook: against the
notebook's journal it replays the notebook's run, against another it runs live and resumes
after a crash. Each cell of the script starts with `# %%`, which editors show as a cell.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from journal import Journal, JournalError, write_file

from .errors import StepError
from .notebook.syntax import cell_as_python, has_statements, indent, is_async, without_annotations
from .notebook.variables import names_in
from .runtime import Session
from .secrets import redact_text


def export_from_kernel(current: Session, path: str | os.PathLike[str]) -> str:
    """`%durable export PATH`: write the kernel's current session as a script; returns what was written."""
    current.flush_cells()
    return export_from_journal(current.journal, current.name, path)


def export_from_journal(journal: Journal, session: str, output: str | os.PathLike[str]) -> str:
    """`durable export SESSION -o FILE`: write a recorded session as a script; returns what was written."""
    recording = _read(journal, session)
    path = Path(output)
    script = _Script(recording, path.name)
    text = redact_text(script.render())  # a journal written before sources were redacted may hold a key
    try:
        write_file(path, text.encode())  # owner-only, as the journal it reads
    except OSError as exc:
        raise StepError(f"cannot write the script to {path}: {exc.strerror}") from None
    message = (f"wrote {path}: session {session!r} as a script ({_count(script.setup_cells, 'setup cell')}, "
               f"{_count(script.steps, 'step')}); `python {path} --journal {recording.journal}` goes on from "
               "this journal, another journal runs it afresh")
    if recording.left_out:
        message += f"; not in it: {', '.join(recording.left_out)} (recorded, not run by the latest kernel)"
    return message


@dataclass
class _Recording:
    session: str
    notebook: str | None
    journal: Path
    last_run: datetime | None
    cells: list[dict[str, Any]]  # setup cells, and each step once, where it first ran
    bodies: dict[str, str]  # step name -> its current body
    options: dict[str, list[str]]  # step name -> the options of its latest `%%durable` line
    left_out: list[str]  # steps in the journal that the latest kernel did not run


def _read(journal: Journal, session: str) -> _Recording:
    journal.require_file()
    # Not read-only: in a kernel the session may still hold the file open for writing, and DuckDB
    # refuses a second connection of the same process with another configuration.
    with journal.open() as store:
        info = store.session_info(session)
        if info is None:
            names = store.session_names()
            raise JournalError(f"no session {session!r} in {journal.path}; its sessions: {', '.join(names) or 'none'}")
        ran = store.cells_of(session)
        if not ran:
            raise StepError(f"session {session!r} has no recorded notebook cells to export (it ran as a script, or "
                            "before cells were recorded); run its notebook again, then export")
        cells: list[dict[str, Any]] = []
        bodies: dict[str, str] = {}
        options: dict[str, list[str]] = {}
        for cell in ran:
            name = cell["step"]
            if cell["kind"] == "step":
                magic, _, body = cell["source"].partition("\n")
                options[name] = [word for word in magic.split()[1:] if word.startswith("--")]  # the latest
                if name in bodies:
                    continue
                bodies[name] = store.step_source(session, name) or body
            cells.append(cell)
        left_out = [s["name"] for s in store.steps_of(session) if s["name"] not in bodies]
    return _Recording(session, info["notebook"], journal.path.resolve(), info["updated_at"], cells, bodies, options,
                      left_out)


class _Script:
    """The text of an exported script, assembled from the recorded cells."""

    def __init__(self, recording: _Recording, filename: str) -> None:
        self.recording, self.filename = recording, filename
        self.setup_cells = sum(1 for c in recording.cells if c["kind"] == "setup")
        self.steps = len(recording.bodies)
        self.header: list[str] = []
        self.codes = [self._code(cell) for cell in recording.cells]
        assigned: set[str] = set()
        read: set[str] = set()
        for code in self.codes:
            names = names_in(code)
            assigned |= names[0] - _from_kernel_ext(code)
            read |= names[1]
        # A cell's own `step = ...` (a loop counter, say) must not hide the durable step.
        self.api = "kernel_ext." if {"step", "run_async"} & assigned else ""
        self.needs_display = "display" in read and "display" not in assigned
        self._async_names: set[str] = set()  # of the functions that run cells which await; run_async runs them

    def _code(self, cell: dict[str, Any]) -> str:
        if cell["kind"] == "step":
            translated = cell_as_python(self.recording.bodies[cell["step"]], ipython_syntax=False)
        else:
            translated = cell_as_python(cell["source"])
        self.header += [line for line in translated.header if line not in self.header]
        return translated.code.strip("\n")

    def render(self) -> str:
        parts = [self._cell(cell, code) for cell, code in zip(self.recording.cells, self.codes, strict=True)]
        names = ["run_async"] * bool(self._async_names) + ["script_session"] + ["step"] * bool(self.steps)
        future = [line for line in self.header if line.startswith("from __future__")]
        stdlib = sorted(line for line in self.header if line not in future)
        api = ["import kernel_ext" if self.api else f"from kernel_ext import {', '.join(names)}"]
        if self.needs_display:
            api += ["", "try:", "    from IPython.display import display  # rich under IPython; prints otherwise",
                    "except ImportError:  # IPython is optional for a script", "    display = print"]
        start = [f"{self.api}script_session({_literal(self.recording.session)})"]
        head = [self._docstring(), *("\n".join(lines) for lines in (future, stdlib, api, start) if lines)]
        text = "\n\n".join(head + parts) + "\n"
        _check(text, "the exported script")
        return text

    def _cell(self, cell: dict[str, Any], code: str) -> str:
        name = cell["step"]
        if cell["kind"] == "setup":
            title = "# %% setup"
            if not has_statements(code) or not _awaits(code, "a setup cell"):
                return _checked(f"{title}\n{code}", title)
            function = self._async_name("_setup")
            return _checked(f"{title} (it awaits: an async function run on the script's event loop)\n"
                            f"{self._async_def(function, code)}\n\n\n{self.api}run_async({function}())", title)
        title = f"# %% step {_literal(name)}"
        options = self.recording.options.get(name, [])
        arguments = _literal(name) + (", strict=True" if "--strict" in options else "")
        notes = "".join(f"\n# %%durable {name} {option}: not carried over (every run would send every call "
                        "again)" for option in options if option == "--rerun")
        if not has_statements(code):
            return f"{title}: its cell did not compile in the notebook{notes}\n{code}"
        if not _awaits(code, f"step {name!r}"):
            return _checked(f"{title}{notes}\nwith {self.api}step({arguments}):\n{indent(code)}", title)
        function = self._async_name("_step_" + re.sub(r"\W", "_", name))
        return _checked(f"{title} (it awaits: an async function run on the script's event loop){notes}\n"
                        f"{self._async_def(function, code)}\n\n\nwith {self.api}step({arguments}):\n"
                        f"    {self.api}run_async({function}())", title)

    def _async_def(self, function: str, code: str) -> str:
        # The notebook ran the cell in the module's namespace: what it assigns stays global, for later cells.
        code = without_annotations(code)
        assigned = sorted(names_in(code)[0])
        declaration = f"    global {', '.join(assigned)}\n" if assigned else ""
        return f"async def {function}():\n{declaration}{indent(code)}"

    def _async_name(self, base: str) -> str:
        name, n = base, 1
        while name in self._async_names:
            n += 1
            name = f"{base}_{n}"
        self._async_names.add(name)
        return name

    def _docstring(self) -> str:
        r = self.recording
        source = f", exported from notebook {r.notebook}" if r.notebook else ""
        recorded = [f"Recorded in the journal {r.journal}"]
        recorded += [f"(its last step ran {r.last_run:%Y-%m-%d %H:%M} UTC)."] if r.last_run else ["."]
        lines = [
            f"Session {r.session!r} as a standalone script{source}.",
            "",
            "\n".join(recorded).replace("\n.", "."),
            "",
            "Run it with plain Python, in the directory the notebook ran in:",
            "",
            f"    python {self.filename} [--journal PATH] [--session NAME]",
            "",
            "It is durable like the notebook: every model call, @tool call and approval is journaled, and",
            "what the journal holds for the session is replayed instead of sent or run again. Against the",
            "journal above it replays the notebook's run; after a crash, run it again and it resumes. The",
            "journal is --journal, else $DURABLE_JOURNAL, else .durable/journal.duckdb in the working directory.",
            "",
            "An approval is asked on the terminal; with no terminal (cron) the script suspends.",
            "Exit codes: 0 completed; 3 suspended, an approval waits (decide it with",
            "`durable approve SESSION KEY`, then run the script again); 1 failed; 2 usage error.",
            'What only works in a notebook is kept as comments marked "notebook-only, not run".',
        ]
        if r.left_out:
            lines += ["", f"Not in this script: {', '.join(r.left_out)} (recorded in the journal, but not run by",
                      "the notebook's latest kernel)."]
        body = "\n".join(lines).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
        return f'"""{body}\n"""'


def _awaits(code: str, where: str) -> bool:
    try:
        return is_async(code)
    except SyntaxError as exc:
        raise StepError(f"{where} cannot be exported as Python: {exc.msg} (line {exc.lineno})") from None


def _checked(text: str, title: str) -> str:
    _check(text, title.removeprefix("# %% "))
    return text


def _check(text: str, where: str) -> None:
    try:
        compile(text, "<exported script>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise StepError(f"{where} cannot be exported as Python: {exc.msg} (line {exc.lineno}: "
                        f"{(exc.text or '').strip()})") from None


def _from_kernel_ext(code: str) -> set[str]:
    """Names a cell imports from kernel_ext: binding `step` that way hides nothing."""
    return {(alias.asname or alias.name) for node in ast.parse(code).body
            if isinstance(node, ast.ImportFrom) and node.module == "kernel_ext" for alias in node.names}


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid Python string literal


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
