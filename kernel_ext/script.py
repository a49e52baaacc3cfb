"""What a durable script needs beyond `step`: its command line, exit code 3, and one event loop.

`durable export` writes scripts that start with `script_session(NAME)` and run the steps that
awaited at the top level of a notebook cell with `run_async(...)`. Both are plain helpers a
script written by hand can use as well.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .runtime import Session, session

T = TypeVar("T")

EXIT_CODES = "exit codes: 0 completed, 3 suspended (an approval waits: decide it with `durable approve`, " \
             "then run the script again), 1 failed, 2 usage error"


def script_session(name: str, argv: Sequence[str] | None = None) -> Session:
    """Make this script's session current: `python SCRIPT [--journal PATH] [--session NAME]`.

    The journal defaults to the `journal` setting ($DURABLE_JOURNAL, else [tool.durable] in the
    nearest pyproject.toml, else `.durable/journal.duckdb` in the working directory); the session
    to $DURABLE_SESSION, else `name`. A step that suspends for an approval ends the script
    with exit code 3 and the command that decides it, instead of a traceback.
    """
    import argparse

    main = sys.modules.get("__main__")
    doc = (getattr(main, "__doc__", None) or "").strip().split("\n")[0] or None
    parser = argparse.ArgumentParser(prog=Path(sys.argv[0]).name if sys.argv[0] else None, description=doc,
                                     epilog=EXIT_CODES)
    parser.add_argument("--journal", type=Path,
                        help="journal file (default: $DURABLE_JOURNAL, else `journal` in [tool.durable] of the "
                        "nearest pyproject.toml, else .durable/journal.duckdb here); "
                        "a journal that recorded this session replays it, a fresh one runs it live")
    parser.add_argument("--session", help=f"session name (default: $DURABLE_SESSION, else {name!r}); "
                        "a new name starts a new run, e.g. one per day for a scheduled job")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    current = session(options.session or os.environ.get("DURABLE_SESSION") or name, options.journal)
    current.exits_when_suspended = True
    return current


_loop: asyncio.AbstractEventLoop | None = None


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on the script's one event loop, and return its result.

    A notebook's cells share the kernel's event loop; `asyncio.run` per step would close the loop
    after each one, and an `AsyncOpenAI` client made in the setup code keeps connections that belong
    to the loop they were opened on. The task copies the current context, so the open step goes along.
    """
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop.run_until_complete(coroutine)
