"""Credentials never reach the journal, its WAL and logs, `durable show`, an export or the notebook's outputs.

Each key below is unique, so finding its bytes anywhere means it leaked by some path: through the
environment, a headers dict, a client's api_key, a tool argument, an approval's details, or a literal
written in a cell (the cells' sources are kept in the journal for export).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from tests.harness import journal_bytes

ENV_KEY = "sk-env-5e1f0c9a7d3b2e4f6a8c"
SERVICE_TOKEN = "tok-service-93c1d7e5a2b4f608"  # not key-shaped: found by its environment variable's name
LITERAL_KEY = "sk-literal-0a9b8c7d6e5f4a3b2c1d"
HEADER_TOKEN = "hdr-77f3a1c9e5d2b4a6"

CELLS = [
    "%load_ext kernel_ext",
    f"""import os
from openai import OpenAI
from kernel_ext import approve, tool
literal_client = OpenAI(api_key="{LITERAL_KEY}", base_url=os.environ["OPENAI_BASE_URL"])

@tool
def call_service(query: str, auth_token: str) -> str:
    return f"looked up {{query}}"
""",
    f"""%%durable leaky
headers = {{"Authorization": "Bearer {HEADER_TOKEN}", "Accept": "application/json"}}
client_key = literal_client.api_key
token = os.environ["MY_SERVICE_TOKEN"]
reply = literal_client.chat.completions.create(model="m", messages=[{{"role": "user", "content": "hi"}}])
print(call_service("weather", auth_token=token))
decision = approve("Use the service?", key="use", details={{"token": token}})
print("done", reply.choices[0].message.content[:10], decision.approved)
""",
]


def _durable(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_no_key_reaches_the_journal_show_export_or_outputs(tmp_path, kernel_env):
    env = {**kernel_env, "OPENAI_API_KEY": ENV_KEY, "MY_SERVICE_TOKEN": SERVICE_TOKEN}
    notebook, out = tmp_path / "keys.ipynb", tmp_path / "out.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in CELLS]), notebook)
    first = _durable("run", str(notebook), env=env, cwd=tmp_path)
    assert first.returncode == 3, first.stdout + first.stderr  # waits for the approval
    assert _durable("approve", "keys", "use", env=env, cwd=tmp_path).returncode == 0
    second = _durable("run", str(notebook), "-o", str(out), env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr

    shown = _durable("show", "keys", "--json", env=env, cwd=tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)
    exported = _durable("export", "keys", "-o", str(tmp_path / "keys.py"), env=env, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    script = (tmp_path / "keys.py").read_text()
    assert "<redacted>" in script and "call_service" in script

    journal = journal_bytes(tmp_path / ".durable" / "journal.duckdb")
    outputs = json.dumps([c.get("outputs", []) for c in nbformat.read(out, as_version=4).cells])
    places = {"journal and WAL": journal, "durable show --json": shown.stdout.encode(),
              "durable export": script.encode(), "the notebook's outputs": outputs.encode(),
              "durable run's output": (first.stdout + first.stderr + second.stdout + second.stderr).encode()}
    for key in (ENV_KEY, SERVICE_TOKEN, LITERAL_KEY, HEADER_TOKEN):
        for place, data in places.items():
            assert key.encode() not in data, f"{key} leaked into {place}"
    assert b"done [scripted]" in outputs.encode()
