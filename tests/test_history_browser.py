"""The history of a 1,000-call session in a real browser: JupyterLab in headless Chromium (see
tests/test_browser.py) runs a notebook whose loop makes 100 durable steps of 10 calls each (three turns
of a model call and two tools, then a booking) against the scripted stand-in model, then opens
`%durable history`. What a person sees is checked in the page, and photographed for a look by eye in
test-artifacts/: history-1000-default.png (the latest page, finished steps closed), history-1000-filter.png
(model calls only), history-1000-search.png (a search through prompts and results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from journal import Journal
from tests import test_browser
from tests.test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_FLAGS,
    PAGE_TIMEOUT,
    Lab,
    Stages,
    _cell_done,
    _open_notebook,
    _run_all,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
lab = test_browser.lab  # the JupyterLab server fixture, for this module's test too

NOTEBOOK = "thousand.ipynb"
SESSION = "thousand"
STEPS, CALLS = 100, 1000
FAILED = "day080"  # its booking fails: a failed step on the latest page
FOUND = "Coimbra"  # the one step that goes there: what the search looks for
VIEWPORT = {"width": 1400, "height": 2000}  # tall: the notebook scrolls inside the page, and a picture ends with it
WAIT = PAGE_TIMEOUT  # ms, for what a click changes: the kernel draws it, on 2 busy cores (a guard, not a target)

SETUP = """%load_ext kernel_ext
%durable session thousand
import kernel_ext
from openai import OpenAI
from kernel_ext import tool
client = OpenAI(max_retries=0)

@tool
def lookup(city: str, day: int) -> dict:
    return {"city": city, "day": day, "sunny": day % 3 != 0}

@tool
def book(city: str, day: int) -> str:
    if day == 80:
        raise ValueError(f"no seats to {city} on day {day}")
    return f"booked {city} for day {day}"
"""

# 100 steps of 10 calls: three turns of a model call and two tool calls, then the booking.
BUILD = """failed = []
for day in range(100):
    city = "Coimbra" if day == 85 else ["Lisbon", "Porto", "Faro", "Braga", "Evora"][day % 5]
    try:
        with kernel_ext.step(f"day{day:03d}"):
            for turn in range(3):
                client.chat.completions.create(model="m", messages=[
                    {"role": "user", "content": f"Day {day}, turn {turn}: what next in {city}?"}])
                lookup(city, day)
                lookup("Oslo", day)
            book(city, day)
    except ValueError as exc:
        failed.append(str(exc))
print("built", failed)
"""


def _shoot(page: Any, history: Any, name: str) -> None:
    """The history from its top down to the window's bottom (JupyterLab scrolls the notebook, not the page)."""
    history.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)  # a frame for the scroll to paint
    box = history.bounding_box()
    height = min(box["height"], VIEWPORT["height"] - box["y"])
    page.screenshot(path=str(ARTIFACTS / name), clip={**box, "height": height})


def test_the_history_of_a_thousand_calls_opens_closed_and_filters_and_searches(lab: Lab, model_server: Any):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    for stale in ARTIFACTS.glob("history-1000-*.png"):
        stale.unlink()
    notebook = new_notebook(cells=[new_code_cell(SETUP), new_code_cell(BUILD), new_code_cell("%durable history")],
                            metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                     "name": "python3"}})
    nbformat.write(notebook, Path(lab.root) / NOTEBOOK)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
                                    timeout=60_000)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(PAGE_TIMEOUT)
            ui = Stages(page, lab)
            panel = page.locator(".jp-NotebookPanel")
            history = panel.locator(".jp-OutputArea-output .dk-history")
            counts = history.locator(".dk-count")
            steps = history.locator(".dk-step")
            opened = history.locator(".dk-step button.dk-toggle", has_text="▾").filter(visible=True)

            _open_notebook(page, lab, ui, NOTEBOOK)
            with ui.stage("run all: 1,000 calls, then the history"):
                _run_all(page)
                build = panel.locator(".jp-CodeCell").nth(1)
                expect(build.locator(".jp-OutputArea-output", has_text="built")).to_contain_text(
                    "no seats to Lisbon on day 80", timeout=600_000)  # a guard for 2 busy cores, not a target
                _cell_done(panel.locator(".jp-CodeCell").last)
                expect(history).to_be_visible(timeout=120_000)

            with ui.stage("the latest page, with the finished steps closed"):
                expect(history).to_contain_text(f"session '{SESSION}': {STEPS} steps, {CALLS} calls")
                expect(history).to_contain_text("30 of 100 steps shown (the latest; 70 earlier not shown)")
                expect(counts).to_have_text("300 calls in the 30 steps drawn · finished steps are closed: ▸ opens one")
                expect(steps).to_have_count(30)
                expect(opened).to_have_count(2)  # the failed step and the latest
                failed = steps.filter(has_text=f"✗ {FAILED}")
                latest = steps.filter(has_text="✓ day099")
                for step in (failed, latest):
                    expect(step.locator("button.dk-toggle")).to_have_text("▾")
                    expect(step.locator(".dk-call")).to_have_count(10)
                # Turns: each model call carries its turn, its two tools sit under it.
                expect(latest.locator(".dk-turn")).to_have_text(["turn 1", "turn 2", "turn 3"])
                expect(latest.locator("button.dk-label.dk-under")).to_have_count(7)
                expect(failed.locator("button.dk-bar.dk-failed")).to_have_count(1)
                expect(history.locator(".dk-call")).to_have_count(20)  # closed steps are not drawn
                _shoot(page, history, "history-1000-default.png")

            with ui.stage("a filter: model calls only"):
                history.locator(".dk-kind").get_by_role("button", name="model", exact=True).click()
                expect(counts).to_have_text("90 of 300 calls match, in 30 of the 30 steps drawn", timeout=WAIT)
                expect(opened).to_have_count(30, timeout=WAIT)
                expect(history.locator(".dk-call").filter(visible=True)).to_have_count(90, timeout=WAIT)
                expect(history.locator(".dk-matches").first).to_have_text("3 of 10 calls match")
                history.locator(".dk-status").get_by_role("button", name="live", exact=True).click()
                expect(history.locator(".dk-status button.mod-active")).to_have_text("live", timeout=WAIT)
                expect(counts).to_have_text("90 of 300 calls match, in 30 of the 30 steps drawn", timeout=WAIT)
                _shoot(page, history, "history-1000-filter.png")
                history.locator(".dk-status").get_by_role("button", name="failed / in doubt", exact=True).click()
                history.locator(".dk-kind").get_by_role("button", name="all", exact=True).click()
                expect(counts).to_have_text("1 of 300 calls match, in 1 of the 30 steps drawn", timeout=WAIT)
                expect(steps.filter(visible=True)).to_have_count(1, timeout=WAIT)
                expect(steps.filter(visible=True)).to_contain_text(FAILED)
                history.locator(".dk-status").get_by_role("button", name="all", exact=True).click()
                expect(opened).to_have_count(2, timeout=WAIT)  # no filter: open as before

            with ui.stage("a search through prompts and results"):
                search = history.locator(".dk-search input")
                search.fill(FOUND.lower())
                search.press("Enter")
                expect(counts).to_contain_text(f"“{FOUND.lower()}”: 7 of 300 calls match, in 1 of the 30 steps drawn",
                                               timeout=WAIT)
                expect(counts).to_contain_text("70 earlier steps not searched")
                found = steps.filter(visible=True)
                expect(found).to_have_count(1, timeout=WAIT)
                expect(found).to_contain_text("day085")
                # Its three prompts, three lookups and the booking, not the lookups of Oslo.
                expect(found.locator(".dk-call")).to_have_count(7, timeout=WAIT)
                found.locator("button.dk-label", has_text="call 10 · tool book").click()
                expect(history.locator(".dk-detail")).to_contain_text(f"booked {FOUND} for day 85", timeout=WAIT)
                _shoot(page, history, "history-1000-search.png")
        finally:
            browser.close()

    with Journal(lab.journal).open(read_only=True) as store:
        (calls,) = store.con.execute("SELECT count(*) FROM calls WHERE session = ?", [SESSION]).fetchone()
    assert calls == CALLS
    assert model_server.stats()["requests"] == 3 * STEPS
