"""Seeing what the agent did: the history widget (driven the way a browser drives it), its HTML
rendering in an nbclient run, the live progress line, SQL from the notebook, fork and forget."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
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
