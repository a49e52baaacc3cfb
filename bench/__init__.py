"""Benchmarks: durable-kernel side by side with DBOS (SQLite) and LangGraph (SqliteSaver).

`python -m bench` runs every workload in fresh processes, several times, and writes `bench/RESULTS.md`.
Each workload module is also the child program its measurements run in (`python -m bench.<workload> ...`).
This package imports nothing heavy: a child's start-up time is part of what some rows measure.
"""
