"""One measurement in a fresh interpreter: how the harness starts it and how it answers.

A child prints one result line (a marker and a JSON object) on stdout; everything else it prints is ignored.
A child that is meant to die by SIGKILL kills itself at the chosen point, so the kill lands exactly there.
Children import this module before their clock matters, so it imports little at the top.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
_MARK = "BENCH-RESULT "


class ChildFailed(RuntimeError):
    pass


def clock() -> float:
    """Seconds on CLOCK_MONOTONIC, which every process on the machine shares: a child's times compare with ours."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def emit(result: dict[str, Any]) -> None:
    print(_MARK + json.dumps(result), flush=True)


def kill_self() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: SIGKILL cannot be caught")


def timed(call: Callable[[Any], Any], items: Iterable[Any], warmup: int = 0) -> list[int]:
    """Nanoseconds of each call, the first `warmup` dropped."""
    out = []
    for item in items:
        start = time.perf_counter_ns()
        call(item)
        out.append(time.perf_counter_ns() - start)
    return out[warmup:]


def median_us(ns: list[int]) -> float:
    import statistics

    return statistics.median(ns) / 1e3


class Ledger:
    """An append-only file with one line per execution of a side effect; it survives SIGKILL (no buffering)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, i: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"%d\n" % i)
        finally:
            os.close(fd)

    def entries(self) -> list[int]:
        return [int(line) for line in self.path.read_text().split()] if self.path.exists() else []


def spawn(workload: str, *args: Any, cwd: Path, expect_kill: bool = False, timeout: float = 900,
          env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m bench.<workload> ARGS` in `cwd` (with `env` added to ours) and return its result, with
    `spawned_at` (our clock)."""
    import subprocess

    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", f"bench.{workload}", *map(str, args)]
    spawned_at = clock()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if expect_kill:
        if proc.returncode != -signal.SIGKILL:
            raise ChildFailed(f"{' '.join(command[2:])} should have died by SIGKILL, exit {proc.returncode}:\n"
                              f"{proc.stderr[-3000:]}")
        return {"spawned_at": spawned_at}
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        raise ChildFailed(f"{' '.join(command[2:])} failed with exit {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][len(_MARK):]), "spawned_at": spawned_at}
