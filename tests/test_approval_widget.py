"""The approval widget's comment box, driven by the messages a browser sends while the cell awaits.

The browser's widget manager sends a widget's next update only once the kernel has published an idle
status for the previous one. ipykernel (7.4) handles widget messages concurrently with an awaiting cell
and publishes no status for them, so without the widget's own acknowledgement every keystroke after
the first stayed in the browser and the decision recorded a one-character comment
(tests/test_browser.py shows it in a real browser).
"""

from __future__ import annotations

import time

from tests.harness import Kernel

WAITING_CELL = """%%durable refund
from kernel_ext import approve
decision = await approve("Refund 120 EUR to Ana?", key="refund-ana", details={"amount_eur": 120})
print("DECISION", decision.approved, repr(decision.comment))
"""


def test_each_comment_update_is_acknowledged_while_the_cell_awaits_the_decision(kernel: Kernel):
    kernel.ok("%load_ext kernel_ext\n%durable session shop")
    # _drive waits for the idle status of each update before sending the next, as the browser does.
    out = _drive(kernel, WAITING_CELL, [("TextareaModel", "p"), ("TextareaModel", "photos ok")], "Approve")
    assert "DECISION True 'photos ok'" in out


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

    def pump(until, timeout: float = 120) -> None:
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
        pump(lambda update=update: update in idle_for, timeout=120)
    assert not state["finished"]
    send(comms[button], {"method": "custom", "content": {"event": "click"}})
    pump(lambda: state["finished"], timeout=120)
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
