"""Per-call cost of replaying recorded chat completions: above the SDK vs through its HTTP path.

Not part of `python -m bench` (it compares durable-kernel with itself, not with the peers, and writes no
report): `python -m bench.replay_paths [CALLS] [RUNS]`. A child records CALLS distinct chat completions
against the scripted model server; then fresh children replay them, alternating the two paths. The HTTP
path is taken by the same calls with an extra header (headers are not part of a request's identity, so
they replay the same recordings; calls with extra headers keep the HTTP path). Each call is timed alone
(`perf_counter_ns`, the client call as the program sees it); the step's whole block is timed too.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.child import emit, spawn


def child(mode: str, journal: str, base_url: str, calls: int) -> None:
    import openai

    import kernel_ext

    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    extra = {"extra_headers": {"X-Bench": "http path"}} if mode == "http" else {}
    kernel_ext.session("bench-replay-paths", journal=journal)
    per_call = []
    start = time.perf_counter()
    with kernel_ext.step("calls") as active:
        for i in range(calls):
            began = time.perf_counter_ns()
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"replay question {i}: what is {i} times {i}?"}],
                **extra)
            per_call.append(time.perf_counter_ns() - began)
    seconds = time.perf_counter() - start
    emit({"mode": mode, "replayed": active.replayed, "live": active.live, "step_s": seconds,
          "median_us": statistics.median(per_call) / 1e3})


def main(calls: int, runs: int) -> None:
    from kernel_ext.scripted.server import ScriptedModelServer

    with ScriptedModelServer() as server, tempfile.TemporaryDirectory() as tmp:
        journal = str(Path(tmp) / "journal.duckdb")

        def run(mode: str) -> dict:
            return spawn("replay_paths", mode, journal, server.base_url, calls, cwd=Path(tmp))

        run("record")
        recorded = server.stats()["requests"]
        results: dict[str, list[dict]] = {"above": [], "http": []}
        for _ in range(runs):
            for mode in ("http", "above"):  # interleaved
                out = run(mode)
                assert out["replayed"] == calls and out["live"] == 0, out
                results[mode].append(out)
        assert server.stats()["requests"] == recorded, "a replay sent requests"
    print(f"{calls} recorded chat completions replayed in a fresh process, median of {runs} runs:")
    for mode, label in (("above", "above the SDK"), ("http", "through the SDK's HTTP path")):
        per_call = statistics.median(r["median_us"] for r in results[mode])
        step = statistics.median(r["step_s"] for r in results[mode])
        print(f"  {label:30} {per_call:8.1f} us a call (median)   whole step {step:.3f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("record", "http", "above"):
        child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
