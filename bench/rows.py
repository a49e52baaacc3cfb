"""What a row of the results table is, and the settings every workload reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Scale:
    """How much work each measurement does; `quick()` is a smoke run, not a result."""

    tool_calls: int = 1000
    llm_calls: int = 200
    warmup: int = 20
    steps: int = 1000
    turns: tuple[int, int] = (200, 1000)
    replay_calls: int = 1000
    kernel_calls: int = 20  # per kernel, in workload 6
    ls_calls: int = 40  # the running cell's, in workload 7
    session_steps: int = 1000  # one-call steps of workload 10's first session
    session_calls: int = 10000  # calls of its second session, 10 a step
    chat_turns: tuple[int, int, int] = (60, 300, 600)  # turns of its growing chat whose overhead is shown
    window_calls: int = 1000  # calls of its sliding-window chat
    runs: int = 3
    quick: bool = False

    @classmethod
    def quick_run(cls) -> Scale:
        return cls(tool_calls=100, llm_calls=30, warmup=5, steps=100, turns=(20, 60), replay_calls=100,
                   kernel_calls=6, ls_calls=16, session_steps=40, session_calls=200, chat_turns=(10, 30, 60),
                   window_calls=60, runs=1, quick=True)


@dataclass
class Context:
    """One run of one workload for one system: a fresh folder, the scale, the harness's model server."""

    workdir: Path
    scale: Scale
    server: Any  # kernel_ext.scripted.server.ScriptedModelServer, running in the harness process


Medians = dict[str, float | None]  # system -> median over runs (None: not measured)
Table = dict[str, Medians]  # row or detail key -> medians


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str  # "us", "ms", "s", "MB" or "" for counts
    method: str
    target: str = "-"
    met: Callable[[Table], bool] | None = None  # judged on durable-kernel's medians (and a peer's, if it says so)
    not_applicable: dict[str, str] = field(default_factory=dict)  # system -> why it has no such number
    ratio: bool = True  # counts of zero make no ratio


def at_most(key: str, limit: float, system: str = "durable-kernel") -> Callable[[Table], bool]:
    """A target of the form `key <= limit`, judged on one system's median."""

    def met(table: Table) -> bool:
        value = table[key][system]
        return value is not None and value <= limit

    return met
