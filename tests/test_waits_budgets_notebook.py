"""notebooks/waits_and_budgets.ipynb runs as saved: the sleep, the spent budget and its raise, then a full replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.harness import cell_outputs, run_notebook, summaries

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "waits_and_budgets.ipynb"


def _text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)


@pytest.mark.slow
def test_the_waits_and_budgets_notebook_runs_then_replays(tmp_path, kernel_env, model_server):
    notebook = tmp_path / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, notebook)
    first = cell_outputs(run_notebook(notebook, kernel_env, tmp_path), keep_summary=True)
    setup, nap, spent, raised = first
    assert "woke" in _text(nap) and "paid out" in _text(nap)
    (error,) = [o for o in spent if o["output_type"] == "error"]
    assert error["ename"] == "BudgetExceeded" and "10 tokens" in error["evalue"]
    assert summaries(raised)[0]["replayed"] == 1 and "3 parts" in _text(raised)
    sent = model_server.stats()["requests"]

    again = cell_outputs(run_notebook(notebook, kernel_env, tmp_path), keep_summary=True)
    assert model_server.stats()["requests"] == sent  # everything replays, the sleep's time has passed
    assert _text(again[1]).splitlines()[0] == _text(nap).splitlines()[0]  # its journaled times, as recorded
    assert [summaries(cell)[0]["live"] for cell in again[1:]] == [0, 0, 0]
