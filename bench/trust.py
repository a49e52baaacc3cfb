"""Workload 9: what storing a value as data, or as a sealed pickle, costs a tool call (and in bytes).

A journal is data, never code: a tool's result is stored as JSON with type tags when it comes back equal
from it, and otherwise as a pickle sealed with the user's key (HMAC-SHA256). Measured in the harness's own
process on the benchmark's ~1 KB tool result, each operation timed alone with `perf_counter_ns`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from statistics import median
from typing import Any

import cloudpickle

from bench.rows import Context, Row
from bench.systems import DBOS, LANGGRAPH, payload

_OURS = "the journal's own storage of values"
_NA = {DBOS: _OURS, LANGGRAPH: _OURS}
_METHOD = ("{tool_calls} times each, after {warmup} warm-up calls, on `payload(i)` (the ~1 KB dict of workload 1), "
           "in the harness process; the median of single calls timed with `perf_counter_ns`.")

ROWS = [
    Row("store_data", "9. Store a ~1 KB tool result as data (JSON with type tags, checked to come back equal)", "us",
        "`kernel_ext.stored.dump`, " + _METHOD, not_applicable=_NA),
    Row("store_sealed", "9. ... as a sealed pickle (cloudpickle + HMAC-SHA256 of the user's key)", "us",
        "`kernel_ext.trust.seal`, the form of a value with no data form, " + _METHOD, not_applicable=_NA),
    Row("store_pickle", "9. ... as a plain cloudpickle (what the journal stored before)", "us",
        "`cloudpickle.dumps`, " + _METHOD, not_applicable=_NA),
    Row("load_data", "9. Load it back: from data", "us", "`kernel_ext.stored.load`, " + _METHOD, not_applicable=_NA),
    Row("load_sealed", "9. Load it back: a sealed pickle (seal checked, then unpickled)", "us",
        "`kernel_ext.trust.unseal`, " + _METHOD, not_applicable=_NA),
    Row("size_data", "9. Size of that result as data, before the journal compresses it (bytes)", "",
        "`len` of the stored form of `payload(0)`.", not_applicable=_NA),
    Row("size_sealed", "9. ... as a sealed pickle (bytes)", "", "`len` of the sealed pickle of `payload(0)`.",
        not_applicable=_NA),
    Row("size_pickle", "9. ... as a plain cloudpickle (bytes)", "", "`len(cloudpickle.dumps(payload(0)))`.",
        not_applicable=_NA),
]
DETAILS: dict[str, tuple[str, str]] = {}


def _median_us(action: Callable[[int], Any], calls: int, warmup: int) -> float:
    for i in range(warmup):
        action(i)
    times = []
    for i in range(calls):
        begun = time.perf_counter_ns()
        action(i)
        times.append(time.perf_counter_ns() - begun)
    return median(times) / 1e3


def measure(system: str, ctx: Context) -> dict[str, Any]:
    import os

    os.environ["DURABLE_HOME"] = str(ctx.workdir / "home")  # a key of the run's own
    from kernel_ext import stored, trust

    calls, warmup = ctx.scale.tool_calls, ctx.scale.warmup
    values = [payload(i) for i in range(calls + warmup)]
    data = [stored.dump(v)[0] for v in values]
    sealed = [trust.seal(v) for v in values]
    return {
        "store_data": _median_us(lambda i: stored.dump(values[i]), calls, warmup),
        "store_sealed": _median_us(lambda i: trust.seal(values[i]), calls, warmup),
        "store_pickle": _median_us(lambda i: cloudpickle.dumps(values[i]), calls, warmup),
        "load_data": _median_us(lambda i: stored.load(data[i], "data", "bench"), calls, warmup),
        "load_sealed": _median_us(lambda i: trust.unseal(sealed[i], "bench"), calls, warmup),
        "size_data": float(len(data[0])),
        "size_sealed": float(len(sealed[0])),
        "size_pickle": float(len(cloudpickle.dumps(values[0]))),
    }
