"""`durable ls` and `durable show` against a journal made by a real headless run."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

CELLS = [
    "%load_ext kernel_ext\nfrom openai import OpenAI\nfrom kernel_ext import tool\nclient = OpenAI(max_retries=0)",
    """@tool
def lookup(city: str) -> dict:
    return {"city": city, "sunny": True}
""",
    """%%durable research
for city in ["Lisbon", "Porto"]:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": city}])
    lookup(city)
""",
    '%%durable summary\nclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "sum"}])',
]


def _durable(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_ls_and_show_read_a_recorded_session(tmp_path, kernel_env, model_server):
    notebook = tmp_path / "trip.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in CELLS]), notebook)
    assert _durable("run", str(notebook), env=kernel_env, cwd=tmp_path).returncode == 0

    listed = _durable("ls", env=kernel_env, cwd=tmp_path)
    assert listed.returncode == 0 and "trip" in listed.stdout and "completed" in listed.stdout
    (session,) = json.loads(_durable("ls", "--json", env=kernel_env, cwd=tmp_path).stdout)
    assert (session["session"], session["steps"], session["calls"]) == ("trip", 2, 5)
    assert session["tokens"] > 0

    shown = _durable("show", "trip", env=kernel_env, cwd=tmp_path)
    assert shown.returncode == 0
    assert "step 'research': completed" in shown.stdout and "step 'summary': completed" in shown.stdout
    assert "llm      chat.completions [m]  completed" in shown.stdout and "tool     lookup  completed" in shown.stdout
    detail = json.loads(_durable("show", "trip", "--json", env=kernel_env, cwd=tmp_path).stdout)
    research = detail["steps"][0]
    assert research["name"] == "research" and [c["kind"] for c in research["calls"]] == ["llm", "tool"] * 2

    missing = _durable("show", "nope", env=kernel_env, cwd=tmp_path)
    assert missing.returncode == 1 and "no session 'nope'" in missing.stdout and "trip" in missing.stdout
