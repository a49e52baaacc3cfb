"""Budgets: once what a step or session spent live (as the journal records it) reaches its budget, no live
model call goes out; replayed calls cost nothing, so raising the budget replays what was paid and goes on.
"""

from __future__ import annotations

import re
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.harness import Kernel, summaries

SETUP = "%load_ext kernel_ext\nfrom openai import OpenAI\nclient = OpenAI()\n"
ASK = """%%durable ask {flags}
answers = [client.chat.completions.create(model="m", messages=[{{"role": "user", "content": f"question {{i}}"}}])
           .choices[0].message.content for i in range(3)]
print(len(answers), "answers")
"""


def _requests(server) -> int:
    return server.stats()["requests"]


@pytest.mark.slow
def test_a_step_budget_stops_live_calls_and_raising_it_replays_what_was_paid(kernel: Kernel, model_server):
    kernel.ok(SETUP)
    status, outputs = kernel.execute(ASK.format(flags="--budget-tokens 1"))
    assert status == "error" and _requests(model_server) == 1  # exactly one request went out
    (error,) = [o for o in outputs if o["output_type"] == "error"]
    assert error["ename"] == "BudgetExceeded" and "\n" not in error["evalue"]
    assert "budget of step 'ask' (1 tokens, set by %%durable ask --budget-tokens 1) is spent" in error["evalue"]

    raised = kernel.ok(ASK.format(flags="--budget-tokens 100000"))
    assert _requests(model_server) == 3 and summaries(raised)[0]["replayed"] == 1
    line = next(o["data"]["text/plain"] for o in raised if "durable" in o.get("metadata", {}))
    assert "of 100,000 tokens left" in line
    # The history keeps what the budget left when the step ended, after the kernel that set it is gone.
    session = kernel.ok("import kernel_ext; print(kernel_ext.current_session().name)")[0]["text"].strip()
    shown = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "show", session],
                           capture_output=True, text=True, env=kernel.env, cwd=kernel.cwd, timeout=120)
    left = re.search(r"budget of step 'ask': [\d,]+ of 100,000 tokens left", line).group(0)
    assert "ask · completed" in shown.stdout and left in shown.stdout, (left, shown.stdout)

    kernel.restart()
    kernel.ok(SETUP)
    again = kernel.ok(ASK.format(flags="--budget-tokens 1"))  # everything recorded: replays to the end
    assert _requests(model_server) == 3 and summaries(again)[0]["replayed"] == 3


@pytest.mark.slow
def test_a_session_budget_and_a_money_budget_without_prices(kernel: Kernel, model_server):
    kernel.ok(SETUP + "%durable session budgeted --budget-tokens 1\n")
    status, outputs = kernel.execute(ASK.format(flags=""))
    (error,) = [o for o in outputs if o["output_type"] == "error"]
    assert error["ename"] == "BudgetExceeded" and "session 'budgeted'" in error["evalue"]
    assert _requests(model_server) == 1
    kernel.ok("%durable session priced")
    status, outputs = kernel.execute(ASK.format(flags="--budget-usd 5"))
    (error,) = [o for o in outputs if o["output_type"] == "error"]
    assert "cannot be checked: no USD price for m" in error["evalue"] and _requests(model_server) == 1


@pytest.mark.slow
def test_a_headless_run_over_budget_exits_3(tmp_path, kernel_env, model_server):
    notebook = tmp_path / "ask.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(SETUP), new_code_cell(ASK.format(flags=""))]), notebook)
    done = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "run", str(notebook), "--journal",
                           str(tmp_path / "journal.duckdb"), "--budget-tokens", "1"], capture_output=True, text=True,
                          env=kernel_env, cwd=tmp_path, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "suspended (budget spent)" in done.stdout and "DURABLE_BUDGET_TOKENS=1" in done.stdout
    assert _requests(model_server) == 1
