"""Seeing what the agent did: the history widget (driven the way a browser drives it), its HTML
rendering in an nbclient run, the live progress line, SQL from the notebook, fork and forget."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from journal import Journal
from tests.harness import Kernel, run_notebook

SETUP = """%load_ext kernel_ext
from openai import OpenAI
from kernel_ext import tool
client = OpenAI(max_retries=0)

@tool
def lookup(city: str) -> dict:
    return {"city": city, "sunny": True}
"""

PLAN = """%%durable plan
reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Plan a day in Lisbon"}])
weather = lookup("Lisbon")
"""

ACT = """%%durable act
answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Book the tram to Belem"}])
"""


def _step(name: str, prompt: str) -> str:
    return (f"%%durable {name}\nclient.chat.completions.create(model='m', "
            f"messages=[{{'role': 'user', 'content': {prompt!r}}}])")


def _iopub_until_idle(kernel: Kernel, msg_id: str, timeout: float = 60) -> list[dict]:
    messages, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = kernel.kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
    raise AssertionError("the cell did not finish")


def _models(messages: list[dict], name: str) -> list[tuple[str, dict]]:
    return [(m["content"]["comm_id"], m["content"]["data"]["state"]) for m in messages
            if m["msg_type"] == "comm_open" and m["content"]["data"]["state"].get("_model_name") == name]


def _send_click(kernel: Kernel, comm_id: str) -> None:
    """What a browser sends when a Button is clicked."""
    kernel.kc.shell_channel.send(kernel.kc.session.msg("comm_msg", {
        "comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}))


def _recorded(journal: Path, session: str, step: str) -> tuple[int, float]:
    """Tokens and model seconds of a step's current recorded model calls, straight from the calls view."""
    with Journal(journal).open() as store:
        tokens, ms = store.con.execute(
            "SELECT sum(prompt_tokens + completion_tokens), sum(latency_ms) FROM calls "
            "WHERE session = ? AND step = ? AND kind = 'llm' AND current", [session, step]).fetchone()
    return int(tokens), float(ms) / 1000


def test_history_widget_draws_the_timeline_and_shows_a_selected_call_under_one_number(kernel: Kernel, model_server,
                                                                                      tmp_path: Path):
    kernel.ok(SETUP + "\n%durable session trip")
    kernel.ok(PLAN)
    kernel.ok(ACT)
    kernel.ok(PLAN)  # a replay: the history says which calls the last run replayed, and what that saved

    messages = _iopub_until_idle(kernel, kernel.kc.execute("%durable history"))
    buttons = _models(messages, "ButtonModel")
    labels = [(i, s) for i, s in buttons if "dk-label" in s["_dom_classes"]]
    bars = [(i, s) for i, s in buttons if "dk-bar" in s["_dom_classes"]]
    # One number per call, the call's place in its step: the list and the bars say the same.
    assert [s["description"] for _, s in labels] == ["call 1 · llm chat.completions [m]", "call 2 · tool lookup",
                                                     "call 1 · llm chat.completions [m]"]
    assert [s["description"] for _, s in bars] == ["1", "2", "1"]
    # Coloured by what the last run of each step did: plan replayed, act went live.
    assert ["dk-replayed" in s["_dom_classes"] for _, s in bars] == [True, True, False]
    assert "dk-live" in bars[2][1]["_dom_classes"]
    assert len({s["style"] for _, s in bars}) == 2  # one colour for replayed, another for live

    pages = " ".join(s["value"] for _, s in _models(messages, "HTMLModel"))
    assert "dk-legend" in pages and all(word in pages for word in ("live", "replayed", "waiting for a person"))
    tokens, _ = _recorded(tmp_path / "journal.duckdb", "trip", "plan")
    assert "replay saved" in pages and f"{tokens:,} tokens" in pages

    # Clicking a bar, exactly as a browser does, opens that call under its row as a conversation.
    (detail_id, _), = [(i, s) for i, s in _models(messages, "HTMLModel") if "dk-detail-panel" in s["_dom_classes"]]
    _send_click(kernel, bars[1][0])
    shown = _until_value(kernel, detail_id, "step plan · call 2")
    assert "tool lookup" in shown and "&quot;city&quot;: &quot;Lisbon&quot;" in shown
    with Journal(tmp_path / "journal.duckdb").open() as store:
        (tool_id,) = store.con.execute("SELECT id FROM calls WHERE kind = 'tool'").fetchone()
    assert f"journal id {tool_id}<" in shown  # the journal's id only beside the number, for commands that need it

    _send_click(kernel, labels[0][0])  # the row's name selects too
    shown = _until_value(kernel, detail_id, "step plan · call 1")
    assert "Plan a day in Lisbon" in shown and "assistant · reply" in shown
    assert "[scripted]" in shown  # the scripted model's answer, read back from the journal

    # Where widgets cannot render, the same output carries the picture as HTML.
    (output,) = [m for m in messages if m["msg_type"] in ("execute_result", "display_data")]
    page = output["content"]["data"]["text/html"]
    assert "dk-legend" in page and "replay saved" in page and "Book the tram to Belem" in page
    assert "&quot;sunny&quot;: true" in page  # a tool's result as JSON, not Python's repr


def _until_value(kernel: Kernel, comm_id: str, wanted: str, timeout: float = 120) -> str:
    deadline, value = time.monotonic() + timeout, ""
    while time.monotonic() < deadline and wanted not in value:
        msg = kernel.kc.get_iopub_msg(timeout=timeout)
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            value = msg["content"]["data"].get("state", {}).get("value", value)
    assert wanted in value, value
    return value


def test_history_renders_as_html_in_an_nbclient_run(tmp_path: Path, kernel_env, model_server):
    notebook = tmp_path / "trip.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in (SETUP, PLAN, ACT, "%durable history")]), notebook)
    nb = run_notebook(notebook, kernel_env, tmp_path)
    (output,) = nb.cells[-1].outputs
    page, text = output["data"]["text/html"], output["data"]["text/plain"]
    assert "<details" in page and "Plan a day in Lisbon" in page and "Book the tram to Belem" in page
    assert "dk-legend" in page and "waiting for a person" in page and "replay saved" in page
    # The row, its bar and the call's own heading carry the same number.
    assert "<b>call 2</b> · tool lookup" in page and "step plan · call 2" in page
    assert "session 'trip': 2 steps, 3 calls" in text and "✓ plan" in text and "call 2 · tool lookup" in text
    assert "replay saved nothing yet" in text  # nothing replayed in a first run


def test_replay_saved_is_what_the_replayed_calls_cost_when_recorded(kernel: Kernel, model_server, tmp_path: Path):
    from kernel_ext.history import history_text, load_history
    from kernel_ext.history.detail import call_detail
    from kernel_ext.history.html import history_html

    journal = tmp_path / "journal.duckdb"
    prices = tmp_path / "prices.json"
    prices.write_text('{"m": {"input": 2.0, "output": 8.0, "currency": "EUR"}}')
    model_server.configure(delay=0.2)  # model time worth saving
    kernel.ok(SETUP + f"\n%durable session trip\n%durable prices {prices}")
    kernel.ok(ACT)  # first, so that plan's journal ids are not its calls' numbers
    kernel.ok(PLAN)
    before = load_history(Journal(journal), "trip")
    assert before.saved.calls == 0 and before.saved.tokens == 0

    kernel.ok(PLAN)
    assert model_server.stats()["requests"] == 2  # the second run of plan replayed
    history = load_history(Journal(journal), "trip")
    tokens, seconds = _recorded(journal, "trip", "plan")
    _, plan = history.steps
    llm, tool = plan.calls
    assert tokens > 0 and history.saved.tokens == tokens == plan.saved.tokens
    assert (history.saved.calls, history.saved.model_calls, history.saved.tool_runs) == (2, 1, 1)
    assert abs(history.saved.model_seconds - seconds) < 1e-6 and seconds >= 0.2
    assert history.saved.currency == "EUR"
    assert abs(history.saved.cost - (llm.prompt_tokens * 2.0 + llm.completion_tokens * 8.0) / 1e6) < 1e-9

    kernel.ok(PLAN)  # every run that replays saves again
    again = load_history(Journal(journal), "trip")
    assert again.saved.tokens == 2 * tokens and again.saved.calls == 4

    # One number for a call wherever a person sees it: the list, the detail, the text, the picture.
    assert (llm.ref, tool.ref) == ("step plan · call 1", "step plan · call 2") and tool.id != tool.seq
    detail = call_detail(Journal(journal), tool)
    assert detail.title == "step plan · call 2" and detail.journal_id == tool.id
    text = history_text(again)
    assert "call 2 · tool lookup · completed · replayed" in text and f"call {tool.id} " not in text
    assert f"replay saved 4 calls (2 model calls, 2 tool runs): {2 * tokens:,} tokens" in text
    assert "<b>call 2</b> · tool lookup" in history_html(again, {})


def test_the_step_summary_comes_after_the_cells_own_output(kernel: Kernel, model_server):
    kernel.ok(SETUP)
    cell = ("%%durable chat\nfor i in range(2):\n    reply = client.chat.completions.create(model='m', "
            "messages=[{'role': 'user', 'content': f'turn {i}'}])\n    print('answer', i)")
    for run in ("live", "replayed"):
        outputs = kernel.ok(cell)
        marked = [i for i, o in enumerate(outputs) if "durable" in o.get("metadata", {})]
        printed = [i for i, o in enumerate(outputs) if o["output_type"] == "stream" and "answer" in o["text"]]
        assert marked == [len(outputs) - 1], outputs  # one summary, the cell's last output
        assert printed and max(printed) < marked[0]
        summary = outputs[-1]["data"]["text/plain"]
        assert summary.startswith("↻ " if run == "replayed" else "✓ ") and "durable step 'chat'" in summary
        # The live line, shown at the first call above what the cell printed, was emptied: nothing renders.
        assert outputs[0] == {"output_type": "display_data", "data": {}, "metadata": {}}


def test_progress_line_is_updated_in_place_and_becomes_the_summary(kernel: Kernel, model_server):
    model_server.configure(delay=0.4)  # slow enough for several updates
    kernel.ok(SETUP)
    cell = "%%durable loop\nfor i in range(3):\n    client.chat.completions.create(model='m', " \
           "messages=[{'role': 'user', 'content': f'turn {i}'}])"
    messages = _iopub_until_idle(kernel, kernel.kc.execute(cell))
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    (first,) = shown  # one line, not one per call
    display_id = first["content"]["transient"]["display_id"]
    assert first["content"]["metadata"]["durable"]["state"] == "running"
    assert "⟳ durable step 'loop'" in first["content"]["data"]["text/plain"]
    assert len(updates) >= 3 and all(u["content"]["transient"]["display_id"] == display_id for u in updates)
    assert any("call 3 live…" in u["content"]["data"]["text/plain"] for u in updates)
    final = updates[-1]["content"]
    assert final["metadata"]["durable"] == {"step": "loop", "replayed": 0, "live": 3}
    assert "3 live, journaled" in final["data"]["text/plain"] and "tokens" in final["data"]["text/plain"]


def test_fork_replays_the_shared_prefix_diverges_after_it_and_leaves_the_original(kernel: Kernel, model_server,
                                                                                  tmp_path: Path):
    kernel.ok(SETUP + "\n%durable session trip")
    for name, prompt in (("a", "first"), ("b", "second"), ("c", "third")):
        kernel.ok(_step(name, prompt))
    assert model_server.stats()["requests"] == 3
    with Journal(tmp_path / "journal.duckdb").open() as store:
        original = store.con.execute("SELECT id, step, status, fingerprint FROM call_rows "
                                     "WHERE session = 'trip' ORDER BY id").fetchall()

    out = kernel.ok("%durable fork alt --from b")
    assert "forked session 'trip' into 'alt' (2 steps: a, b)" in "".join(o.get("text", "") for o in out)
    kernel.ok(_step("a", "first"))
    kernel.ok(_step("b", "second"))
    assert model_server.stats()["requests"] == 3  # the shared prefix replays
    kernel.ok(_step("c", "third, but by boat"))
    assert model_server.stats()["requests"] == 4  # after the fork point the new session goes its own way

    with Journal(tmp_path / "journal.duckdb").open() as store:
        assert store.con.execute("SELECT id, step, status, fingerprint FROM call_rows "
                                 "WHERE session = 'trip' ORDER BY id").fetchall() == original
        steps = store.con.execute("SELECT session, name, calls FROM steps ORDER BY session, name").fetchall()
    assert steps == [("alt", "a", 1), ("alt", "b", 1), ("alt", "c", 1),
                     ("trip", "a", 1), ("trip", "b", 1), ("trip", "c", 1)]

    kernel.ok("%durable session trip")
    kernel.ok(_step("c", "third"))
    assert model_server.stats()["requests"] == 4  # the original still replays its own step c

    status, outputs = kernel.execute("%durable fork alt")
    assert status == "error" and "exists already" in "".join(o.get("text", "") for o in outputs)
    status, outputs = kernel.execute("%durable fork other --from nope")
    assert status == "error" and "has no step 'nope'; its steps: a, b, c" in "".join(o.get("text", "") for o in outputs)


def test_forget_makes_a_step_run_live_and_keeps_its_history(kernel: Kernel, model_server):
    kernel.ok(SETUP + "\n%durable session trip")
    kernel.ok(_step("a", "first"))
    kernel.ok(_step("a", "first"))
    assert model_server.stats()["requests"] == 1
    out = kernel.ok("%durable forget a")
    assert "runs live next time" in "".join(o.get("text", "") for o in out)
    kernel.ok(_step("a", "first"))
    assert model_server.stats()["requests"] == 2
    kernel.ok(_step("a", "first"))
    assert model_server.stats()["requests"] == 2  # the new recording replays
    out = kernel.ok("rows = %durable sql SELECT epoch, current, status FROM calls ORDER BY id\n"
                    "print([list(map(str, r)) for r in (rows.itertuples(index=False) if hasattr(rows, 'itertuples') "
                    "else rows.rows)])")
    table = "".join(o.get("text", "") for o in out)
    assert table.strip() == "[['1', 'False', 'completed'], ['2', 'True', 'completed']]"  # forgotten, not destroyed
    status, outputs = kernel.execute("%durable sql DELETE FROM call_records")
    assert status == "error" and "read-only" in "".join(o.get("text", "") for o in outputs)


def test_a_night_between_two_runs_of_a_step_is_drawn_as_a_short_break():
    from datetime import datetime, timedelta

    from kernel_ext.history import CallView
    from kernel_ext.history.layout import step_track

    start = datetime(2026, 11, 30, 9, 0, 0)

    def call(seq: int, at: float, seconds: float) -> CallView:
        began = start + timedelta(seconds=at)
        return CallView(seq, seq, "llm", "chat.completions", "m", "completed", 1, seconds * 1000, 1, 1, None, None,
                        False, "replayed", step="research", started_at=began,
                        ended_at=began + timedelta(seconds=seconds))

    # Two calls before a kill, two the next morning: 8 s of calls, 12 h apart.
    calls = [call(1, 0, 2), call(2, 2, 2), call(3, 12 * 3600, 2), call(4, 12 * 3600 + 2, 2)]
    track = step_track(calls)
    bars = [track.bars[c.id] for c in calls]
    assert track.seconds < 9  # the night is left out of the axis
    assert [(round(b.left, 2), round(b.width, 2)) for b in bars[:2]] == [(0.0, 0.24), (0.24, 0.24)]
    assert bars[2].left > bars[1].left + bars[1].width and abs(bars[3].left + bars[3].width - 1) < 1e-9
    ((where, gap),) = track.breaks  # and marked where it was, with how long it lasted
    assert bars[1].left + bars[1].width < where < bars[2].left and gap == 12 * 3600 - 4


def test_a_tool_in_doubt_shows_the_command_that_settles_it_with_its_journal_id(tmp_path: Path):
    import shlex
    import subprocess
    import sys

    import kernel_ext
    from kernel_ext import tool
    from kernel_ext.history import history_text, load_history

    @tool
    def quote(amount: int) -> int:
        return amount

    @tool
    def charge(amount: int) -> str:
        raise KeyboardInterrupt  # what Kernel -> Interrupt raises inside a running tool

    journal = tmp_path / "j.duckdb"
    kernel_ext.session("shop 1", journal=journal)
    with kernel_ext.step("quote"):  # first, so that the journal's id of the charge is not its number
        quote(5)
    try:
        with kernel_ext.step("pay"):
            charge(5)
    except KeyboardInterrupt:
        pass
    (pay,) = [s for s in load_history(Journal(journal), "shop 1").steps if s.name == "pay"]
    (call,) = pay.calls
    assert call.in_doubt and call.shade == "failed" and call.ref == "step pay · call 1" and call.id != 1
    line = next(line for line in history_text(load_history(Journal(journal), "shop 1")).splitlines()
                if "tool charge" in line)
    assert line.strip().startswith("call 1 · tool charge · in doubt")
    command = line.split(": ", 1)[1].replace(" --value JSON | --retry", " --retry")
    assert command == f"durable settle 'shop 1' {call.id} --retry"
    settled = subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *shlex.split(command)[1:],
                              "--journal", str(journal)], capture_output=True, text=True, timeout=120)
    assert settled.returncode == 0, settled.stdout + settled.stderr
    (pay,) = [s for s in load_history(Journal(journal), "shop 1").steps if s.name == "pay"]
    assert not any(c.in_doubt for c in pay.calls)


# -- a long history, read by turns: steps that start closed, filters, search ------------------------

def _model_client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def _ask(client, prompt: str) -> None:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session of 38 calls through the runtime itself: finished steps of two turns each (one replayed
    once), a step that failed, one with a tool in doubt, one waiting for a decision, and the latest."""
    import kernel_ext
    from kernel_ext import approve, tool
    from kernel_ext.approvals import StepSuspended
    from kernel_ext.scripted.server import ScriptedModelServer

    path = tmp_path_factory.mktemp("desk") / "journal.duckdb"

    @tool
    def lookup(city: str) -> dict:
        return {"city": city, "sunny": city != "Oslo"}

    @tool
    def book(city: str) -> str:
        if city == "Atlantis":
            raise ValueError("no trains to Atlantis")
        return f"booked {city}"

    @tool
    def charge(amount: int) -> str:
        raise KeyboardInterrupt  # what Kernel -> Interrupt raises inside a running tool: the call is in doubt

    def trip(i: int) -> None:
        _ask(client, f"Plan day {i} in {CITIES[i]}")
        lookup(CITIES[i])
        lookup("Oslo")
        _ask(client, f"Which train on day {i}?")
        book(CITIES[i])

    with ScriptedModelServer() as server:
        client = _model_client(server)
        kernel_ext.session("desk", journal=path)
        with kernel_ext.step("warmup"):  # no model call: a step without turns
            lookup("Faro")
        for i in range(6):
            with kernel_ext.step(f"day{i}"):
                trip(i)
        with kernel_ext.step("day0"):  # the same again: every call replays
            trip(0)
        with pytest.raises(ValueError), kernel_ext.step("broken"):
            _ask(client, "Book the train to Atlantis")
            book("Atlantis")
        with contextlib.suppress(KeyboardInterrupt), kernel_ext.step("doubt"):
            charge(12)
        with pytest.raises(StepSuspended), kernel_ext.step("ask"):
            _ask(client, "May I spend 300 EUR?")
            approve("Spend 300 EUR?", key="spend").approved  # noqa: B018 - reading it suspends the step
        with kernel_ext.step("last"):
            _ask(client, "Summarise the week")
            lookup("Porto")
    return path


CITIES = ["Lisbon", "Madrid", "Sevilla", "Bilbao", "Girona", "Toledo"]
STEPS = ["warmup", *(f"day{i}" for i in range(6)), "broken", "doubt", "ask", "last"]


def _view(path: Path):
    from kernel_ext.history import load_history
    from widgets.history import HistoryView

    journal = Journal(path)
    return HistoryView(journal, load_history(journal, "desk").page())


def _open(view) -> list[str]:
    return [s.step.name for s in view.sections if s.is_open and s.layout.display != "none"]


def _visible(view) -> list[str]:
    return [s.step.name for s in view.sections if s.layout.display != "none"]


def _rows(section) -> list[str]:
    return [row.label.description for row in section.calls.children if hasattr(row, "label")]


def _counts(view) -> str:
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", view.counts.value))


def test_a_model_call_leads_its_turn_and_the_calls_after_it_sit_under_it(desk: Path):
    from kernel_ext.history import load_history
    from kernel_ext.history.browse import places
    from kernel_ext.history.html import history_html

    history = load_history(Journal(desk), "desk")
    day = next(s for s in history.steps if s.name == "day2")
    where = places(day.calls)
    assert [(where[c.id].mark, where[c.id].under) for c in day.calls] == [
        ("turn 1", False), ("", True), ("", True), ("turn 2", False), ("", True)]

    view = _view(desk)
    section = next(s for s in view.sections if s.step.name == "day2")
    section.flip()
    rows = list(section.calls.children)
    assert _rows(section) == ["call 1 · llm chat.completions [m]", "call 2 · tool lookup", "call 3 · tool lookup",
                              "call 4 · llm chat.completions [m]", "call 5 · tool book"]
    marks = [row.line.children[0].value for row in rows if len(row.line.children) == 4]
    assert len(marks) == 2 and ">turn 1<" in marks[0] and ">turn 2<" in marks[1]
    # The calls after a model call are indented under it; the model calls carry their turn instead.
    assert ["dk-under" in row.label._dom_classes for row in rows] == [False, True, True, False, True]
    # Each row keeps its bar and figures, and its bar still says the call's number.
    assert [row.bar.description for row in rows] == ["1", "2", "3", "4", "5"]
    warmup = next(s for s in view.sections if s.step.name == "warmup")
    warmup.flip()
    (row,) = warmup.calls.children
    assert len(row.line.children) == 3 and "dk-indent" not in row.label._dom_classes  # no turns, no indent

    page = history_html(history, {})
    day2 = page[page.index("day2"):page.index("day3")]
    assert day2.count("class='dk-turn'") == 2 and day2.count("└") == 3 and "<b>call 5</b> · tool book" in day2


def test_an_edited_request_leaves_an_earlier_turn_that_is_not_counted(tmp_path: Path, model_server):
    import kernel_ext
    from kernel_ext import tool
    from kernel_ext.history import load_history
    from kernel_ext.history.browse import places

    @tool
    def lookup(city: str) -> str:
        return city

    client = _model_client(model_server)
    kernel_ext.session("edit", journal=tmp_path / "j.duckdb")
    for prompt in ("Plan Lisbon", "Plan Porto"):  # the second run edits the prompt at call 1
        with kernel_ext.step("plan"):
            _ask(client, prompt)
            lookup("Porto")
    (step,) = load_history(Journal(tmp_path / "j.duckdb"), "edit").steps
    where = places(step.calls)
    assert [(c.seq, c.kind, c.shade) for c in step.calls] == [(1, "llm", "earlier"), (1, "llm", "live"),
                                                              (2, "tool", "replayed")]
    # The earlier record leads a group of its own; the last run's model call is its first turn.
    assert [where[c.id].mark for c in step.calls] == ["earlier", "turn 1", ""]
    assert where[step.calls[2].id].turn == 1 and not where[step.calls[2].id].earlier


def test_finished_steps_start_closed_and_those_worth_a_look_open(desk: Path):
    view = _view(desk)
    assert [s.step.name for s in view.sections] == STEPS
    # Failed, in doubt, waiting for a decision: open, with the latest. The finished ones are closed.
    assert _open(view) == ["broken", "doubt", "ask", "last"]
    assert all(not s.calls.children for s in view.sections if not s.is_open)  # closed steps are built on a click
    assert _counts(view) == "38 calls in the 11 steps drawn · finished steps are closed: ▸ opens one"
    day = view.sections[1]
    day.toggle.click()  # one click opens it
    assert day.is_open and _rows(day)[0] == "call 1 · llm chat.completions [m]" and day.toggle.description == "▾"

    from kernel_ext.history import load_history
    from kernel_ext.history.html import history_html

    page = history_html(load_history(Journal(desk), "desk"), {})
    assert page.count("<details class='dk-step'") == len(STEPS)
    opened = re.findall(r"<details class='dk-step' open[^>]*><summary[^>]*><span>▸</span>"
                        r"<div class='dk-step-head'[^>]*><b>\S+ ([^<]+)</b>", page)
    assert opened == ["broken", "doubt", "ask", "last"] and "steps that finished are closed" in page


def test_a_short_history_opens_whole(tmp_path: Path):
    import kernel_ext
    from kernel_ext import tool
    from kernel_ext.history import load_history
    from widgets.history import HistoryView

    @tool
    def note(text: str) -> str:
        return text

    kernel_ext.session("short", journal=tmp_path / "j.duckdb")
    for name in ("a", "b", "c"):
        with kernel_ext.step(name):
            note(name)
    journal = Journal(tmp_path / "j.duckdb")
    view = HistoryView(journal, load_history(journal, "short").page())
    assert [s.is_open for s in view.sections] == [True, True, True]
    assert _counts(view) == "3 calls in the 3 steps drawn"


def test_filters_by_kind_and_status_hide_the_rest_and_say_how_many_match(desk: Path):
    view = _view(desk)
    view.kind.value = "model"
    assert _counts(view) == "15 of 38 calls match, in 9 of the 11 steps drawn"
    assert _visible(view) == [*(f"day{i}" for i in range(6)), "broken", "ask", "last"]
    assert _open(view) == _visible(view)  # few enough rows: every step with a match opens
    assert _rows(view.sections[1]) == ["call 1 · llm chat.completions [m]", "call 4 · llm chat.completions [m]"]
    assert "2 of 5 calls match" in view.sections[1].title.value  # said in the step's title

    view.kind.value = "tool"
    view.status.value = "failed"
    assert _counts(view) == "2 of 38 calls match, in 2 of the 11 steps drawn"
    assert _visible(view) == ["broken", "doubt"]
    assert _rows(view.sections[7]) == ["call 2 · tool book"] and _rows(view.sections[8]) == ["call 1 · tool charge"]

    view.kind.value = "all"
    view.status.value = "replayed"
    assert _visible(view) == ["day0"] and len(_rows(view.sections[1])) == 5
    view.status.value = "undecided"
    assert _visible(view) == ["ask"] and _rows(view.sections[9]) == ["call 2 · approval spend"]
    view.status.value = "earlier"
    assert _visible(view) == [] and _counts(view) == "no call of the 38 in the 11 steps drawn matches"

    view.status.value = "all"  # no filter: every step again, open as it was
    assert _visible(view) == STEPS and _open(view) == ["broken", "doubt", "ask", "last"]
    assert len(_rows(view.sections[10])) == 2


def test_search_reads_requests_and_responses_once_and_opens_the_steps_it_found(desk: Path,
                                                                                monkeypatch: pytest.MonkeyPatch):
    import widgets.history as module

    reads: list[int] = []
    details_of = module.details_of

    def counted(journal, calls):
        reads.append(len(calls))
        return details_of(journal, calls)

    monkeypatch.setattr(module, "details_of", counted)
    view = _view(desk)
    assert reads == []  # nothing read until someone searches
    view.query.value = "SEVILLA"  # any case; in a prompt and in tool arguments and results
    assert reads == [38]
    assert _counts(view) == "“SEVILLA”: 3 of 38 calls match, in 1 of the 11 steps drawn"
    assert _visible(view) == ["day2"] and _open(view) == ["day2"]  # found in a closed step: it opens
    assert _rows(view.sections[3]) == ["call 1 · llm chat.completions [m]", "call 2 · tool lookup",
                                       "call 5 · tool book"]

    view.query.value = "no trains to atlantis"  # a tool's error
    assert _visible(view) == ["broken"] and _rows(view.sections[7]) == ["call 2 · tool book"]
    view.query.value = "spend 300"  # an approval's question
    assert _visible(view) == ["ask"]
    view.kind.value = "model"  # with a filter: both hold
    assert _rows(view.sections[9]) == ["call 1 · llm chat.completions [m]"]
    assert reads == [38]  # read once: later searches look at what was read

    view.kind.value = "all"
    view.query.value = "o"  # one letter would match nearly everything: not a search
    assert _visible(view) == STEPS and "a search needs 2 characters or more" in _counts(view)
    view.query.value = ""
    assert _open(view) == ["broken", "doubt", "ask", "last"]


def test_a_search_reads_a_bounded_number_of_calls_and_says_so(desk: Path, monkeypatch: pytest.MonkeyPatch):
    import widgets.history as module

    monkeypatch.setattr(module, "_SEARCH_CALLS", 10)
    view = _view(desk)
    view.query.value = "lisbon"  # day0's calls, earlier than the latest 10
    assert _visible(view) == [] and "searched the latest 10 of the 38 calls drawn" in _counts(view)
    view.query.value = "porto"
    assert _visible(view) == ["last"] and _counts(view).startswith("“porto”: 1 of 38 calls match")


# -- an approval asked before a restart and decided after it ---------------------------------------

def test_an_approval_asked_again_after_a_restart_is_drawn_as_used_and_waited_from_then(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from datetime import timedelta

    import journal._store
    import journal._writer
    import kernel_ext
    from journal import now
    from kernel_ext import approve
    from kernel_ext.approvals import StepSuspended, decide_from_cli
    from kernel_ext.history import duration, history_text, load_history
    from kernel_ext.history.html import COLOURS, history_html
    from kernel_ext.history.layout import step_track

    path = tmp_path / "j.duckdb"
    kernel_ext.session("shop", journal=path)
    # The first run asked five minutes ago, and stopped (the kernel restarted) before anyone decided.
    with monkeypatch.context() as earlier:
        for module in (journal._store, journal._writer):
            earlier.setattr(module, "now", lambda: now() - timedelta(minutes=5))
        with pytest.raises(StepSuspended), kernel_ext.step("refund"):
            approve("Refund 120 EUR?", key="refund").approved  # noqa: B018
    # The run after the restart asks again; the person decides in its widget.
    with kernel_ext.step("refund"):
        pending = approve("Refund 120 EUR?", key="refund")
        pending.decide(True, comment="fine")
        assert pending.approved

    journal_ = Journal(path)
    ((step,),) = [load_history(journal_, "shop").steps]
    (call,) = step.calls
    with journal_.open() as store:
        (asked,) = store.con.execute("SELECT max(started_at) FROM step_runs WHERE step = 'refund'").fetchone()
    assert call.use == "live" and call.shade == "person"  # the last run used it: not an earlier record
    assert call.asked_again is not None and asked <= call.asked_again <= call.ended_at
    assert (call.ended_at - call.started_at) >= timedelta(minutes=5)
    waited = duration((call.ended_at - call.asked_again).total_seconds())
    # What the widget said: asked (waiting since) at the run's time, and how long from then.
    assert call.figures() == [f"asked {call.asked_again:%H:%M} UTC", f"waited {waited}",
                              f"first asked {call.started_at:%H:%M} UTC"]
    assert "min" not in waited
    assert f"call 1 · approval refund · decided · asked {call.asked_again:%H:%M} UTC · waited {waited}" \
        in history_text(load_history(journal_, "shop"))
    assert step_track(step.calls).seconds < 60  # its bar from when it was asked again, not five minutes
    page = history_html(load_history(journal_, "shop"), {})
    (bar,) = re.findall(r"class='dk-bar' style='[^']*background:(#[0-9a-f]+)", page)
    assert bar == COLOURS["person"] != COLOURS["earlier"]  # drawn as a person's decision, not grey

    # Asked again, and decided from a terminal after that run stopped: still the one the step goes on from.
    with pytest.raises(StepSuspended), kernel_ext.step("wire"):
        approve("Wire 50 EUR?", key="wire").approved  # noqa: B018
    with pytest.raises(StepSuspended), kernel_ext.step("wire"):
        approve("Wire 50 EUR?", key="wire").approved  # noqa: B018
    decide_from_cli(journal_, "shop", "wire", True, None)
    wire = next(s for s in load_history(journal_, "shop").steps if s.name == "wire")
    (call,) = wire.calls
    assert call.shade == "person" and call.use == "live" and call.asked_again is not None
    with kernel_ext.step("wire"):  # the next run replays the decision
        assert approve("Wire 50 EUR?", key="wire").approved
    wire = next(s for s in load_history(journal_, "shop").steps if s.name == "wire")
    assert [(c.use, c.shade) for c in wire.calls] == [("replayed", "person")]
    assert wire.calls[0].asked_again is None  # replayed: nobody was asked again
