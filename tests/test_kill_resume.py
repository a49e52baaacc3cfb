"""The foundation's promise: kill the kernel during call k of n, run again, pay only for call k twice."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from jupyter_client import AsyncKernelManager
from nbclient.exceptions import DeadKernelError

from kernel_ext.scripted.server import ScriptedModelServer
from tests.conftest import API_KEY
from tests.harness import NOTEBOOKS, cell_outputs, journal_bytes, run_notebook, summaries

NOTEBOOK = NOTEBOOKS / "agent_demo.ipynb"
TURNS = 12
CALLS = TURNS + 1  # the agent loop, then one streamed summary


def _tool_calls(turns: int) -> int:
    # The scripted model asks for one tool call after each user message, then answers in text: turns 1, 3, 5, ...
    return (turns + 1) // 2


def _env(server: ScriptedModelServer, journal: Path) -> dict[str, str]:
    return dict(os.environ, OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=API_KEY,
                DURABLE_JOURNAL=str(journal), DEMO_TURNS=str(TURNS))


def _reference_outputs(tmp_path: Path) -> list:
    """What an uninterrupted run shows, from a separate server and journal."""
    with ScriptedModelServer() as server:
        nb = run_notebook(NOTEBOOK, _env(server, tmp_path / "reference.duckdb"), tmp_path)
        assert server.stats()["requests"] == CALLS
    return cell_outputs(nb)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 7, CALLS])
def test_sigkill_during_call_k_resends_only_that_call(model_server, tmp_path, k):
    env = _env(model_server, tmp_path / "journal.duckdb")
    model_server.configure(hold_request=k)
    km = AsyncKernelManager(kernel_name="python3")
    failure: list[BaseException] = []

    def first_run() -> None:
        try:
            run_notebook(NOTEBOOK, env, tmp_path, km=km)
        except BaseException as exc:  # noqa: BLE001 - the kill is expected to surface here
            failure.append(exc)

    runner = threading.Thread(target=first_run)
    runner.start()
    assert model_server.wait_for_held(timeout=120) == k
    os.kill(km.provisioner.process.pid, signal.SIGKILL)
    model_server.release()
    runner.join(timeout=120)
    assert failure and isinstance(failure[0], DeadKernelError), failure
    assert model_server.stats()["requests"] == k

    resumed = run_notebook(NOTEBOOK, env, tmp_path)
    assert model_server.stats()["requests"] == CALLS + 1  # only the in-flight call was sent twice
    assert cell_outputs(resumed) == _reference_outputs(tmp_path)
    research = summaries(cell_outputs(resumed, keep_summary=True)[2])
    if k <= TURNS:
        # Replayed: the model calls before call k and the tool calls they asked for; a tool never runs twice.
        replayed = k - 1 + _tool_calls(k - 1)
        assert research == [{"step": "research", "replayed": replayed,
                             "live": TURNS + _tool_calls(TURNS) - replayed}]

    again = run_notebook(NOTEBOOK, env, tmp_path)
    assert model_server.stats()["requests"] == CALLS + 1  # a third run sends nothing
    assert cell_outputs(again) == cell_outputs(resumed)
    assert summaries(cell_outputs(again, keep_summary=True)[2]) == [
        {"step": "research", "replayed": TURNS + _tool_calls(TURNS), "live": 0}
    ]
    on_disk = journal_bytes(tmp_path / "journal.duckdb")
    assert API_KEY.encode() not in on_disk
