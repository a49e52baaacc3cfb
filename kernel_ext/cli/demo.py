"""`durable demo`: kill an agent notebook mid-run, run it again, and show what the journal saved.

Runs `notebooks/agent_demo.ipynb` headless (nbclient, a real kernel) against the scripted
model server on loopback, so it needs no API key and costs nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_TURNS = 12
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "agent_demo.ipynb"


def run_demo(workdir: Path | None, turns: int, kill_at: int, latency: float) -> int:
    import nbformat
    from jupyter_client import AsyncKernelManager
    from nbclient import NotebookClient

    from journal import Journal

    from ..notebook.outputs import step_summaries
    from ..scripted.server import ScriptedModelServer
    from .run import kernel_config, kernel_options

    if not NOTEBOOK.exists():
        print(f"durable demo: {NOTEBOOK} is missing; run the demo from a clone (pip install -e .)")
        return 2
    calls = turns + 1
    if not 1 <= kill_at <= calls:
        print(f"durable demo: --kill-at must be between 1 and {calls} (the notebook makes {calls} calls)")
        return 2
    workdir = Path(workdir or tempfile.mkdtemp(prefix="durable-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    notebook = workdir / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, notebook)
    journal_path = workdir / ".durable" / "journal.duckdb"

    def execute(km: Any = None) -> tuple[nbformat.NotebookNode, float]:
        nb = nbformat.read(notebook, as_version=4)
        env = dict(os.environ, OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-scripted-demo",
                   DURABLE_JOURNAL=str(journal_path), DEMO_TURNS=str(turns), JPY_SESSION_NAME=str(notebook))
        client = NotebookClient(nb, km=km, kernel_name="python3", timeout=600, config=kernel_config(),
                                resources={"metadata": {"path": str(workdir)}})
        started = time.perf_counter()
        with open(workdir / "kernel.log", "a") as log:  # kernel chatter would drown the story
            client.execute(cwd=str(workdir), env=env, stderr=log)
        return nb, time.perf_counter() - started

    def step_counts(nb: nbformat.NotebookNode) -> tuple[int, int]:
        marks = step_summaries(nb)
        return sum(m["replayed"] for m in marks), sum(m["live"] for m in marks)

    def recorded_tokens() -> tuple[int, float]:
        with Journal(journal_path).open() as store:
            tokens, latency_ms = store.con.execute(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0), coalesce(avg(latency_ms), 0) "
                "FROM calls WHERE status = 'completed' AND kind = 'llm'").fetchone()
        return int(tokens), float(latency_ms) / 1000

    def journaled() -> tuple[int, int]:
        """Completed model calls and tool calls in the journal."""
        with Journal(journal_path).open() as store:
            rows = dict(store.con.execute(
                "SELECT kind, count(*) FROM calls WHERE status = 'completed' GROUP BY kind").fetchall())
        return rows.get("llm", 0), rows.get("tool", 0)

    with ScriptedModelServer() as server:
        server.configure(delay=latency, hold_request=kill_at)
        print(f"durable demo: {notebook}")
        print(f"  model: the scripted stand-in server at {server.base_url} (deterministic answers, not a")
        print(f"         real model), answering after {latency:g} s to stand in for model latency")
        print(f"  journal: {journal_path}\n")
        print(f"run 1: Run All; the agent makes {calls} model calls and runs the @tool calls they ask for. "
              f"Killing the kernel (SIGKILL) while model call {kill_at} is in flight ...")
        km = AsyncKernelManager(kernel_name="python3", **kernel_options())
        failure: list[BaseException] = []

        def first_run() -> None:
            try:
                execute(km)
            except BaseException as exc:  # noqa: BLE001 - the kill surfaces here, as DeadKernelError
                failure.append(exc)

        runner = threading.Thread(target=first_run, daemon=True)
        runner.start()
        server.wait_for_held(timeout=300)
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        server.release()
        runner.join(timeout=120)
        # Its kernel cannot remove what it left in the runtime dir: its sockets and its connection file.
        km.cleanup_ipc_files()
        km.cleanup_connection_file()
        sent_first = server.stats()["requests"]
        models, tools = journaled()
        print(f"       kernel killed: {type(failure[0]).__name__ if failure else 'no error?'}; "
              f"{sent_first} requests reached the model; journaled: {models} model answers, {tools} tool results\n")
        tokens_before, avg_latency = recorded_tokens()

        print("run 2: restart the kernel and Run All again ...")
        nb, seconds = execute()
        replayed, live = step_counts(nb)
        print(f"       done in {seconds:.1f} s: {replayed} calls replayed from the journal "
              f"({models} model, {tools} tool; no tool ran twice), {live} live")
        print(f"       saved: {tokens_before} tokens and about {models * avg_latency:.1f} s of model time\n")
        tokens_all, avg_latency = recorded_tokens()

        print("run 3: Run All once more ...")
        nb, seconds = execute()
        replayed3, live3 = step_counts(nb)
        print(f"       done in {seconds:.1f} s: {replayed3} calls replayed, {live3} live; "
              f"saved {tokens_all} tokens and about {calls * avg_latency:.1f} s\n")
        total = server.stats()["requests"]

    answer = next((o["text"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and "answer:" in o.get("text", "")), "").strip()
    print(f"model requests in all: {total} for {calls} calls over three runs "
          f"(only call {kill_at}, in flight at the kill, was sent twice)")
    print(f"final {answer[:110]}")
    # The copy keeps the journal beside it (.durable/ is the default journal of a kernel started there),
    # so Jupyter opened on it replays all three steps without the demo's server; the env lines only let
    # `OpenAI()` start, and serve any call you add.
    turns_env = "" if turns == DEFAULT_TURNS else f"DEMO_TURNS={turns} "  # the notebook's own default is 12
    print(f"\nto look around: `durable model` in one terminal; in another, the export line it prints, then "
          f"(JupyterLab: pip install -e '.[lab]')\n"
          f"  {turns_env}jupyter lab {notebook}\n"
          f"and Run All: every call replays from the journal in {journal_path.parent}")
    ok = total == calls + 1 and live3 == 0 and models == kill_at - 1 and replayed == models + tools
    return 0 if ok else 1
