"""The approval widget's comment box, driven by the messages a browser sends while the cell awaits.

The browser's widget manager sends a widget's next update only once the kernel has published an idle
status for the previous one. ipykernel (7.4) handles widget messages concurrently with an awaiting cell
and publishes no status for them, so without the widget's own acknowledgement every keystroke after
the first stayed in the browser and the decision recorded a one-character comment
(tests/test_browser.py shows it in a real browser).
"""

from __future__ import annotations

import queue
import time

from tests.harness import Kernel

WAITING_CELL = """%%durable refund
from kernel_ext import approve
decision = await approve("Refund 120 EUR to Ana?", key="refund-ana", details={"amount_eur": 120})
print("DECISION", decision.approved, repr(decision.comment))
"""


def test_each_comment_update_is_acknowledged_while_the_cell_awaits_the_decision(kernel: Kernel):
    kernel.ok("%load_ext kernel_ext\n%durable session shop")
    cell = kernel.kc.execute(WAITING_CELL)
    comms: dict[str, str] = {}  # model name or button description -> comm id
    idle_for: set[str] = set()  # msg ids of shell messages whose idle status was published
    texts: list[str] = []
    finished = False

    def pump(until, timeout: float = 30) -> None:
        nonlocal finished
        deadline = time.monotonic() + timeout
        while not until():
            try:
                msg = kernel.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out after {timeout} s; comms={comms}, idle statuses for "
                                     f"{idle_for}, output {texts}") from None
            kind, content = msg["msg_type"], msg["content"]
            parent = msg["parent_header"].get("msg_id")
            if kind == "comm_open":
                state = content["data"].get("state", {})
                comms[state.get("description") or state.get("_model_name")] = content["comm_id"]
            elif kind == "stream":
                texts.append(content["text"])
            elif kind == "status" and content["execution_state"] == "idle":
                idle_for.add(parent)
                finished = finished or parent == cell

    def send(comm: str, data: dict) -> str:
        msg = kernel.kc.session.msg("comm_msg", {"comm_id": comm, "data": data})
        kernel.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    pump(lambda: "Approve" in comms and "TextareaModel" in comms)
    for value in ("p", "photos ok"):  # as the widget manager sends them: one at a time, after the idle
        update = send(comms["TextareaModel"], {"method": "update", "state": {"value": value}, "buffer_paths": []})
        pump(lambda update=update: update in idle_for, timeout=10)
    assert not finished
    send(comms["Approve"], {"method": "custom", "content": {"event": "click"}})
    pump(lambda: finished)
    assert "DECISION True 'photos ok'" in "".join(texts)


EDIT_CELL = """%%durable edit
from kernel_ext import approve
decision = await approve("Refund?", key="refund-bo", details={"customer": "bo", "amount_eur": 120})
print("DATA", decision.approved, decision.data)
"""


def _drive(kernel: Kernel, cell_source: str, updates: list[tuple[str, str]], button: str) -> str:
    """Run a waiting cell; send textarea updates (by description, or the comment box) and click a button."""
    cell = kernel.kc.execute(cell_source)
    comms: dict[str, str] = {}
    idle_for: set[str] = set()
    texts: list[str] = []
    state = {"finished": False}

    def pump(until, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            msg = kernel.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_open":
                opened = content["data"].get("state", {})
                comms[opened.get("description") or opened.get("_model_name")] = content["comm_id"]
            elif kind == "stream":
                texts.append(content["text"])
            elif kind == "status" and content["execution_state"] == "idle":
                idle_for.add(msg["parent_header"].get("msg_id"))
                state["finished"] = state["finished"] or msg["parent_header"].get("msg_id") == cell

    def send(comm: str, data: dict) -> str:
        msg = kernel.kc.session.msg("comm_msg", {"comm_id": comm, "data": data})
        kernel.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    pump(lambda: button in comms)
    for target, value in updates:
        update = send(comms[target], {"method": "update", "state": {"value": value}, "buffer_paths": []})
        pump(lambda update=update: update in idle_for, timeout=10)
    send(comms[button], {"method": "custom", "content": {"event": "click"}})
    pump(lambda: state["finished"] or any("DATA" in t for t in texts), timeout=10)
    return "".join(texts)


def test_edited_values_come_back_with_the_decision(kernel: Kernel):
    kernel.ok("%load_ext kernel_ext")
    out = _drive(kernel, EDIT_CELL, [("values", '{"customer": "bo", "amount_eur": 80}')], "Approve")
    assert "DATA True {'amount_eur': 80, 'customer': 'bo'}" in out
    replayed = "".join(o.get("text", "") for o in kernel.ok(EDIT_CELL))
    assert "DATA True {'amount_eur': 80, 'customer': 'bo'}" in replayed


def test_unchanged_values_mean_no_edit(kernel: Kernel):
    kernel.ok("%load_ext kernel_ext")
    assert "DATA True None" in _drive(kernel, EDIT_CELL, [], "Approve")
