"""`durable run --strict` as an offline regression test: a recorded session replays with no request;
an edited prompt fails the run, naming the call and the difference."""

from __future__ import annotations

import subprocess
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

CELLS = [
    "%load_ext kernel_ext\nfrom openai import OpenAI\nclient = OpenAI(max_retries=0)",
    'PROMPT = "Plan a 3-day trip to Lisbon"',
    """%%durable plan
reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": PROMPT}])
print(reply.choices[0].message.content)
""",
]


def _run(notebook, *flags, env):
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "run", str(notebook), *flags],
                          capture_output=True, text=True, timeout=300, env=env, cwd=notebook.parent)


def test_strict_run_replays_offline_and_fails_on_an_edited_prompt(tmp_path, kernel_env, model_server):
    notebook = tmp_path / "trip.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in CELLS]), notebook)
    recorded = _run(notebook, env=kernel_env)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert model_server.stats()["requests"] == 1

    replayed = _run(notebook, "--strict", env=kernel_env)
    assert replayed.returncode == 0, replayed.stdout
    assert "calls: 1 replayed, 0 live" in replayed.stdout
    assert model_server.stats()["requests"] == 1

    edited = nbformat.read(notebook, as_version=4)
    edited.cells[1].source = 'PROMPT = "Plan a 4-day trip to Lisbon"'
    nbformat.write(edited, notebook)
    failed = _run(notebook, "--strict", env=kernel_env)
    assert failed.returncode == 1
    assert "failed (strict)" in failed.stdout and "step 'plan', call 1 (chat.completions, model m)" in failed.stdout
    assert "'Plan a 3-day trip to Lisbon' -> 'Plan a 4-day trip to Lisbon'" in failed.stdout
    assert model_server.stats()["requests"] == 1
