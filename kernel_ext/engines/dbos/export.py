"""`durable export SESSION --engine dbos -o app.py`: a recorded session as a DBOS application.

The app is the notebook's setup cells at module level (run by every worker) and its durable
cells as the steps of one DBOS workflow per session, each session in a namespace of its own
(names passed with `--input` override the setup's). Beside it, `app.recording` packs the
notebook's recorded calls: the app replays them, so its first run pays for none of them again.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from journal import Journal, write_file

from ...errors import StepError
from ...export import _check, _read
from ...notebook.syntax import cell_as_python, has_statements, is_async
from ...secrets import redact_text
from .workflow import Recording


def export_dbos(journal: Journal, session: str, output: str | os.PathLike[str]) -> str:
    """Write the DBOS app and its recording; returns what was written."""
    recorded = _read(journal, session)
    path = Path(output)
    if path.suffix != ".py":
        raise StepError(f"the DBOS app is a Python file: name it *.py, not {path.name}")
    header: list[str] = []
    setup: list[str] = []
    steps: list[tuple[str | None, str]] = []  # (step name, code); None: a plain cell that ran between steps
    for cell in recorded.cells:
        name = cell["step"]
        if cell["kind"] == "setup":
            translated = cell_as_python(cell["source"])
            code = translated.code.strip("\n")
            if not has_statements(code):
                continue  # a notebook-only line (%load_ext, %durable session): nothing for the app to run
            if is_async(code):
                raise StepError("a setup cell awaits at its top level: the DBOS export does not run those yet")
            header += [line for line in translated.header if line not in header]
            if steps:  # after a step it may read what steps assigned: it runs in the session's namespace
                steps.append((None, code + "\n"))
            else:
                setup.append(f"# %% setup\n{code}")
            continue
        code = cell_as_python(recorded.bodies[name], ipython_syntax=False).code.strip("\n")
        if has_statements(code) and is_async(code):
            raise StepError(f"step {name!r} awaits at its top level: the DBOS export runs synchronous steps only "
                            "(yet); call the sync client in it, or export it as a script")
        steps.append((name, code + "\n"))
    names = [name for name, _ in steps if name is not None]
    if not names:
        raise StepError(f"session {session!r} has no durable steps to run as a workflow")
    pack = Recording.from_journal(journal, session, names)
    text = redact_text(_render(recorded.session, recorded.notebook, header, setup, steps, path.name))
    _check(text, "the exported app")
    try:
        write_file(path, text.encode())  # owner-only, as the journal it reads
        pack.save(path.with_suffix(".recording"))
    except OSError as exc:
        raise StepError(f"cannot write the app to {path}: {exc.strerror}") from None
    return (f"wrote {path} and {path.with_suffix('.recording').name}: session {session!r} as a DBOS app "
            f"({len(names)} step{'s' * (len(names) != 1)}, {pack.count()} recorded calls it replays); "
            f"`python {path.name} run` runs it here, `python {path.name} --workers N` serves a queue "
            "(store: $DBOS_SYSTEM_DATABASE_URL, else SQLite beside the app)")


def _render(session: str, notebook: str | None, header: list[str], setup: list[str],
            steps: list[tuple[str | None, str]], filename: str) -> str:
    source = f", exported from notebook {notebook}" if notebook else ""
    doc = "\n".join([
        f'"""Session {session!r} as a DBOS application{source}.',
        "",
        "Each session is one DBOS workflow running STEPS below in order, in a namespace of its own (a",
        "step named None is a plain cell that ran between steps in the notebook: not a durable step);",
        "every model call, @tool call, approval and now()/uuid()/random() in them is a DBOS step,",
        "checkpointed before the program goes on. The notebook's recorded calls (in the .recording file",
        "beside this one) are replayed, not sent again.",
        "",
        f"    python {filename} run [--session ID] [--input NAME=VALUE ...]",
        f"    python {filename} enqueue ID [ID ...] [--input NAME=VALUE ...]",
        f"    python {filename} --workers N [--concurrency M]",
        f"    python {filename} wait ID [ID ...]",
        "",
        "Store: $DBOS_SYSTEM_DATABASE_URL (Postgres: many workers, many machines), else a SQLite file",
        "beside this one (one process). Decide an approval with `durable approve ID KEY --dbos URL`.",
        '"""',
    ])
    future = [line for line in header if line.startswith("from __future__")]
    others = sorted(line for line in header if line not in future)
    entries = "\n".join(f"    ({json.dumps(name, ensure_ascii=False) if name else 'None'}, {_triple(code)}),"
                        for name, code in steps)
    parts = [doc, *("\n".join(lines) for lines in (future, others) if lines), *setup,
             "# %% the steps of each session's workflow, in order\nSTEPS = [\n" + entries + "\n]",
             'if __name__ == "__main__":\n    from kernel_ext.engines.dbos.app import main\n\n'
             f"    raise SystemExit(main(__file__, globals(), STEPS, session={json.dumps(session)}))"]
    return "\n\n\n".join(parts) + "\n"


def _triple(code: str) -> str:
    """`code` as a triple-quoted literal that reads like the cell."""
    literal = '"""\\\n' + code.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + '"""'
    if ast.literal_eval(literal) != code:  # a guard: the app must run exactly the recorded cell
        literal = repr(code)
    return literal
