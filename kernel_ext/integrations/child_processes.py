"""Child processes a durable step starts: named in its summary, since calls made in them are not journaled.

A model or tool call made in another process (a `multiprocessing` process, a `ProcessPoolExecutor`'s
workers, a subprocess running Python, a bare `os.fork`) is not journaled: the append log, the step's call
ids and its replay data belong to the step's process, and a forked child stops journaling at once
(runtime._after_fork), so that it never writes into its parent's records. Such calls run again on every
run, so the step's summary names every child it started, with counts, on every run. A child started
inside a journaled call (a `@tool` that runs a command) belongs to that call, which runs once.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..runtime import active_step, in_journaled_call
from . import Integration
from ._patch import Patches

CHILDREN = ("{n} child process{es} started by this step ({names}): calls made in them are not journaled and run "
            "again on every run; make them in the step's own process or its threads")
_patches = Patches()
_starting = threading.local()  # inside multiprocessing's start: the fork it makes is that process
_watching = False  # os.register_at_fork cannot be undone: the hook asks this
_hook_registered = False


def report(name: str) -> None:
    """Name a child process the open step started (none outside a step, or inside a journaled call)."""
    if in_journaled_call():
        return
    active = active_step()
    if active is not None:
        active.warn_named(CHILDREN, name)


def install(module: ModuleType) -> None:
    global _watching, _hook_registered
    if module.__name__ == "subprocess":
        _patches.wrap(module.Popen, "__init__", _popen)
    elif module.__name__ == "multiprocessing.process":
        _patches.wrap(module.BaseProcess, "start", _process_start)
    elif module.__name__ == "os" and hasattr(os, "register_at_fork"):
        if not _hook_registered:
            os.register_at_fork(before=_before_fork)
            _hook_registered = True
        _watching = True


def uninstall() -> None:
    global _watching
    _watching = False
    _patches.undo()


def _before_fork() -> None:
    if _watching and not getattr(_starting, "process", False):
        report("os.fork")


def _command(args: Any) -> str:
    first = shlex.split(args)[0] if isinstance(args, str) and args.strip() else (
        args[0] if isinstance(args, (list, tuple)) and args else args)
    return os.path.basename(os.fsdecode(first)) if isinstance(first, (str, bytes, os.PathLike)) else "subprocess"


def _asked_by_platform() -> bool:
    # The standard library's `platform` runs `uname -p` to describe the machine (SDKs put that in their
    # headers): a question about the host, not work of the step's.
    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return False
        if frame.f_globals.get("__name__") == "platform":
            return True
        frame = frame.f_back
    return False


def _popen(init: Callable[..., Any]) -> Callable[..., Any]:
    def __init__(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        if not _asked_by_platform():
            report(_command(kwargs.get("executable") or args))
        init(self, args, *rest, **kwargs)

    return __init__


def _process_start(start: Callable[..., Any]) -> Callable[..., Any]:
    def start_process(self: Any) -> None:
        import multiprocessing

        method = getattr(self, "_start_method", None) or multiprocessing.get_start_method(allow_none=True)
        report(f"multiprocessing ({method or 'default'})")
        _starting.process = True
        try:
            start(self)
        finally:
            _starting.process = False

    return start_process


INTEGRATION = Integration("child_processes", ("os", "subprocess", "multiprocessing.process"), install, uninstall)
