"""The README's five-minute tour and `durable model`, run as a new user runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import openai

from kernel_ext.scripted.server import ScriptedModelServer
from tests.harness import ROOT, Kernel


def _tour() -> tuple[list[str], list[str]]:
    """The tour's bash lines and python code blocks, as the README shows them."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Five-minute tour\n", 1)[1]
    section = re.split(r"^#{2,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    bash = [line for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL) for line in block.splitlines()]
    return bash, re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def _exported(line: str) -> dict[str, str]:
    assert line.startswith("export "), line
    return dict(word.split("=", 1) for word in line.split()[1:])


def test_durable_model_prints_its_env_lines_serves_the_openai_client_and_stops_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "kernel_ext.cli.main", "model", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        note = proc.stdout.readline()
        env = _exported(first)
        assert set(env) == {"OPENAI_BASE_URL", "OPENAI_API_KEY"}
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", env["OPENAI_BASE_URL"])
        root = env["OPENAI_BASE_URL"].removesuffix("/v1")
        # What the anthropic SDK and google-genai read from the environment.
        assert _exported(second) == {"ANTHROPIC_BASE_URL": root, "ANTHROPIC_API_KEY": "unused",
                                     "GOOGLE_GEMINI_BASE_URL": root, "GEMINI_API_KEY": "unused"}
        assert "NOT a model" in note
        client = openai.OpenAI(base_url=env["OPENAI_BASE_URL"], api_key=env["OPENAI_API_KEY"], max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content.startswith("[scripted]")
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == ""


def test_durable_model_on_a_busy_port_says_to_pass_port():
    with ScriptedModelServer() as server:
        result = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", "model", "--port", str(server.port)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "pass --port" in result.stderr, result.stderr


def test_the_readme_tour_runs_as_written_and_replays_on_the_second_run(tmp_path):
    bash, cells = _tour()
    assert bash[0].startswith("durable model"), bash
    exports = [line for line in bash if line.startswith("export ")]
    assert len(exports) == 1 and len(cells) >= 2
    with ScriptedModelServer() as server:
        env = {**os.environ, "DURABLE_JOURNAL": str(tmp_path / "journal.duckdb")}
        for name, value in _exported(exports[0]).items():
            env[name] = value.replace(":8765", f":{server.port}")  # the port `durable model --port` chose
        env.pop("DURABLE_SESSION", None)
        kernel = Kernel(env, tmp_path)
        try:
            for cell in cells:
                kernel.ok(cell, timeout=120)
            sent = server.stats()["requests"]
            assert sent > 0
            kernel.restart()
            outputs = [kernel.ok(cell, timeout=120) for cell in cells]
            assert server.stats()["requests"] == sent  # Run All after a restart: everything replays
        finally:
            kernel.shutdown()
    summary = [o for o in outputs[-1] if "durable" in o.get("metadata", {})]
    assert summary and summary[-1]["metadata"]["durable"]["live"] == 0, outputs[-1]
    assert not [o for out in outputs for o in out if o.get("name") == "stderr" or o["output_type"] == "error"]


def test_durable_model_latency_makes_each_answer_take_that_long():
    proc = subprocess.Popen([sys.executable, "-m", "kernel_ext.cli.main", "model", "--port", "0", "--latency", "0.5"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        env = _exported(proc.stdout.readline())
        client = openai.OpenAI(base_url=env["OPENAI_BASE_URL"], api_key="unused", max_retries=0)
        began = time.monotonic()
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "slow?"}])
        assert time.monotonic() - began >= 0.5  # a lower bound: the answer waited; a busy machine only adds
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
