"""The documentation: a short README, a site that builds offline with no warning, references generated from
the code, and every code block run as a reader would run it (or marked with why it cannot be).

A page's blocks run in order in a temporary folder against the scripted model server: python blocks as cells
of one real kernel per page, bash blocks in a shell. Two HTML comments right before a block change that:
`<!-- file: NAME -->` saves the block as NAME in the folder (a module a later block imports, a script a shell
block runs), and `<!-- not run: REASON -->` leaves it out, saying why.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel_ext.scripted.server import ScriptedModelServer
from tests.harness import ROOT, Kernel

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md"))
FIRST_COMMANDS = ('pip install -e . && durable demo',
                  'pip install -e ".[test]" -c constraints.txt && python -m pytest')
# Languages whose blocks are code; `text` blocks show what a command or a cell prints.
RUNNABLE = {"python", "bash"}
_MARKER = re.compile(r"<!-- (not run|file): (.*?) -->")


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    marker: str | None  # "not run" or "file"
    argument: str | None  # the reason, or the file name


def _blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marked = _MARKER.fullmatch(lines[i - 1].strip()) if i else None
        blocks.append(Block(page, i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n",
                            marked.group(1) if marked else None, marked.group(2).strip() if marked else None))
        i = end + 1
    return blocks


def _readme_tour() -> list[str]:
    from tests.test_readme_tour import _tour

    bash, cells = _tour()
    return ["\n".join(bash) + "\n", *cells]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    first_block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1)
    assert [line.split("  #")[0].strip() for line in first_block.splitlines()] == list(FIRST_COMMANDS)
    assert "docs/index.md" in readme


def test_the_references_are_generated_from_the_code():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for page, render in generator.PAGES.items():
        assert (DOCS / "reference" / page).read_text() == render(), (
            f"docs/reference/{page} differs from the code: run python docs/gen_reference.py")


def test_the_site_builds_with_no_warning_and_no_network(tmp_path):
    env = {**os.environ, "no_proxy": "*", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert built.returncode == 0, built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()


def test_every_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert f" {page.relative_to(DOCS).as_posix()}\n" in nav, page


def test_every_code_block_runs_or_says_why_not():
    tour = _readme_tour()
    not_run = []
    for page in PAGES:
        for block in _blocks(page):
            where = f"{block.page.relative_to(ROOT)}:{block.line}"
            if block.language == "text":
                assert block.marker is None, f"{where}: a text block shows output; it is never run"
                continue
            if block.marker == "not run":
                assert len(block.argument) >= 10, f"{where}: say why the block is not run"
                not_run.append(block)
                if "test_readme_tour.py" in block.argument:
                    assert block.code in tour, f"{where}: not the README's tour block it says it is"
            elif block.marker == "file":
                assert re.fullmatch(r"[\w.-]+", block.argument), where
            else:
                assert block.language in RUNNABLE, f"{where}: a {block.language or 'plain'} block is neither run " \
                    "nor marked `<!-- not run: REASON -->`"
    # The count is printed with -rA; a new marker is a block no test runs, so it is seen in review.
    print(f"{len(not_run)} blocks not run, each with its reason")
    assert not_run


def _runnable_pages() -> list[Path]:
    return [page for page in PAGES
            if any(b.marker in (None, "file") and b.language in RUNNABLE for b in _blocks(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", _runnable_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_the_page_runs_in_order_and_replays(page, tmp_path):
    blocks = [b for b in _blocks(page) if b.marker != "not run" and b.language in RUNNABLE]
    with ScriptedModelServer() as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "unused",
               "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "unused",
               "GOOGLE_GEMINI_BASE_URL": server.url, "GEMINI_API_KEY": "unused",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DURABLE_JOURNAL": str(tmp_path / "journal.duckdb"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("DURABLE_SESSION", None)
        kernel: Kernel | None = None
        try:
            for block in blocks:
                code = block.code.replace(":8765", f":{server.port}")  # the port the test's server chose
                where = f"{block.page.relative_to(ROOT)}:{block.line}"
                if block.marker == "file":
                    (tmp_path / block.argument).write_text(code)
                elif block.language == "bash":
                    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                                          capture_output=True, text=True, timeout=300)
                    assert done.returncode == 0, f"{where}: {done.stderr}"
                else:
                    kernel = kernel or Kernel(env, tmp_path)
                    status, outputs = kernel.execute(code, timeout=180)
                    assert status == "ok", f"{where}: {outputs}"
            cells = [b for b in blocks if b.language == "python" and b.marker is None]
            if kernel is not None and any(b.code.startswith("%%durable") for b in cells):
                # Run All after a restart: every durable cell replays, and no request reaches the model.
                sent = server.stats()["requests"]
                kernel.restart()
                for block in cells:
                    status, outputs = kernel.execute(block.code.replace(":8765", f":{server.port}"), timeout=180)
                    assert status == "ok", f"{block.page.relative_to(ROOT)}:{block.line} (again): {outputs}"
                assert server.stats()["requests"] == sent
        finally:
            if kernel is not None:
                kernel.shutdown()
