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


def test_history_widget_holds_the_steps_and_calls_and_shows_a_selected_call(kernel: Kernel, model_server):
    kernel.ok(SETUP)
    kernel.ok(PLAN)
    kernel.ok(ACT)
    kernel.ok(PLAN)  # a replay: the history says which calls the last run replayed

    messages = _iopub_until_idle(kernel, kernel.kc.execute("%durable history"))
    (_, accordion), = _models(messages, "AccordionModel")
    assert [t.split(" · ")[0] for t in accordion["titles"]] == ["✓ plan", "✓ act"]
    assert "last run 2 replayed, 0 live" in accordion["titles"][0]
    lists = _models(messages, "SelectModel")
    plan_calls = lists[0][1]["_options_labels"]
    assert [label.split(" · ")[0] for label in plan_calls] == ["1. llm chat.completions [m]", "2. tool lookup"]
    assert all(" · replayed" in label for label in plan_calls)
    assert "tokens" in plan_calls[0] and "live" in lists[1][1]["_options_labels"][0]

    # Where widgets cannot render, the same output carries the history as HTML.
    (shown,) = [m for m in messages if m["msg_type"] in ("execute_result", "display_data")]
    page = shown["content"]["data"]["text/html"]
    assert "plan" in page and "act" in page and "Plan a day in Lisbon" in page and "Book the tram" in page
    assert "&quot;city&quot;: &quot;Lisbon&quot;" in page  # tool arguments as JSON
    assert "&quot;sunny&quot;: true" in page  # and its result as JSON, not Python's repr

    # Selecting a call, exactly as a browser sends it, shows its request and response as a conversation.
    (detail_id, detail), = [(i, s) for i, s in _models(messages, "HTMLModel") if "select a call" in s["value"]]
    kernel.kc.shell_channel.send(kernel.kc.session.msg("comm_msg", {
        "comm_id": lists[0][0], "data": {"method": "update", "state": {"index": 0}, "buffer_paths": []}}))
    deadline = time.monotonic() + 120
    shown_value = ""
    while time.monotonic() < deadline and "Plan a day in Lisbon" not in shown_value:
        msg = kernel.kc.get_iopub_msg(timeout=120)
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == detail_id:
            shown_value = msg["content"]["data"].get("state", {}).get("value", shown_value)
    assert "Plan a day in Lisbon" in shown_value and "assistant (reply)" in shown_value
    assert "[scripted]" in shown_value  # the scripted model's answer, read back from the journal


def test_history_renders_as_html_in_an_nbclient_run(tmp_path: Path, kernel_env, model_server):
    notebook = tmp_path / "trip.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in (SETUP, PLAN, ACT, "%durable history")]), notebook)
    nb = run_notebook(notebook, kernel_env, tmp_path)
    (output,) = nb.cells[-1].outputs
    page, text = output["data"]["text/html"], output["data"]["text/plain"]
    assert "<details>" in page and "Plan a day in Lisbon" in page and "Book the tram to Belem" in page
    assert "2. tool lookup" in page and "1. llm chat.completions [m]" in page
    assert "session 'trip': 2 steps, 3 calls" in text and "✓ plan" in text and "2. tool lookup" in text


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
