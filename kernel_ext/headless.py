"""`durable run`: execute a notebook headless (nbclient, a real kernel) as a durable session."""

from __future__ import annotations

import os
from pathlib import Path

from journal import default_path

from .cli_codes import EXIT_COMPLETED, EXIT_FAILED, EXIT_SUSPENDED, EXIT_USAGE
from .outputs import step_summaries


def run(path: Path, *, session: str | None, journal: Path | None, output: Path | None, timeout: float,
        strict: bool = False) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    if not path.is_file():
        print(f"durable run: no notebook at {path}")
        return EXIT_USAGE
    nb = nbformat.read(path, as_version=4)
    journal_path = (journal or default_path()).resolve()
    env = dict(os.environ, DURABLE_HEADLESS="1", JPY_SESSION_NAME=str(path.resolve()),
               DURABLE_JOURNAL=str(journal_path))
    if session:
        env["DURABLE_SESSION"] = session
    if strict:
        env["DURABLE_STRICT"] = "1"
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.resolve().parent)}})
    code, message = EXIT_COMPLETED, "completed"
    try:
        client.execute(cwd=str(path.resolve().parent), env=env)
    except CellExecutionError as exc:
        if exc.ename == "StepSuspended":
            code, message = EXIT_SUSPENDED, f"suspended: {exc.evalue}"
        elif exc.ename == "StrictReplayError":
            code, message = EXIT_FAILED, f"failed (strict): {exc.evalue}"
        else:
            code, message = EXIT_FAILED, f"failed: {exc.ename}: {exc.evalue}"
    except DeadKernelError as exc:
        code, message = EXIT_FAILED, f"failed: the kernel died ({exc})"
    finally:
        if output is not None:
            nbformat.write(nb, output)
    marks = step_summaries(nb)
    replayed, live = sum(m["replayed"] for m in marks), sum(m["live"] for m in marks)
    print(f"durable run {path.name}: {message}")
    print(f"  steps finished: {len(marks)}; calls replayed: {replayed}, live: {live}; journal: {journal_path}")
    return code
