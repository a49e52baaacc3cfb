"""Approvals: a click sent the way a browser sends it, CLI decisions while a kernel waits, headless
suspension with `durable run` exit code 3, timeouts, and tools that require approval."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from journal import Journal
from tests.harness import Kernel

WAITING_CELL = """%%durable refund
from kernel_ext import approve
decision = await approve("Refund 120 EUR to Ana?", key="refund-ana", details={"customer": "ana", "amount_eur": 120})
print("DECISION", decision.approved, decision.comment)
"""


def _durable(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def _collect_until(kernel: Kernel, msg_id: str, done, on_message=None, timeout: float = 120) -> list[dict]:
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = kernel.kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if on_message is not None:
            on_message(msg)
        if done(msg):
            return messages
    raise AssertionError("the cell did not get there")


def _collect_until_idle(kernel: Kernel, msg_id: str, on_message=None, timeout: float = 120) -> list[dict]:
    return _collect_until(kernel, msg_id, lambda msg: msg["msg_type"] == "status"
                          and msg["content"]["execution_state"] == "idle", on_message, timeout)


def _buttons(messages: list[dict]) -> dict[str, tuple[str, bool]]:
    found = {}
    for msg in messages:
        if msg["msg_type"] == "comm_open":
            state = msg["content"]["data"].get("state", {})
            if state.get("_model_name") == "ButtonModel":
                found[state["description"]] = (msg["content"]["comm_id"], state.get("disabled", False))
    return found


def _text(messages: list[dict]) -> str:
    return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")


def test_a_click_reaches_the_awaiting_cell_and_is_replayed_after_a_restart(kernel: Kernel, tmp_path):
    kernel.ok("%load_ext kernel_ext\n%durable session shop")
    msg_id = kernel.kc.execute(WAITING_CELL)
    clicked = []

    def click(msg: dict) -> None:
        buttons = _buttons([msg])
        if "Approve" in buttons and not clicked:
            comm_id = buttons["Approve"][0]
            # Exactly what a browser sends when the button is clicked.
            kernel.kc.shell_channel.send(kernel.kc.session.msg(
                "comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}))
            clicked.append(comm_id)

    messages = _collect_until_idle(kernel, msg_id, click)
    assert clicked and "DECISION True None" in _text(messages)
    lines = [m["content"]["data"].get("text/plain", "") for m in messages
             if m["msg_type"] in ("display_data", "update_display_data")]
    # While it waited, the step's line said for whom, not "call 1 live".
    assert any("waiting for a person to decide approval 'refund-ana'" in line for line in lines), lines
    with Journal(tmp_path / "journal.duckdb").open() as store:
        (approval,) = store.approvals("shop")
    assert approval["key"] == "refund-ana" and approval["decision"]["approved"] is True

    kernel.restart()
    kernel.ok("%load_ext kernel_ext\n%durable session shop")
    msg_id = kernel.kc.execute(WAITING_CELL)
    replayed = _collect_until_idle(kernel, msg_id)
    assert "DECISION True None" in _text(replayed)
    assert all(disabled for _, disabled in _buttons(replayed).values())  # the recorded decision, read-only
    headers = [m["content"]["data"]["state"]["value"] for m in replayed if m["msg_type"] == "comm_open"
               and m["content"]["data"].get("state", {}).get("_model_name") == "HTMLModel"]
    assert any(h.startswith("<b>Approved:</b> Refund") for h in headers)  # decided, not "Approval needed"
    assert not any("Approval needed" in h for h in headers)


def test_a_decision_from_the_cli_reaches_a_waiting_kernel(kernel: Kernel, kernel_env, tmp_path):
    kernel.ok("%load_ext kernel_ext\n%durable session shop")
    msg_id = kernel.kc.execute(WAITING_CELL)
    # The approval widget is shown once the approval is pending; the kernel then waits with the journal released.
    shown = _collect_until(kernel, msg_id, lambda msg: "Approve" in _buttons([msg]))
    decided = _durable("approve", "shop", "refund-ana", "--reject", "--comment", "too much", env=kernel_env)
    assert decided.returncode == 0, decided.stderr
    # The cell has no timeout and nobody clicks: only the CLI's decision can end it.
    messages = shown + _collect_until_idle(kernel, msg_id)
    assert "DECISION False too much" in _text(messages)
    listing = "".join(o.get("text", "") for o in kernel.ok("%durable approvals"))
    assert "refund-ana" in listing and "rejected by" in listing and "(too much)" in listing


def test_an_approval_times_out_as_rejected(kernel: Kernel):
    kernel.ok("%load_ext kernel_ext")
    out = kernel.ok('%%durable wait\nfrom kernel_ext import approve\nd = await approve("Ship it?", timeout=1)\n'
                    'print("TIMED", d.approved, d.by, d.timed_out)')
    assert "TIMED False timeout True" in "".join(o.get("text", "") for o in out)


HEADLESS = [
    "%load_ext kernel_ext",
    """import json, os
from kernel_ext import approve, tool, ToolRejected

@tool
def refund(customer: str, amount_eur: int, idempotency_key: str) -> str:
    with open(os.environ["LEDGER"], "a") as f:
        f.write(json.dumps([customer, amount_eur, idempotency_key]) + "\\n")
    return f"refunded {amount_eur} EUR to {customer}"

@tool(requires_approval=True)
def close_account(customer: str) -> str:
    return f"closed {customer}"
""",
    """%%durable refund
decision = approve("Refund 120 EUR to Ana?", key="refund-ana", details={"amount_eur": 120})
print(refund("ana", 120) if decision.approved else "no refund")
""",
    """%%durable close
try:
    print(close_account("ana"))
except ToolRejected as exc:
    print("REJECTED", exc)
""",
]


def test_headless_run_suspends_with_exit_3_and_resumes_after_cli_decisions(tmp_path, kernel_env):
    notebook = tmp_path / "refunds.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in HEADLESS]), notebook)
    env = {**kernel_env, "LEDGER": str(tmp_path / "ledger")}

    first = _durable("run", str(notebook), env=env, cwd=tmp_path)
    assert first.returncode == 3, first.stdout + first.stderr
    assert "durable approve refunds refund-ana" in first.stdout
    assert _durable("approve", "refunds", "refund-ana", "--comment", "ok", env=env).returncode == 0
    again = _durable("approve", "refunds", "refund-ana", env=env)
    assert again.returncode == 1 and "no pending approval 'refund-ana'" in again.stderr

    second = _durable("run", str(notebook), env=env, cwd=tmp_path)
    assert second.returncode == 3, second.stdout  # now the tool that requires approval waits
    key = second.stdout.split("durable approve refunds ")[1].split()[0]
    assert key.startswith("run-close-account")
    assert _durable("approve", "refunds", key, "--reject", "--comment", "keep it", env=env).returncode == 0

    out = tmp_path / "out.ipynb"
    third = _durable("run", str(notebook), "-o", str(out), env=env, cwd=tmp_path)
    assert third.returncode == 0, third.stdout
    texts = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                    for o in c.get("outputs", []))
    assert "refunded 120 EUR to ana" in texts and "REJECTED close_account was rejected by" in texts
    assert "keep it" in texts
    assert _durable("run", str(notebook), env=env, cwd=tmp_path).returncode == 0
    assert len((tmp_path / "ledger").read_text().splitlines()) == 1  # the refund ran exactly once


UNREAD = [
    "%load_ext kernel_ext",
    HEADLESS[1],
    """%%durable refund
approve("Refund 120 EUR to Ana?", key="refund-ana")   # the decision is never read
print(refund("ana", 120))
""",
]


@pytest.mark.parametrize("verdict", ["approve", "reject"])
def test_an_unread_approval_fails_closed(tmp_path, kernel_env, verdict):
    notebook = tmp_path / "refunds.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in UNREAD]), notebook)
    env = {**kernel_env, "LEDGER": str(tmp_path / "ledger")}
    ledger = tmp_path / "ledger"

    first = _durable("run", str(notebook), env=env, cwd=tmp_path)
    assert first.returncode == 3, first.stdout + first.stderr  # suspended before the tool
    assert not ledger.exists()
    decide = ["approve", "refunds", "refund-ana"] + (["--reject"] if verdict == "reject" else [])
    assert _durable(*decide, env=env).returncode == 0

    for _ in range(2):  # the decision replays: the same outcome every run
        run = _durable("run", str(notebook), env=env, cwd=tmp_path)
        if verdict == "approve":
            assert run.returncode == 0, run.stdout + run.stderr
            assert len(ledger.read_text().splitlines()) == 1  # the refund ran once
        else:
            assert run.returncode == 1, run.stdout + run.stderr
            assert "was rejected" in run.stdout + run.stderr and not ledger.exists()  # it never ran
