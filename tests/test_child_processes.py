"""Calls made in child processes a step starts are not journaled: the step names those children, every run.

A forked `multiprocessing` process, a `ProcessPoolExecutor`'s workers and a subprocess running Python each
send a model request (over loopback HTTP to the scripted server). They go live again on every run, and the
step's summary says so on every run, naming the children with counts; even a step that made no call of its
own shows the line. A subprocess run inside a `@tool` belongs to that journaled call: it runs once, unnamed.
"""

from __future__ import annotations

import pytest

from tests.harness import Kernel, summaries

SETUP = """
%load_ext kernel_ext
import json, multiprocessing, os, subprocess, sys, urllib.request
from concurrent.futures import ProcessPoolExecutor
from kernel_ext import tool

def ask(question):
    body = {"model": "m", "messages": [{"role": "user", "content": question}]}
    request = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)["choices"][0]["message"]["content"]

MODELS = "import os, urllib.request; urllib.request.urlopen(os.environ['OPENAI_BASE_URL'] + '/models').read()"
"""

CHILDREN = """%%durable children
fork = multiprocessing.get_context("fork")
worker = fork.Process(target=ask, args=("from a process",))
worker.start(); worker.join()
with ProcessPoolExecutor(max_workers=2, mp_context=fork) as pool:
    answers = list(pool.map(ask, ["pool one", "pool two"]))
subprocess.run([sys.executable, "-c", MODELS], check=True)
"""

IN_A_TOOL = """%%durable tool-run
@tool
def run_script() -> int:
    return subprocess.run([sys.executable, "-c", "print('hello')"], capture_output=True).returncode
code = run_script()
"""


@pytest.mark.slow
def test_children_a_step_starts_are_named_on_every_run(kernel: Kernel, model_server):
    kernel.ok(SETUP)
    for run in (1, 2):
        before = model_server.stats()["requests"]
        outputs = kernel.ok(CHILDREN)
        (mark,) = summaries(outputs)  # shown although the step itself made no journaled call
        assert (mark["live"], mark["replayed"]) == (0, 0)
        (line,) = [w for w in mark["warnings"] if "child process" in w]
        assert "multiprocessing (fork) \u00d7" in line and "python" in line
        assert "not journaled and run again on every run" in line
        assert model_server.stats()["requests"] - before == 4, f"run {run}"  # 1 process, 2 pool, 1 subprocess


@pytest.mark.slow
def test_a_child_of_a_journaled_tool_is_part_of_that_call(kernel: Kernel):
    kernel.ok(SETUP)
    first = kernel.ok(IN_A_TOOL)
    assert "warnings" not in summaries(first)[0]
    again = kernel.ok(IN_A_TOOL)
    assert summaries(again)[0]["replayed"] == 1 and "warnings" not in summaries(again)[0]
