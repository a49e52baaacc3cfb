"""The README's five-minute tour, as printed, in JupyterLab in headless Chromium: `durable model` with the
README's `--latency`, JupyterLab started with the export line the model printed, a new notebook into which
the tour's cells are pasted from the README, Run All, the kernel SIGKILLed (as an out-of-memory kill would)
while the line under the cell shows the README's call in flight, then restart and Run All: the calls before
it replay, only the rest reach the model server, and the cell prints what an uninterrupted run prints.
A third Run All sends no request at all.

Needs what tests/test_browser.py needs (/usr/bin/chromium and the `browser` extra); it fails, never skips,
without them. Screenshots land in test-artifacts/: tour-mid-run.png while the loop runs (before the kill),
tour-kernel-died.png of JupyterLab's notice, tour-resumed.png after the resumed run, tour-third-run.png
after the run that sent nothing, failure-*.png when a stage times out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from journal import Journal
from kernel_ext.scripted.server import ScriptedModelServer
from tests.harness import ROOT, Kernel
from tests.test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_FLAGS,
    KERNEL_TIMEOUT,
    PAGE_TIMEOUT,
    Lab,
    Stages,
    _cell_done,
    _require_browser_tools,
    _run_all,
    _wait_until,
)
from tests.test_readme_tour import _exported, _tour

pytestmark = [pytest.mark.slow, pytest.mark.browser]

STEP_TIMEOUT = 600_000  # ms for a whole run of the loop: a guard only; dozens of answers of --latency each


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    return re.split(r"^#{2,3} ", text.split("## Five-minute tour\n", 1)[1], maxsplit=1, flags=re.MULTILINE)[0]


def _promises() -> dict[str, int]:
    """The numbers the tour's text gives: the call to kill during, and the example summary's counts."""
    prose = " ".join(_section().split())
    kill = re.search(r"Kill the kernel (?:during call|while [^`]*`call) (\d+)", prose)
    back = re.search(r"calls 1 to (\d+) come back from the journal", prose)
    summary = re.search(r"`↻ durable step '(\w+)': (\d+) replayed from the journal \([^)]*\), (\d+) live, journaled",
                        prose)
    assert kill and back and summary, "the tour no longer says which call to kill during and what comes back"
    return {"kill_at": int(kill.group(1)), "back": int(back.group(1)), "replayed": int(summary.group(2)),
            "live": int(summary.group(3)), "step": summary.group(1)}


def _uninterrupted(cells: list[str], tmp_path: Path) -> tuple[str, list[str]]:
    """What the tour's cells print when nothing stops them, and the kinds of the step's calls in order."""
    journal = tmp_path / "uninterrupted.duckdb"
    with ScriptedModelServer() as server:
        env = {**os.environ, "DURABLE_JOURNAL": str(journal), "OPENAI_BASE_URL": server.base_url,
               "OPENAI_API_KEY": "unused"}
        env.pop("DURABLE_SESSION", None)
        kernel = Kernel(env, tmp_path)
        try:
            outputs = [kernel.ok(cell, timeout=300) for cell in cells]
        finally:
            kernel.shutdown()
    printed = "".join(o["text"] for o in outputs[-1] if o.get("name") == "stdout")
    with Journal(journal).open() as store:
        kinds = [kind for (kind,) in store.con.execute("SELECT kind FROM calls WHERE current ORDER BY seq").fetchall()]
    return printed.strip(), kinds


class TourModel:
    """`durable model` started with the README's arguments, in its own process, as the tour's first terminal."""

    def __init__(self, line: str) -> None:
        words = shlex.split(line.split("#", 1)[0])
        assert words[:2] == ["durable", "model"], line
        assert "--latency" in words and float(words[words.index("--latency") + 1]) > 0, (
            f"{line!r}: without --latency the model answers before anyone can kill the kernel mid-call")
        # --port 0 as the README's comment allows: 8765 may be taken on a test machine.
        self.proc = subprocess.Popen([sys.executable, "-m", "kernel_ext.cli.main", *words[1:], "--port", "0"],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.exports = _exported(self.proc.stdout.readline())
        self.url = self.exports["OPENAI_BASE_URL"].removesuffix("/v1")

    def requests(self) -> int:
        with urllib.request.urlopen(f"{self.url}/_control/stats", timeout=10) as response:
            return json.loads(response.read())["requests"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C, as the tour says
        self.proc.communicate(timeout=60)


class TourLab(Lab):
    """JupyterLab in a shell that ran the model's export line; no journal or session set, as in the tour."""

    def __init__(self, root: Path, home: Path, exports: dict[str, str]) -> None:
        # The default journal: .durable/journal.duckdb where the kernel runs, the notebook's folder.
        super().__init__(root, home, root / ".durable" / "journal.duckdb", exports["OPENAI_BASE_URL"])
        self.exports = exports

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("DURABLE_JOURNAL")
        env.pop("DURABLE_SESSION", None)
        env.update(self.exports)
        return env


@pytest.fixture
def tour_model() -> Iterator[TourModel]:
    bash, _ = _tour()
    model = TourModel(bash[0])
    try:
        yield model
    finally:
        model.stop()


@pytest.fixture
def tour_lab(tmp_path: Path, tour_model: TourModel) -> Iterator[TourLab]:
    _require_browser_tools()
    root = tmp_path / "tour"
    root.mkdir()
    server = TourLab(root, tmp_path / "jupyter-home", tour_model.exports)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _kernel_pid(kernel_id: str) -> int:
    """The process of a kernel the server started: the one given that kernel's connection file."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(f"kernel-{kernel_id}.json".encode()) for arg in argv):
                return int(proc.name)
    raise AssertionError(f"no process runs kernel {kernel_id}")


def _menu(page: Any, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{menu}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).click()


def _finished(page: Any, cell: Any, summary: Any, errors: Any, shot: str) -> tuple[str, list[str]]:
    """Once the cell is done: its summary line and its outputs, a screenshot, and no error in the notebook."""
    from playwright.sync_api import expect

    _cell_done(cell)
    line = summary.inner_text()
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / shot))
    outputs = cell.locator(".jp-OutputArea-output").all_inner_texts()
    expect(errors).to_have_count(0)
    return line, outputs


def test_the_readme_tour_in_jupyterlab_killed_mid_loop_resumes_and_then_sends_nothing(
        tour_lab: TourLab, tour_model: TourModel, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    bash, cells = _tour()
    promised = _promises()
    kill_at, step = promised["kill_at"], promised["step"]
    # The export line the tour shows is the one the model printed, but for the port it was given.
    assert _exported(bash[1]) == {**tour_model.exports, "OPENAI_BASE_URL": re.sub(
        r":\d+/", ":8765/", tour_model.exports["OPENAI_BASE_URL"])}
    printed, kinds = _uninterrupted(cells, tmp_path)
    total = len(kinds)
    print(f"uninterrupted: {total} calls ({kinds.count('llm')} to the model), prints {printed!r}")
    assert (promised["back"], promised["replayed"], promised["live"]) == (kill_at - 1, kill_at - 1, total - kill_at + 1)
    assert kinds[kill_at - 1] == "llm", (
        f"call {kill_at} is a {kinds[kill_at - 1]} call: only model calls take --latency, so it cannot be caught "
        f"in flight by hand; the calls around it are {kinds[kill_at - 3:kill_at + 2]}")

    ARTIFACTS.mkdir(exist_ok=True)
    for stale in [*ARTIFACTS.glob("tour-*.png"), *ARTIFACTS.glob("failure-*.png")]:
        stale.unlink()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                                    timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(PAGE_TIMEOUT)
            ui = Stages(page, tour_lab)
            notebook = page.locator(".jp-NotebookPanel")
            code_cells = notebook.locator(".jp-CodeCell")
            research = code_cells.filter(has_text=f"%%durable {step}")
            research_out = research.locator(".jp-OutputArea").first
            summary = research.locator(".jp-OutputArea-output", has_text=f"durable step '{step}'")
            errors = notebook.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')

            with ui.stage("open JupyterLab"):
                page.goto(f"{tour_lab.url}/lab?token={tour_lab.token}", wait_until="domcontentloaded",
                          timeout=60_000)
                card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
                expect(card).to_be_visible(timeout=60_000)
            with ui.stage("a new notebook with a kernel"):
                card.click()
                expect(code_cells).to_have_count(1, timeout=60_000)
                _wait_until(page, lambda: any(k["execution_state"] == "idle" and k["connections"] > 0
                                              for k in tour_lab.kernels()), KERNEL_TIMEOUT, "an idle, connected kernel")
                expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
                    "data-status", "idle", timeout=KERNEL_TIMEOUT)
            with ui.stage("paste the tour's cells"):
                for i, source in enumerate(cells):
                    if i:
                        page.keyboard.press("Escape")
                        page.keyboard.press("b")
                        expect(code_cells).to_have_count(i + 1)
                    code_cells.nth(i).locator(".cm-content").click()
                    # As pasted: typing key by key would let the editor indent each new line again.
                    page.keyboard.insert_text(source.rstrip("\n"))
                page.keyboard.press("Escape")
                # Not saved: the tour does not say to, and a first save asks to rename the notebook, which
                # changes the kernel's default session at its next restart.
                typed = code_cells.locator(".cm-content").evaluate_all(
                    "els => els.map(e => [...e.querySelectorAll('.cm-line')].map(l => l.textContent).join('\\n'))")
                assert typed == [c.rstrip("\n") for c in cells], typed
                (session,) = tour_lab.api("sessions")
                kernel_id = session["kernel"]["id"]
                pid = _kernel_pid(kernel_id)

            with ui.stage(f"run all and watch for call {kill_at} in flight"):
                _run_all(page)
                seen: list[int] = []

                def in_flight() -> int:
                    found = re.search(r"; call (\d+) live…", research_out.inner_text())
                    if found and (not seen or seen[-1] != int(found.group(1))):
                        seen.append(int(found.group(1)))
                    return int(found.group(1)) if found else 0

                _wait_until(page, lambda: in_flight() >= kill_at - 3, STEP_TIMEOUT,
                            f"the line under the cell to show call {kill_at - 3} or later in flight")
                page.screenshot(path=str(ARTIFACTS / "tour-mid-run.png"))
                _wait_until(page, lambda: in_flight() >= kill_at, STEP_TIMEOUT,
                            f"the line under the cell to show call {kill_at} in flight")
                assert seen[-1] == kill_at, f"the page never showed call {kill_at} in flight: it showed {seen}"
                # The line shows a call as it begins; the kill waits for its request to reach the model, so
                # that it lands during the call, not before it.
                _wait_until(page, lambda: tour_model.requests() >= kinds[:kill_at].count("llm"), 30_000,
                            f"the request of call {kill_at} at the model server")
                os.kill(pid, signal.SIGKILL)
                print(f"in flight as the page showed them: {seen}; killed kernel {pid} during call {kill_at}")
            sent_before_resume = tour_model.requests()

            with ui.stage("JupyterLab notices the kernel died"):
                dialog = page.locator(".jp-Dialog")
                expect(dialog).to_contain_text("appears to have died", timeout=KERNEL_TIMEOUT)
                page.screenshot(path=str(ARTIFACTS / "tour-kernel-died.png"))
                dialog.get_by_role("button", name="Ok").click()
                _wait_until(page, lambda: any(k["id"] == kernel_id and k["execution_state"] == "idle"
                                              for k in tour_lab.kernels()), KERNEL_TIMEOUT, "the kernel back, idle")
            with ui.stage("restart, Run All: the calls before the kill replay"):
                _menu(page, "Kernel", "Restart Kernel and Run All Cells…")
                page.locator(".jp-Dialog").get_by_role("button", name="Confirm Kernel Restart").click()
                expect(summary).to_contain_text(f"↻ durable step '{step}'", timeout=STEP_TIMEOUT)
                resumed, resumed_out = _finished(page, research, summary, errors, "tour-resumed.png")
            sent_resuming = tour_model.requests() - sent_before_resume

            with ui.stage("run it again: nothing is sent"):
                before = research.locator(".jp-InputPrompt").inner_text()
                _run_all(page)
                expect(research.locator(".jp-InputPrompt")).not_to_have_text(before, timeout=60_000)
                expect(summary).to_contain_text(f"↻ durable step '{step}': {total} replayed", timeout=STEP_TIMEOUT)
                third, third_out = _finished(page, research, summary, errors, "tour-third-run.png")
        finally:
            browser.close()
    sent_third = tour_model.requests() - sent_before_resume - sent_resuming

    print(f"resumed: {resumed!r}; third run: {third!r}")
    print(f"requests: {sent_before_resume} before the kill, {sent_resuming} resuming, {sent_third} on the third run")
    replayed, live = kill_at - 1, total - kill_at + 1
    assert re.match(rf"↻ durable step '{step}': {replayed} replayed from the journal \(recorded [^)]*\), "
                    rf"{live} live, journaled", resumed), resumed
    # Only the calls from the killed one on reach the model: the model calls among them, each once.
    assert sent_resuming == kinds[replayed:].count("llm")
    assert sent_before_resume == kinds[:kill_at].count("llm")  # the killed call's request had gone out
    assert sent_third == 0
    assert re.match(rf"↻ durable step '{step}': {total} replayed from the journal \(recorded [^)]*\), 0 tokens spent",
                    third), third
    # The cell ends with what an uninterrupted run prints, its summary line last.
    for outputs in (resumed_out, third_out):
        assert [o.strip() for o in outputs if o.strip()][-2:] == [printed, outputs[-1].strip()], outputs
    # All of it in one session, the notebook's name (the default), in the default journal.
    with Journal(tour_lab.journal).open() as store:
        recorded = store.con.execute("SELECT session, kind FROM calls WHERE step = ? AND current AND status = "
                                     "'completed' ORDER BY seq", [step]).fetchall()
    assert recorded == [(Path(session["path"]).stem, kind) for kind in kinds], recorded
