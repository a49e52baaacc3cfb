"""The history of a long session in pages: it opens on the latest steps with the whole session's totals
and one line on what was left out, earlier pages open on request, and what it costs to load and to draw
does not grow with the number of steps (counted in queries and bytes, never timed)."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from journal import Holder, Journal, Split, StepWriter, now, split_document
from journal._damage import GuardedConnection
from kernel_ext.cli.show import show_session
from kernel_ext.history import PAGE_STEPS, history_text, history_view, load_history
from kernel_ext.history.detail import all_details
from kernel_ext.history.html import history_html
from tests.harness import Kernel
from tests.test_history import _iopub_until_idle

STEPS = 200


def _build(path: Path, session: str, steps: int) -> None:
    """`steps` steps through the journal's own writer: a model call each, and a tool call every fourth."""
    journal = Journal(path)
    with journal.open() as store:
        store.claim_session(session, Holder.current("test"))
        for i in range(steps):
            run = store.begin_step(session, f"s{i:04d}", f"ask({i})")
            writer = StepWriter(journal, run, store.reserve_call_ids)
            request, response = Split(), Split()
            fingerprint = split_document({"body": {"model": "m", "messages": [
                {"role": "user", "content": f"question {i}"}]}}, request)
            key = split_document({"choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]},
                                 response)
            writer.record_call(seq=1, fingerprint=fingerprint, ordinal=0, kind="llm", name="chat.completions",
                               model="m", request=request, response=response, response_key=key,
                               meta={"body": "json"}, started_at=now(), usage=(10, 5))
            if i % 4 == 0:
                request, response = Split(), Split()
                fingerprint = split_document({"args": {"city": f"city {i}"}}, request)
                key = split_document({"sunny": True}, response)
                writer.record_call(seq=2, fingerprint=fingerprint, ordinal=0, kind="tool", name="lookup",
                                   request=request, response=response, response_key=key,
                                   meta={"body": "json"}, started_at=now())
            writer.end_step("completed", live=2 if i % 4 == 0 else 1, replayed=0)
    with journal.open() as store:  # shorter sessions with the same steps, for comparing sizes
        store.fork_session(session, "short", upto="s0059")
        store.fork_session(session, "tiny", upto="s0004")


@pytest.fixture(scope="module")
def long_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "journal.duckdb"
    _build(path, "long", STEPS)
    return path


class _Queries:
    """Counts the statements sent to DuckDB (every one goes through GuardedConnection.execute)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        execute = GuardedConnection.execute

        def counted(con: GuardedConnection, query: str, parameters: object = None) -> GuardedConnection:
            self.count += 1
            return execute(con, query, parameters)

        monkeypatch.setattr(GuardedConnection, "execute", counted)

    def of(self, action) -> int:
        before = self.count
        action()
        return self.count - before


def test_a_long_session_opens_on_its_latest_page_with_the_whole_sessions_totals(long_journal: Path):
    history = load_history(Journal(long_journal), "long")
    assert len(history.steps) == STEPS and history.left_out == 0 and history.note() == ""
    page = history.page()
    assert [s.name for s in page.steps] == [f"s{i:04d}" for i in range(STEPS - PAGE_STEPS, STEPS)]
    assert page.left_out == STEPS - PAGE_STEPS and len(page.earlier) == STEPS - PAGE_STEPS
    # The header is the whole session's, not the page's.
    calls = STEPS + STEPS // 4
    assert page.totals() == f"session 'long': {STEPS} steps, {calls} calls, {STEPS * 15:,} tokens"
    note = (f"{PAGE_STEPS} of {STEPS} steps shown (the latest; {STEPS - PAGE_STEPS} earlier not shown): "
            "durable show long --last N, or --step NAME")
    assert page.note() == note

    picture = history_html(page, all_details(Journal(long_journal), page))
    assert picture.count("class='dk-step-head'") == PAGE_STEPS
    assert note in picture and f"last runs: {calls} live, 0 replayed" in picture
    assert "question 199" in picture and "question 149" not in picture  # the page's own calls open in place
    text = history_text(page)
    assert note in text and "✓ s0199" in text and "✓ s0149" not in text


def test_an_earlier_page_opens_onto_the_steps_before_it(long_journal: Path):
    journal = Journal(long_journal)
    page = load_history(journal, "long").page()
    earlier = page.earlier_page()
    assert earlier is not None
    assert [s.name for s in earlier.steps] == [f"s{i:04d}" for i in range(100, 150)]
    assert earlier.note() == (f"50 of {STEPS} steps shown (steps 101 to 150; 100 earlier and 50 later not shown): "
                              "durable show long --last N, or --step NAME")
    picture = history_html(earlier, all_details(journal, earlier))
    assert "question 120" in picture and "question 160" not in picture and "s0100" in picture

    seen = [s.name for s in page.steps]
    while (page := page.earlier_page()) is not None:  # back to the first step, each step once
        seen[:0] = [s.name for s in page.steps]
    assert seen == [f"s{i:04d}" for i in range(STEPS)]


def test_a_page_holds_a_bounded_number_of_calls():
    from kernel_ext.history import CallView, SessionHistory, StepView

    def step(name: str, calls: int) -> StepView:
        views = [CallView(i, i, "tool", "t", None, "completed", 1, 1.0, None, None, None, None, True, step=name)
                 for i in range(calls)]
        return StepView(name, "completed", 1, 1.0, calls, 0, 0, None, views)

    history = SessionHistory("s", "j", [step("a", 10), step("b", 250), step("c", 100), step("huge", 10_000)])
    pages = [history.page()]
    while (earlier := pages[-1].earlier_page()) is not None:
        pages.append(earlier)
    # One step however many calls it has, else as many steps as fit in a page's calls.
    assert [[s.name for s in p.steps] for p in pages] == [["huge"], ["c"], ["a", "b"]]
    page = pages[0]
    assert page.calls == 10_360  # the totals stay the session's
    text = history_text(page)
    assert "… 9,800 more calls: durable show s --step huge" in text and text.count("call ") < 300


def test_loading_the_history_takes_as_many_queries_for_200_steps_as_for_5(long_journal: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    journal = Journal(long_journal)
    queries = _Queries(monkeypatch)
    load = {name: queries.of(lambda name=name: load_history(journal, name)) for name in ("tiny", "long")}
    assert load["tiny"] == load["long"] and load["long"] < 20, load
    # The HTML document (where no widget renders): the model, the page's details, the picture.
    shown = {name: queries.of(lambda name=name: history_view(journal, name)._repr_html_()) for name in ("tiny", "long")}
    assert shown["tiny"] == shown["long"], shown
    # A page's calls open together, not one query each.
    page = load_history(journal, "long").page()
    few, many = page.page(steps=2), page
    details = {len(p.steps): queries.of(lambda p=p: all_details(journal, p)) for p in (few, many)}
    assert details[2] == details[PAGE_STEPS], details


def test_the_html_of_a_long_session_is_the_size_of_a_page(long_journal: Path):
    journal = Journal(long_journal)
    sizes = {name: len(history_view(journal, name)._repr_html_()) for name in ("short", "long")}
    # 60 steps and 200: both draw the latest 50; the longer draws its note's larger numbers, no more.
    assert sizes["long"] < 1.05 * sizes["short"], sizes
    history = load_history(journal, "long")
    assert len(history_html(history, {})) > 3 * len(history_html(history.page(), {}))  # a page leaves out most
    assert "steps shown" not in history_view(journal, "tiny")._repr_html_()  # a short session is shown whole


def test_durable_show_pages_with_the_sessions_totals_and_says_what_it_left_out(long_journal: Path):
    def show(**options) -> str:
        out = io.StringIO()
        with redirect_stdout(out):
            assert show_session(Journal(long_journal), "long", False, **options) == 0
        return out.getvalue()

    last = show(last=3)
    assert f"session 'long': {STEPS} steps" in last and "✓ s0197" in last and "✓ s0196" not in last
    assert f"3 of {STEPS} steps shown (the latest; {STEPS - 3} earlier not shown)" in last
    one = show(steps=["s0007"])
    assert "✓ s0007" in one and f"1 of {STEPS} steps shown: durable show long lists every step" in one
    assert "steps shown" not in show()
    out = io.StringIO()
    with redirect_stdout(out):
        show_session(Journal(long_journal), "long", True, last=2)
    shown = json.loads(out.getvalue())
    assert [s["name"] for s in shown["steps"]] == ["s0198", "s0199"] and "earlier" not in shown
    assert shown["overall"]["steps"] == STEPS and shown["left_out"] == STEPS - 2


def test_the_widget_draws_the_latest_page_and_a_longer_session_sends_no_more(long_journal: Path, tmp_path: Path,
                                                                             kernel_env: dict[str, str]):
    # A copy: the kernel opens the journal for writing.
    folder = tmp_path / "copy"
    shutil.copytree(long_journal.parent, folder)
    kernel = Kernel({**kernel_env, "DURABLE_JOURNAL": str(folder / long_journal.name)}, tmp_path)
    try:
        kernel.ok("%load_ext kernel_ext")
        sent = {name: _iopub(kernel, f"%durable history {name}") for name in ("short", "long")}
    finally:
        kernel.shutdown()
    messages = sent["long"]
    opened = [m["content"]["data"]["state"] for m in messages if m["msg_type"] == "comm_open"]
    heads = [s["value"] for s in opened if "dk-step-head" in s.get("value", "")]
    assert len(heads) == PAGE_STEPS and "s0199" in heads[-1] and "s0150" in heads[0]
    assert any(f"{PAGE_STEPS} of {STEPS} steps shown" in s.get("value", "") for s in opened)
    (output,) = [m for m in messages if m["msg_type"] in ("execute_result", "display_data")]
    page = output["content"]["data"]["text/html"]
    assert page.count("class='dk-step-head'") == PAGE_STEPS and f"{PAGE_STEPS} of {STEPS} steps shown" in page
    size = {name: sum(len(json.dumps(m["content"])) for m in found) for name, found in sent.items()}
    assert size["long"] < 1.1 * size["short"], size  # 200 steps send what 60 do: a page


def _iopub(kernel: Kernel, code: str, timeout: float = 120) -> list[dict]:
    return _iopub_until_idle(kernel, kernel.kc.execute(code), timeout)


def test_the_widgets_earlier_button_draws_the_page_before_the_one_drawn(long_journal: Path):
    from widgets.history import HistoryView

    journal = Journal(long_journal)
    page = load_history(journal, "long", read_only=True).page()
    view = HistoryView(journal, page)
    drawn = lambda: [s.step.name for s in view.children if hasattr(s, "step")]  # noqa: E731
    assert drawn() == [f"s{i:04d}" for i in range(STEPS - PAGE_STEPS, STEPS)]
    assert "150 not shown" in view.earlier.description and view.earlier.layout.display == "flex"
    view.earlier.click()
    assert drawn() == [f"s{i:04d}" for i in range(STEPS - 2 * PAGE_STEPS, STEPS)]
    while view.earlier.layout.display != "none":
        view.earlier.click()
    assert drawn() == [f"s{i:04d}" for i in range(STEPS)]


def test_a_filter_and_a_search_hold_for_the_earlier_page_drawn_on_a_click(long_journal: Path):
    from widgets.history import HistoryView

    journal = Journal(long_journal)
    view = HistoryView(journal, load_history(journal, "long", read_only=True).page())
    shown = lambda: [s.step.name for s in view.sections if s.layout.display != "none"]  # noqa: E731
    view.kind.value = "tool"  # a tool call every fourth step
    assert shown() == [f"s{i:04d}" for i in range(152, STEPS, 4)]
    assert "12 of 62 calls match, in 12 of the 50 steps drawn" in view.counts.value
    view.earlier.click()
    assert shown() == [f"s{i:04d}" for i in range(100, STEPS, 4)]
    assert "25 of 125 calls match, in 25 of the 100 steps drawn" in view.counts.value

    view.kind.value = "all"
    view.query.value = "question 120"  # on the page drawn by the click
    assert shown() == ["s0120"] and "100 earlier steps not searched" in view.counts.value
    view.query.value = "question 99"  # before it: not searched, and it says so
    assert shown() == [] and "no call of the 125 in the 100 steps drawn matches" in view.counts.value
