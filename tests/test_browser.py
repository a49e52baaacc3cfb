"""The approval flow and the history in a real browser: JupyterLab (from PyPI) serves
notebooks/approval_demo.ipynb against the scripted stand-in model, headless Chromium (Debian's package)
driven by Playwright runs it, types a comment into the approval widget and clicks Approve; the cell goes
on, and the journal holds the decision. Run All again replays every call, and the history widget shows
it: a legend, the calls on their steps' timelines, what replay saved, and a selected call's request and
response under the same number as its bar.

Needs /usr/bin/chromium (`apt-get install -y chromium`) and the `browser` extra (also in `test`):
without them this test fails, it never skips, because CI installs both. Screenshots land in
test-artifacts/ under the repository root (git-ignored): approval-pending.png of the waiting widget,
approval.png of the decided one, step-summary.png of a step's summary under the cell's output,
history.png of the history timeline (the notebook's last cell) with a call selected after the replay,
failure-*.png when a stage times out.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from journal import Journal
from tests.harness import NOTEBOOKS, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
# As in the machine notes: without the background-networking flags Chromium keeps trying to reach
# Google's hosts, which this closed network refuses. Playwright adds a fresh, empty --user-data-dir
# itself (it refuses one passed in args).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
ARTIFACTS = ROOT / "test-artifacts"
NOTEBOOK = "approval_demo.ipynb"
SESSION = "approval_demo"  # the default session: the notebook's name
COMMENT = "photos of the damaged parcel checked"
LAB_START_TIMEOUT = 120  # seconds; generous: 3-5 s here, a cold first start on 2 busy cores may take 20-40 s
PAGE_TIMEOUT = 60_000  # ms, for one page load or one UI element (a guard: 2 busy cores run lab, kernel, browser)
KERNEL_TIMEOUT = 90_000  # ms, for a kernel start and the widget's first render


def _require_browser_tools() -> None:
    missing = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (Debian's Chromium: `apt-get install -y chromium`; .ci/run does it as root)")
    for module, package in (("playwright.sync_api", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {package} (`pip install -e '.[browser]'`, also in the `test` extra)")
    if missing:
        pytest.fail("the browser test needs " + "; ".join(missing)
                    + ". It fails rather than skips so CI cannot pass without running it. "
                    "Never `playwright install`: the test drives the system Chromium.", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in a subprocess, isolated from the user's Jupyter and IPython settings."""

    def __init__(self, root: Path, home: Path, journal: Path, model_url: str) -> None:
        self.root, self.home, self.journal, self.model_url = root, home, journal, model_url
        self.port = _free_port()
        self.token = os.urandom(16).hex()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in {"JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "DURABLE_HEADLESS", "DURABLE_NOTEBOOK",
                            "JPY_SESSION_NAME", "OPENAI_BASE_URL", "OPENAI_API_KEY"}}
        dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
                "JUPYTERLAB_SETTINGS_DIR": "config/lab/user-settings",
                "JUPYTERLAB_WORKSPACES_DIR": "config/lab/workspaces", "IPYTHONDIR": "ipython"}
        for var, sub in dirs.items():
            (self.home / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(self.home / sub)
        # Never ask about (nor fetch) Jupyter news: the toast would cover the notebook.
        settings = self.home / dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab/apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env["DURABLE_JOURNAL"] = str(self.journal)
        env.update(OPENAI_BASE_URL=self.model_url, OPENAI_API_KEY="unused")  # the scripted stand-in model
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiets debugpy's warning in the kernel's log
        return env

    def start(self) -> None:
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            # No outside requests: no news feed, no update check, no PyPI extension manager.
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
        ]
        env = self.env()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, cwd=self.root, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + LAB_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self.proc.returncode} while starting\n{self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                if self.api("status").get("started"):
                    return
            time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer /api/status within {LAB_START_TIMEOUT} s\n{self.tail()}")

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"{self.url}/api/{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[dict[str, Any]]:
        with contextlib.suppress(OSError, ValueError):
            return self.api("kernels")
        return []

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no JupyterLab log)"
        return f"--- last {len(text)} lines of {self.log} ---\n" + "\n".join(text)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # Ask first: the server then shuts its kernels down, which a signal does not always manage.
        with contextlib.suppress(OSError, ValueError):
            self.api("shutdown", method="POST")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@pytest.fixture
def lab(tmp_path: Path, model_server: Any) -> Iterator[Lab]:
    _require_browser_tools()
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOKS / NOTEBOOK, root / NOTEBOOK)
    server = Lab(root, tmp_path / "jupyter-home", tmp_path / "journal.duckdb", model_server.base_url)
    try:
        started = time.monotonic()
        server.start()
        print(f"JupyterLab answered /api/status after {time.monotonic() - started:.1f} s")
        yield server
    finally:
        server.stop()


class Stages:
    """Named waits; one that times out saves a screenshot and reports the server log and console."""

    def __init__(self, page: Any, lab: Lab) -> None:
        self.page, self.lab = page, lab
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: self.console.append(f"[pageerror] {exc}"))

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        from playwright.sync_api import Error as PlaywrightError

        started = time.monotonic()
        try:
            yield
        except (PlaywrightError, AssertionError) as exc:
            shot = ARTIFACTS / f"failure-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.png"
            with contextlib.suppress(Exception):
                self.page.screenshot(path=str(shot), full_page=True)
            outputs = "(unreadable)"
            with contextlib.suppress(Exception):
                outputs = "\n".join(self.page.locator(".jp-OutputArea-output").all_inner_texts()) or "(none)"
            raise AssertionError(
                f"browser stage {name!r} failed after {time.monotonic() - started:.1f} s: {exc}\n"
                f"screenshot: {shot}\nkernels: {self.lab.kernels()}\ncell outputs:\n{outputs}\n"
                f"--- browser console (last 30) ---\n" + "\n".join(self.console[-30:]) + "\n" + self.lab.tail()
            ) from exc
        print(f"{name}: {time.monotonic() - started:.1f} s")


def _wait_until(page: Any, check: Callable[[], bool], timeout_ms: int, what: str) -> None:
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        if check():
            return
        page.wait_for_timeout(250)  # not time.sleep: Playwright delivers page events only inside its calls
    raise AssertionError(f"timed out after {timeout_ms / 1000:.0f} s waiting for {what}")


def _run_all(page: Any) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def _cell_done(cell: Any) -> None:
    """A cell has finished once its prompt shows an execution count instead of [*]."""
    from playwright.sync_api import expect

    expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"^\[\d+\]:$"), timeout=60_000)


def _open_notebook(page: Any, lab: Lab, ui: Stages, name: str) -> None:
    """Open a notebook of the lab's folder and wait until its kernel is idle and connected."""
    from playwright.sync_api import expect

    with ui.stage("open the notebook"):
        page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}", wait_until="domcontentloaded", timeout=60_000)
        expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible(timeout=60_000)
    with ui.stage("kernel idle"):
        _wait_until(page, lambda: any(k["execution_state"] == "idle" and k["connections"] > 0
                                      for k in lab.kernels()), KERNEL_TIMEOUT, "an idle, connected kernel")
        expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
            "data-status", "idle", timeout=KERNEL_TIMEOUT)


def test_approving_in_the_widget_resumes_the_cell_and_journals_the_decision(lab: Lab, model_server: Any):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    for stale in [*ARTIFACTS.glob("approval*.png"), *ARTIFACTS.glob("history.png"), *ARTIFACTS.glob("step-summary.png"),
                  *ARTIFACTS.glob("failure-*.png")]:
        stale.unlink()
    echoed: list[bool] = []  # the kernel echoed the whole comment back: it has it before the click

    def watch(ws: Any) -> None:
        def frame(payload: str | bytes) -> None:
            data = payload.encode() if isinstance(payload, str) else payload
            if b"echo_update" in data and json.dumps(COMMENT).encode() in data:
                echoed.append(True)
        ws.on("framereceived", frame)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                                    timeout=60_000)
        try:
            print(f"Chromium {browser.version}, JupyterLab at {lab.url}")
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(PAGE_TIMEOUT)
            page.on("websocket", watch)
            ui = Stages(page, lab)
            notebook = page.locator(".jp-NotebookPanel")
            outputs = notebook.locator(".jp-OutputArea-output")
            assess = notebook.locator(".jp-CodeCell").filter(has_text="%%durable assess")
            refund = notebook.locator(".jp-CodeCell").filter(has_text="%%durable refund")

            _open_notebook(page, lab, ui, NOTEBOOK)
            with ui.stage("run all cells"):
                _run_all(page)
            # Found by its prompt: its header says "Approval needed" only until it is decided.
            widget = outputs.locator(".widget-vbox").filter(has_text="Refund 120 EUR to Ana?")
            approve = widget.get_by_role("button", name="Approve")
            reject = widget.get_by_role("button", name="Reject")
            with ui.stage("the approval widget renders"):
                expect(approve).to_be_enabled(timeout=KERNEL_TIMEOUT)
                expect(reject).to_be_enabled()
                expect(widget).to_contain_text("Approval needed: Refund 120 EUR to Ana?")
                expect(widget).to_contain_text("refund-ana")
                expect(widget).to_contain_text("waiting for a decision since")
                expect(widget).to_contain_text("damaged parcel")
                amount = widget.locator("b", has_text=re.compile(r"^120$"))
                expect(amount).to_have_css("color", "rgb(180, 83, 9)")  # the amount stands out
                # While it waits, the step's line says for whom.
                expect(refund).to_contain_text("waiting for a person to decide approval 'refund-ana'")
            with ui.stage("type a comment"):
                comment = widget.get_by_placeholder("comment (optional)")
                comment.click()
                comment.press_sequentially(COMMENT, delay=15)
                expect(comment).to_have_value(COMMENT)
                # A person pauses before clicking; the test waits until the kernel has the whole comment
                # (ipywidgets echoes each update it receives), since a click may overtake a text update
                # the browser still holds back. If this times out, the kernel never got the full text:
                # see widgets/approval.py, _AcknowledgedTextarea.
                _wait_until(page, lambda: bool(echoed), 60_000,
                            f"the kernel to echo the whole comment {COMMENT!r} (the browser's widget manager "
                            "sends an update only after the kernel's idle status for the previous one)")
                refund.screenshot(path=str(ARTIFACTS / "approval-pending.png"))
            with ui.stage("approve and the cell goes on"):
                approve.click()
                expect(outputs.filter(has_text="refund approved: True")).to_have_count(1, timeout=60_000)
                expect(widget).to_contain_text("approved by")
                expect(widget).to_contain_text("Approved: Refund 120 EUR to Ana?")
                expect(widget).to_contain_text(COMMENT)
                for control in (approve, reject, comment):
                    expect(control).to_be_disabled()
                _cell_done(notebook.locator(".jp-CodeCell").last)
                refund.screenshot(path=str(ARTIFACTS / "approval.png"))
            printed = outputs.filter(has_text="refund approved:").inner_text()
            with ui.stage("each step's summary comes after the cell's own output"):
                for cell, step, own in ((assess, "assess", "model: [scripted]"), (refund, "refund", "refund approved")):
                    texts = cell.locator(".jp-OutputArea-output").all_inner_texts()
                    where = [i for i, t in enumerate(texts) if f"durable step '{step}'" in t]
                    assert where == [len(texts) - 1], texts  # one summary, the last output
                    assert any(own in t for t in texts[:-1]), texts
                summary = assess.locator(".jp-OutputArea-output").last.locator("div", has_text="durable step").last
                stream = assess.locator(".jp-OutputArea-output", has_text="model:").locator("pre")
                # Readable: the summary's text has the colour of the cell's own text, not a grey on grey.
                expect(summary).to_have_css("color", stream.evaluate("e => getComputedStyle(e).color"))
                expect(summary).to_have_css("opacity", "1")
                assess.scroll_into_view_if_needed()
                assess.screenshot(path=str(ARTIFACTS / "step-summary.png"))
            with ui.stage("run all again: every call replays"):
                _run_all(page)
                expect(assess.locator(".jp-OutputArea-output").last).to_contain_text(
                    "↻ durable step 'assess': 2 replayed from the journal", timeout=60_000)
                _cell_done(notebook.locator(".jp-CodeCell").last)
            history = outputs.locator(".dk-history")
            with ui.stage("the history shows the timeline, its legend and what replay saved"):
                expect(history).to_be_visible(timeout=60_000)
                expect(history).to_contain_text("session 'approval_demo': 2 steps, 3 calls")
                legend = history.locator(".dk-legend")
                for shade in ("live", "replayed", "waiting for a person", "failed / in doubt", "earlier record"):
                    expect(legend).to_contain_text(shade)
                saved = history.locator(".dk-saved")
                expect(saved).to_contain_text("replay saved")
                expect(saved).to_contain_text("of model time")
                saved_tokens = int(re.search(r"([\d,]+) tokens", saved.inner_text()).group(1).replace(",", ""))
                assert saved_tokens > 0
                bars = history.locator("button.dk-bar")
                expect(bars).to_have_count(3)
                expect(history.locator("button.dk-bar.dk-replayed")).to_have_count(2)  # assess's tool and model call
                expect(history.locator("button.dk-bar.dk-person")).to_have_count(1)  # the approval
            with ui.stage("a selected call shows its request and response under its bar's number"):
                row = history.locator(".dk-call").filter(has=page.locator("button.dk-label", has_text="· llm "))
                row.locator("button.dk-bar").click()
                selected = history.locator("button.dk-bar.dk-selected")
                expect(selected).to_have_count(1)
                number = selected.inner_text().strip()
                head = history.locator(".dk-detail-head")
                expect(head).to_contain_text(f"step assess · call {number}")
                expect(history.locator("button.dk-label.dk-selected")).to_have_text(
                    re.compile(rf"^call {number} · llm chat.completions"))
                detail = history.locator(".dk-detail")
                expect(detail).to_contain_text("Should we refund this order?")
                expect(detail.locator(".dk-bubble")).to_have_count(3)  # system, user, the model's reply
                expect(detail).to_contain_text("assistant · reply")
                history.screenshot(path=str(ARTIFACTS / "history.png"))
        finally:
            browser.close()

    # The step has ended, so the kernel has released the journal file (the server is still running).
    with Journal(lab.journal).open() as store:
        approvals = store.approvals()
        (tokens,) = store.con.execute("SELECT sum(prompt_tokens + completion_tokens) FROM calls "
                                      "WHERE kind = 'llm'").fetchone()
    assert len(approvals) == 1, approvals
    (approval,) = approvals
    assert (approval["session"], approval["step"], approval["key"]) == (SESSION, "refund", "refund-ana")
    decision = approval["decision"]
    assert decision["approved"] is True and decision["comment"] == COMMENT, decision
    assert f"refund approved: True by {decision['by']}" in printed
    assert saved_tokens == tokens  # one replay of the one model call
    assert model_server.stats()["requests"] == 1  # the second Run All sent nothing
