"""Workload 9: what storing a value as data, or as a sealed pickle, costs a tool call (and in bytes); what
encryption at rest adds to each blob written and read.

A journal is data, never code: a tool's result is stored as JSON with type tags when it comes back equal
from it, and otherwise as a pickle sealed with the user's key (HMAC-SHA256). Measured in the harness's own
process on the benchmark's ~1 KB tool result, each operation timed alone with `perf_counter_ns`.

With DURABLE_KEY set, every blob is compressed (zstd, as the journal's packs are) and sealed (AES-GCM) where
it is written, and opened where it is read; a model call writes about three blobs (its request's skeleton,
the messages it adds, its response).
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
    Row("seal_blob", "9. Encryption at rest: seal a ~1 KB blob (zstd + AES-GCM), as each blob is written", "us",
        "`journal._seal.seal_blob` with a key from `durable key new`, " + _METHOD, not_applicable=_NA),
    Row("open_blob", "9. ... open it (AES-GCM + zstd), as each blob is read for replay or a view", "us",
        "`journal._seal.open_blob`, " + _METHOD, not_applicable=_NA),
    Row("size_blob", "9. Size of that blob in the journal without a key, compressed in a pack (bytes)", "",
        "`len` of zstd with the journal's dictionary of the canonical JSON of `payload(0)`, alone (in a pack of "
        "many blobs, less).", not_applicable=_NA),
    Row("size_blob_sealed", "9. ... sealed (bytes: compressed alone, plus 38 of header, key id, nonce, tag, codec)",
        "",
        "`len(seal_blob(...))` of the same JSON. Sealed blobs are compressed one by one, so a pack of them "
        "does not shrink further: the size cost of encryption is mostly that.", not_applicable=_NA),
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
    import base64
    import os

    os.environ["DURABLE_HOME"] = str(ctx.workdir / "home")  # a key of the run's own
    from kernel_ext import stored, trust

    calls, warmup = ctx.scale.tool_calls, ctx.scale.warmup
    values = [payload(i) for i in range(calls + warmup)]
    data = [stored.dump(v)[0] for v in values]
    sealed = [trust.seal(v) for v in values]
    from journal import _blobs, _blobstore, _seal

    key_file = ctx.workdir / "bench-key"
    key_file.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
    blobs = [_blobs.canonical_json(v) for v in values]
    _seal.use(str(key_file))
    try:
        closed = [_seal.seal_blob(b) for b in blobs]
        seal_us = _median_us(lambda i: _seal.seal_blob(blobs[i]), calls, warmup)
        open_us = _median_us(lambda i: _seal.open_blob(closed[i]), calls, warmup)
    finally:
        _seal.use(None)
    return {
        "seal_blob": seal_us,
        "open_blob": open_us,
        "size_blob": float(len(_blobstore.compress(blobs[0])[1])),
        "size_blob_sealed": float(len(closed[0])),
        "store_data": _median_us(lambda i: stored.dump(values[i]), calls, warmup),
        "store_sealed": _median_us(lambda i: trust.seal(values[i]), calls, warmup),
        "store_pickle": _median_us(lambda i: cloudpickle.dumps(values[i]), calls, warmup),
        "load_data": _median_us(lambda i: stored.load(data[i], "data", "bench"), calls, warmup),
        "load_sealed": _median_us(lambda i: trust.unseal(sealed[i], "bench"), calls, warmup),
        "size_data": float(len(data[0])),
        "size_sealed": float(len(sealed[0])),
        "size_pickle": float(len(cloudpickle.dumps(values[0]))),
    }
