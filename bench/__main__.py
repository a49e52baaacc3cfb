"""python -m bench: run every workload on durable-kernel, DBOS and LangGraph and write bench/RESULTS.md."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import (
    cli,
    extension,
    fleet,
    kernels,
    long_session,
    machine,
    overhead,
    reopen,
    replay,
    report,
    resume,
    storage,
    trust,
)
from bench.child import ROOT
from bench.rows import Context, Row, Scale
from bench.systems import SYSTEMS, TITLES

# In the order of the results table; reopen is measured by resume, on the store its killed child left.
WORKLOADS: dict[str, ModuleType] = {"overhead": overhead, "resume": resume, "storage": storage,
                                    "replay": replay, "extension": extension, "kernels": kernels, "cli": cli,
                                    "fleet": fleet, "trust": trust, "long": long_session}
ROW_MODULES = (overhead, resume, storage, replay, extension, reopen, kernels, cli, fleet, trust, long_session)
PARALLEL = {"storage"}  # sizes do not depend on timing: two children at a time
QUIET_CORES = 0.25  # other processes' load under which a timed measurement may start
WAIT_LIMIT = 900  # seconds to wait for that before measuring anyway
ATTEMPTS = 3  # a timed measurement that others disturbed (more than QUIET_CORES on average) is measured again
RESULTS = ROOT / "bench" / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run of reduced counts: a smoke test, not results")
    parser.add_argument("--runs", type=int, default=3, help="runs of every measurement (default 3)")
    parser.add_argument("--only", default="", help=f"comma-separated workloads out of {','.join(WORKLOADS)}")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the report (default bench/RESULTS.md, for a full run only)")
    args = parser.parse_args(argv)
    # Unwind on SIGTERM as on Ctrl-C: the running child is killed and the temporary folders are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = [name for name in args.only.split(",") if name] or list(WORKLOADS)
    if unknown := set(only) - set(WORKLOADS):
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if missing := [m for m in ("dbos", "langgraph.checkpoint.sqlite") if not _installed(m)]:
        print(f"missing peer packages {missing}: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    _compiled()
    scale = Scale.quick_run() if args.quick else Scale(runs=args.runs)
    output = args.output or (RESULTS if not args.quick and len(only) == len(WORKLOADS) else None)
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    results = report.Results()
    from kernel_ext.scripted.server import ScriptedModelServer

    with ScriptedModelServer() as server:
        for name in only:
            jobs = [(run, system) for run in range(1, scale.runs + 1) for system in SYSTEMS
                    if not _not_applicable(WORKLOADS[name], system)]
            measure = _measurer(name, WORKLOADS[name], scale, server, results, started)
            if name in PARALLEL:
                with ThreadPoolExecutor(max_workers=2) as pool:
                    list(pool.map(measure, *zip(*jobs, strict=True)))
            else:
                for job in jobs:
                    measure(*job)
    elapsed = time.monotonic() - started
    rows = [row for module in ROW_MODULES for row in module.ROWS]
    details = [(key, label, unit) for module in ROW_MODULES for key, (label, unit) in module.DETAILS.items()]
    details += [(f"{name}_others", f"CPU other processes used during the {name} measurements", "cores")
                for name in only if name not in PARALLEL]
    command = "python -m bench" + " ".join(["", *(argv if argv is not None else sys.argv[1:])])
    text = report.render(rows, details, results, scale, elapsed, command.rstrip(),
                         (load_at_start, os.getloadavg()[0]))
    if output is not None:
        output.write_text(text)
        print(f"\nwrote {output} ({elapsed / 60:.1f} minutes, {results.waited / 60:.1f} of them waiting)")
    else:
        print("\n" + text)
    return 1 if results.failures else 0


def _compiled() -> None:
    """This checkout's packages compiled, and the children allowed to use the bytecode cache.

    An environment with PYTHONDONTWRITEBYTECODE makes every child compile every module of ours from
    source (the installed peers are compiled by pip): start-up rows would then time the compiler.
    """
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    root = Path(__file__).resolve().parent.parent
    for package in ("kernel_ext", "journal", "widgets", "bench"):
        compileall.compile_dir(root / package, quiet=1)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _not_applicable(module: ModuleType, system: str) -> bool:
    rows: list[Row] = module.ROWS
    return all(system in row.not_applicable for row in rows)


def _measurer(name: str, module: ModuleType, scale: Scale, server: Any, results: report.Results,
              started: float) -> Callable[[int, str], None]:
    def measure(run: int, system: str) -> None:
        where = f"{name} run {run}/{scale.runs} {TITLES[system]}"
        timed = name not in PARALLEL
        for attempt in range(1, ATTEMPTS + 1):
            if timed:
                results.waited += _wait_until_quiet(started)
            _progress(started, f"{where} ..." + (f" (attempt {attempt})" if attempt > 1 else ""))
            begun, others = time.monotonic(), machine.Others()
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-", ignore_cleanup_errors=True) as tmp:
                try:
                    metrics = module.measure(system, Context(Path(tmp), scale, server))
                except Exception as exc:
                    results.failures.append(f"{where}: {type(exc).__name__}: {str(exc)[-2000:]}")
                    _progress(started, f"{where} FAILED: {type(exc).__name__}")
                    traceback.print_exc()
                    return
            shown = ", ".join(f"{key} {report.number(value, 'x')}" for key, value in metrics.items()
                              if not key.startswith("note:"))
            _progress(started, f"{where} done in {time.monotonic() - begun:.1f} s: {shown}")
            if not timed:
                break
            metrics[f"{name}_others"] = busy = others.cores()
            if busy <= QUIET_CORES:
                break
            if attempt < ATTEMPTS:
                _progress(started, f"other processes used {busy:.2f} cores meanwhile: measuring again")
            else:
                results.disturbed.append(f"{where}: other processes used {busy:.2f} cores in its last attempt")
        results.add(system, metrics)

    return measure


def _wait_until_quiet(started: float) -> float:
    """Wait while other processes keep the machine busy; returns the seconds waited."""
    busy, begun = machine.others_now(0.5), time.monotonic()
    if busy <= QUIET_CORES:
        return 0.0
    _progress(started, f"other processes keep {busy:.1f} cores busy; waiting up to {WAIT_LIMIT // 60} minutes "
                       "for them before the next timed measurement")
    deadline = time.monotonic() + WAIT_LIMIT
    while busy > QUIET_CORES and time.monotonic() < deadline:
        busy = machine.others_now(5.0)
    _progress(started, "quiet again" if busy <= QUIET_CORES else f"still {busy:.1f} cores busy: measuring anyway")
    return time.monotonic() - begun


def _progress(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:6.0f} s] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
