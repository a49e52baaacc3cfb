"""The SDK releases each integration was tested with, and what happens on one it does not know.

The suite runs against the releases pinned in constraints.txt; each integration names the range of its SDK's
releases it was run against, and the coverage table (docs/integrations/index.md) shows them. A release that
lacks what the replay above the SDK needs still replays (through the SDK's HTTP path), and says so once on stderr.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

from kernel_ext import integrations

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    return pins


def _tested() -> list[integrations.Tested]:
    found = [importlib.import_module(f"kernel_ext.integrations.{name}").INTEGRATION.tested
             for name in integrations.NAMES]
    return [tested for tested in found if tested is not None]


def test_each_integration_names_a_tested_range_that_holds_the_pinned_release():
    pins = _pins()
    tested = _tested()
    assert {t.distribution for t in tested} >= {"openai", "anthropic", "google-genai", "openai-agents",
                                               "pydantic-ai-slim", "langchain-core"}
    for t in tested:
        pinned = Version(pins[t.distribution])
        assert Version(t.lowest) <= pinned, t
        # The newest tested is the pinned release's major.minor: moving a pin means moving the range.
        assert f"{pinned.major}.{pinned.minor}" == t.newest, (t, pinned)


def test_the_docs_coverage_table_shows_each_tested_range():
    table = (ROOT / "docs" / "integrations" / "index.md").read_text()
    for t in _tested():
        assert str(t) in table, f"the coverage table (docs/integrations/index.md) lacks {t}"


def test_the_suite_installs_with_the_pins():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci
    readme = (ROOT / "README.md").read_text()
    assert re.search(r'pip install -e "\.\[test\]" -c constraints\.txt && python -m pytest', readme)


SIMULATED = """
import os, sys
import anthropic
del anthropic._types.Omit      # as in a release that renamed its "omitted" marker
import kernel_ext

kernel_ext.session("releases", journal=sys.argv[1])
client = anthropic.Anthropic(base_url=sys.argv[2], api_key="unused", max_retries=0)
for _ in range(2):
    with kernel_ext.step("ask") as step:
        reply = client.messages.create(model="claude-scripted", max_tokens=16,
                                       messages=[{"role": "user", "content": "hello"}])
    print(step.live, step.replayed, reply.content[0].text)
"""


def test_a_release_without_what_the_fast_path_needs_replays_through_http_and_says_so_once(model_server, tmp_path):
    done = subprocess.run([sys.executable, "-c", SIMULATED, str(tmp_path / "j.duckdb"), model_server.url],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.split(" ", 2)[:2] == ["1", "0"] and second.split(" ", 2)[:2] == ["0", "1"]
    assert first.split(" ", 2)[2] == second.split(" ", 2)[2]  # the same answer, replayed through the HTTP path
    assert model_server.stats()["requests"] == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("durable-kernel:")]
    assert len(lines) == 1, done.stderr
    assert "anthropic" in lines[0] and "Omit" in lines[0] and "HTTP path" in lines[0]
