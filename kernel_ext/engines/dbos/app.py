"""The command line of an app exported with `durable export --engine dbos`: run, enqueue, serve.

    python app.py run [--session ID] [--input NAME=VALUE ...]   one session in this process
    python app.py enqueue ID [ID ...] [--input NAME=VALUE ...]  queue sessions for the workers
    python app.py wait ID [ID ...]                              wait for sessions, print their results
    python app.py --workers N [--concurrency M] [--name NAME]   N worker processes serving the queue

The store is DBOS's system database: $DBOS_SYSTEM_DATABASE_URL (Postgres, for many workers on many
machines), else a SQLite file beside the app (one process on one machine). Each session is one
workflow whose id is the session's name. A worker that dies is started again under its own
executor id by `--workers`; DBOS then hands its unfinished sessions to the queue, and any worker
goes on from their last checkpointed call.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from journal import digest

from .workflow import Recording, run_session

APP = "durable"
WORKFLOW = "durable.session"
QUEUE = "durable-sessions"
_RESTARTS = 5  # a worker that dies this many times in a row within STARTUP seconds is given up on
_STARTUP = 10.0


def database_url(app_file: Path) -> str:
    return os.environ.get("DBOS_SYSTEM_DATABASE_URL") or f"sqlite:///{app_file.with_suffix('.sqlite')}"


def app_version(app_file: Path) -> str:
    """The app's own version: workers and the enqueuer agree on it, and a changed app is a new one."""
    recording = app_file.with_suffix(".recording")
    parts = [app_file.read_bytes(), recording.read_bytes() if recording.exists() else b""]
    return digest(b"\0".join(parts))


def _inputs(pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"--input takes NAME=VALUE with NAME a Python name, not {pair!r}")
        try:
            inputs[name] = json.loads(text)
        except ValueError:
            inputs[name] = text  # a plain string needs no JSON quotes
    return inputs


def _parser(session: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=f"Session {session!r} as a DBOS application.",
                                     epilog="store: $DBOS_SYSTEM_DATABASE_URL, else a SQLite file beside the app")
    parser.add_argument("--workers", type=int, help="serve the queue with N worker processes (Ctrl-C stops them)")
    parser.add_argument("--concurrency", type=int, help="at most M sessions at once, over all workers")
    parser.add_argument("--per-worker", type=int, default=1, help="sessions one worker runs at once (default 1)")
    parser.add_argument("--name", default=socket.gethostname(),
                        help="this machine's workers are NAME-1 ... NAME-N (default: the host name); another "
                        "machine started with a lost one's NAME takes over its unfinished sessions")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run one session in this process and print its result")
    run.add_argument("--session", default=session, help=f"the session (workflow id; default {session!r})")
    run.add_argument("--input", action="append", default=[], metavar="NAME=VALUE",
                     help="set a name the steps read (JSON, else a string); repeatable")
    enqueue = commands.add_parser("enqueue", help="queue sessions for the workers")
    enqueue.add_argument("sessions", nargs="+", metavar="ID")
    enqueue.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")
    wait = commands.add_parser("wait", help="wait for sessions to end; print their results")
    wait.add_argument("sessions", nargs="+", metavar="ID")
    worker = commands.add_parser("worker", help="one worker process (what --workers starts)")
    worker.add_argument("--executor-id", required=True)
    return parser


def main(app_file: str, namespace: dict[str, Any], steps: list[tuple[str | None, str]], session: str,
         argv: list[str] | None = None) -> int:
    """Run the exported app's command line; returns the exit code."""
    path = Path(app_file).resolve()
    parser = _parser(session)
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if options.workers is not None:
        if options.workers < 1:
            parser.error("--workers must be at least 1")
        return _serve(path, options)
    if options.command is None:
        parser.error("name a command (run, enqueue, wait) or --workers N")
    if options.command in ("enqueue", "wait"):
        return _client_command(path, options)
    app = _App(path, namespace, steps, options)
    if options.command == "worker":
        return app.work(options.executor_id)
    return app.run(options.session, _inputs(options.input))


class _App:
    """DBOS configured for this app, its workflow registered, its queue declared."""

    def __init__(self, path: Path, namespace: dict[str, Any], steps: list[tuple[str | None, str]],
                 options: Any) -> None:
        from dbos import DBOS

        recording = Recording.load(path.with_suffix(".recording"))
        compiled = [(name, compile(source, f"{path.name} (step {name or 'cell'})", "exec")) for name, source in steps]
        self.path, self.options = path, options
        self.config = {"name": APP, "system_database_url": database_url(path), "application_version":
                       app_version(path), "log_level": os.environ.get("DBOS_LOG_LEVEL", "WARNING")}

        @DBOS.workflow(name=WORKFLOW)
        def durable_session(inputs: dict[str, Any]) -> dict[str, Any]:
            return run_session(recording, compiled, namespace, inputs)

        self.workflow = durable_session

    def _launch(self, executor_id: str | None = None) -> None:
        from dbos import DBOS

        config = dict(self.config, executor_id=executor_id) if executor_id else self.config
        DBOS(config=config)  # type: ignore[arg-type]
        DBOS.launch()

    def run(self, session: str, inputs: dict[str, Any]) -> int:
        from dbos import DBOS, SetWorkflowID

        self._launch()
        try:
            with SetWorkflowID(session):
                handle = DBOS.start_workflow(self.workflow, inputs)
            print(json.dumps({"session": session, "result": handle.get_result()}, ensure_ascii=False))
            return 0
        except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for a failed session
            print(f"session {session!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            DBOS.destroy()

    def work(self, executor_id: str) -> int:
        from dbos import DBOS

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        self._launch(executor_id)
        # Registered (persisted in the store) once DBOS runs; every worker serves it.
        DBOS.register_queue(QUEUE, worker_concurrency=self.options.per_worker,
                            global_concurrency=self.options.concurrency, polling_interval_sec=0.5,
                            on_conflict="always_update")
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        DBOS.destroy(workflow_completion_timeout_sec=0)
        return 0


def client(path: Path) -> Any:
    from dbos import DBOSClient

    return DBOSClient(system_database_url=database_url(path), application_name=APP)


def _client_command(path: Path, options: Any) -> int:
    if options.command == "enqueue":
        from dbos import DBOS

        DBOS.migrate(database_url(path))  # sessions may be queued before any worker ever ran
    dbos = client(path)
    try:
        if options.command == "enqueue":
            inputs = _inputs(options.input)
            version = app_version(path)
            for session in options.sessions:
                dbos.enqueue({"queue_name": QUEUE, "workflow_name": WORKFLOW, "workflow_id": session,
                              "app_version": version}, inputs)
                print(f"enqueued {session}")
            return 0
        failed = 0
        for session in options.sessions:
            try:
                result = dbos.retrieve_workflow(session).get_result()
                print(json.dumps({"session": session, "result": result}, ensure_ascii=False), flush=True)
            except Exception as exc:  # noqa: BLE001 - a failed session is reported, the others waited for
                failed += 1
                print(f"session {session!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1 if failed else 0
    finally:
        dbos.destroy()


def _serve(path: Path, options: Any) -> int:
    """Start N workers, each with an executor id of its own; start again any that dies."""
    shared = ["--per-worker", str(options.per_worker)]
    if options.concurrency is not None:
        shared += ["--concurrency", str(options.concurrency)]
    stopping = threading.Event()
    workers: dict[str, tuple[subprocess.Popen[bytes], float, int]] = {}

    def start(executor: str, failures: int = 0) -> None:
        process = subprocess.Popen([sys.executable, str(path), *shared, "worker", "--executor-id", executor])
        workers[executor] = (process, time.monotonic(), failures)
        print(f"{executor}: pid {process.pid}", flush=True)

    def stop(*_: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving queue {QUEUE!r} of {database_url(path).split('@')[-1]} with {options.workers} workers", flush=True)
    for n in range(1, options.workers + 1):
        start(f"{options.name}-{n}")
    code = 0
    while not stopping.wait(0.2):
        for executor, (process, started, failures) in list(workers.items()):
            status = process.poll()
            if status is None:
                continue
            failures = failures + 1 if time.monotonic() - started < _STARTUP else 0
            if failures >= _RESTARTS:
                print(f"{executor} keeps ending at start (exit {status}); stopping", file=sys.stderr, flush=True)
                code = 1
                stopping.set()
                break
            how = f"killed by signal {-status}" if status < 0 else f"exit {status}"
            print(f"{executor} (pid {process.pid}) ended, {how}; starting it again, to recover its sessions",
                  flush=True)
            start(executor, failures)
    for process, _, _ in workers.values():
        if process.poll() is None:
            process.terminate()
    for process, _, _ in workers.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return code
