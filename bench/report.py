"""RESULTS.md: the table of medians, then what was measured on, and how."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bench import machine
from bench.rows import Row, Scale, Table
from bench.systems import DBOS, DURABLE, LANGGRAPH, SYSTEMS, TITLES


@dataclass
class Results:
    """Every value measured, by row or detail key, then system, one per run; and what went wrong."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    waited: float = 0.0  # seconds spent waiting for other processes to leave the machine quiet
    disturbed: list[str] = field(default_factory=list)  # timed measurements kept although others were busy

    def add(self, system: str, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key.startswith("note:"):
                self.notes[key] = value
            else:
                self.values.setdefault(key, {}).setdefault(system, []).append(float(value))

    def table(self) -> Table:
        return {key: {s: statistics.median(by[s]) if by.get(s) else None for s in SYSTEMS}
                for key, by in self.values.items()}


def words(scale: Scale) -> dict[str, str]:
    """The numbers a row's label and method mention, as they were in this run."""
    short, long = scale.turns
    return {k: f"{v:,}" for k, v in {
        "tool_calls": scale.tool_calls, "llm_calls": scale.llm_calls, "warmup": scale.warmup,
        "steps": scale.steps, "steps_done": scale.steps - 1, "replay_calls": scale.replay_calls,
        "short": short, "long": long, "chars": 500, "runs": scale.runs,
        "kernel_calls": scale.kernel_calls, "ls_calls": scale.ls_calls, "ls_half": scale.ls_calls // 2,
        "ls_next": scale.ls_calls // 2 + 1, "session_steps": scale.session_steps,
        "session_calls": scale.session_calls, "session_big_steps": scale.session_calls // 10,
        "turn_first": scale.chat_turns[0], "turn_mid": scale.chat_turns[1], "turn_last": scale.chat_turns[2],
        "window_calls": scale.window_calls, "window_half": scale.window_calls // 2}.items()}


def shown(unit: str) -> str:
    return " (µs)" if unit == "us" else f" ({unit})" if unit else ""


def number(value: float, unit: str) -> str:
    if unit == "":
        return f"{value:g}"
    size = abs(value)
    return f"{value:,.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}" if size >= 1 \
        else f"{value:.3f}"


def _cell(row: Row, table: Table, system: str) -> str:
    if system in row.not_applicable:
        return f"n/a ({row.not_applicable[system]})"
    if row.key not in table:
        return "not run"
    value = table[row.key].get(system)
    return "failed" if value is None else number(value, row.unit)


def _ratio(row: Row, table: Table, peer: str) -> str:
    if peer in row.not_applicable:
        return "n/a"
    ours, theirs = table.get(row.key, {}).get(DURABLE), table.get(row.key, {}).get(peer)
    if not row.ratio or ours is None or not theirs:
        return "-"
    ratio = ours / theirs
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def _met(row: Row, table: Table, scale: Scale) -> str:
    if row.met is None:
        return "-"
    if scale.quick:
        return "(quick run)"
    if row.key not in table:
        return "not run"
    if table[row.key].get(DURABLE) is None:
        return "failed"
    try:
        return "yes" if row.met(table) else "**no**"
    except (KeyError, TypeError):
        return "failed"


def render(rows: list[Row], details: list[tuple[str, str, str]], results: Results, scale: Scale,
           elapsed: float, command: str, load: tuple[float, float]) -> str:
    table, w = results.table(), words(scale)
    waited = f" ({results.waited / 60:.1f} of them waiting for other processes)" if results.waited >= 30 else ""
    heads = [TITLES[s] for s in SYSTEMS]
    out = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} "
        f"minutes{waited}. "
        f"Every number is the median of {scale.runs} run{'s' if scale.runs != 1 else ''}; each run of each "
        "system is a fresh process (fresh kernels for the notebook rows) in a fresh temporary folder. Ratios are "
        "durable-kernel's median divided by the peer's (below 1: durable-kernel is faster or smaller). Targets "
        "are those of the design and are judged on durable-kernel's medians.",
        "",
        f"| Workload | {' | '.join(heads)} | durable-kernel / {TITLES[DBOS]} | durable-kernel / {TITLES[LANGGRAPH]} "
        "| Target | Met? |",
        "|---|" + "---:|" * (len(SYSTEMS) + 2) + "---|---|",
    ]
    for row in rows:
        label = row.label.format(**w) + shown(row.unit)
        cells = [_cell(row, table, s) for s in SYSTEMS]
        ratios = [_ratio(row, table, peer) for peer in (DBOS, LANGGRAPH)]
        out.append(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} | {row.target.format(**w)} "
                   f"| {_met(row, table, scale)} |")
    if results.failures:
        out += ["", "## Failures", "", *[f"- {failure}" for failure in results.failures]]
    if results.disturbed:
        out += ["", "## Disturbed measurements", "", "Kept after their last attempt although other processes "
                "were busy while they ran:", "", *[f"- {line}" for line in results.disturbed]]
    out += ["", "## Versions", "", "| Package | Version |", "|---|---|",
            *[f"| {name} | {version} |" for name, version in machine.versions()]]
    out += ["", "## Machine", "", "| | |", "|---|---|",
            *[f"| {name} | {value} |" for name, value in machine.describe()],
            f"| 1-minute load average | {load[0]:.2f} at the start, {load[1]:.2f} at the end |"]
    out += ["", "## Method", "", *_general(scale, w), ""]
    out += [f"- **{row.label.format(**w)}.** {row.method.format(**w)}" for row in rows]
    out += ["", "## Details", "", "Further measurements (medians):", "",
            f"| Measurement | {' | '.join(heads)} |", "|---|" + "---:|" * len(SYSTEMS)]
    for key, label, unit in details:
        medians = table.get(key, {})
        cells = ["-" if medians.get(s) is None else number(medians[s], unit) for s in SYSTEMS]
        out.append(f"| {label}{shown(unit)} | {' | '.join(cells)} |")
    out += ["", *[f"- {note}" for note in results.notes.values()]] if results.notes else []
    out += ["", "Every run's value, in run order:", "", f"| Measurement | {' | '.join(heads)} |",
            "|---|" + "---|" * len(SYSTEMS)]
    named = {row.key: (row.label.format(**w), row.unit) for row in rows} | {
        key: (label, unit) for key, label, unit in details}
    for key, by in results.values.items():
        label, unit = named.get(key, (key, "x"))
        runs = [" / ".join(number(v, unit) for v in by.get(s, [])) or "-" for s in SYSTEMS]
        out.append(f"| {label}{shown(unit)} | {' | '.join(runs)} |")
    return "\n".join(out) + "\n"


def _general(scale: Scale, w: dict[str, str]) -> list[str]:
    lines = [
        f"- One command runs everything: {w['runs']} runs; within a run durable-kernel, DBOS and LangGraph in "
        "turn; one measurement at a time, except the storage children (file sizes only), which run two at a "
        "time. Every child is a new Python interpreter started by the harness; its working files live in a "
        "temporary folder deleted afterwards. Kills are real: the child sends itself SIGKILL at the chosen point.",
        "- The machine may be shared: before each timed measurement the harness waits (up to 15 minutes) until "
        "other processes use less than a quarter of a core, and it records how much CPU other processes used "
        "while each measurement ran (Details); a measurement during which they used more is made again (three "
        "attempts at most, the last one kept and listed).",
        "- The model is the package's `ScriptedModelServer`, a deterministic stand-in for an OpenAI-compatible "
        "server (not a model), reached by the real `openai` client over real loopback HTTP. Timing rows use one "
        "server in the harness process (a different process from the one measured); storage children each start "
        "their own.",
        "- DBOS: `DBOS(config={name, system_database_url: 'sqlite:///...', log_level: WARNING})`, otherwise "
        "defaults (its SQLite file keeps SQLite's rollback journal), except where a row says otherwise: the "
        "equal-durability rows of workload 1 put that file in WAL mode with `synchronous=FULL` (set and read back "
        "on every connection DBOS opens), and the PostgreSQL rows use a throwaway cluster with fsync on. "
        "LangGraph: `SqliteSaver` on "
        "`sqlite3.connect(path, check_same_thread=False)` with a `JsonPlusSerializer` told to expect "
        "`ChatCompletion`; every graph runs with `durability=\"sync\"` so that a step's checkpoint is written "
        "before the next step starts (the default, `\"async\"`, writes it while the next step runs).",
        "- durable-kernel: the script API of the package (`session(name, journal=path)`, `with step(name)`, "
        "`@tool`), the same code a notebook runs under `%%durable`.",
        "- Compiled code, as installed: pip compiles the peers' packages when it installs them; this checkout's "
        "packages are compiled once before the first measurement, and the children run with Python's bytecode "
        "cache on (`PYTHONDONTWRITEBYTECODE` is removed from their environment), as on a user's machine.",
    ]
    if scale.quick:
        lines.append("- **Quick run**: counts reduced to smoke-test the harness; these numbers are not results.")
    return lines
