"""DURABLE_SYNC in a real kernel: what each mode fdatasyncs, and that a killed kernel loses nothing in any.

The kernel counts calls of `os.fdatasync` (the operating system's call, wrapped in the user's
namespace) while a durable cell runs one tool that is not idempotent and one that is.
"""

from __future__ import annotations

import json

import pytest

from tests.harness import Kernel

COUNTING = """
import os, json
synced = []
_real = os.fdatasync
def _counting(fd):
    synced.append(fd)
    return _real(fd)
os.fdatasync = _counting
%load_ext kernel_ext
from kernel_ext import tool
ledger = []

@tool
def charge(amount: int, idempotency_key: str) -> str:
    ledger.append(("charge", amount))
    return "charged"

@tool(idempotent=True)
def lookup(order: int) -> dict:
    ledger.append(("lookup", order))
    return {"order": order, "status": "paid"}
"""

CELL = """%%durable pay
synced.clear()
print(charge(120), lookup(7)["status"])
print("SYNCED", len(synced))
"""

# Per mode, the fdatasyncs the cell sees: every record (the charge's start and its outcome, the lookup;
# the step's end comes after the cell's last line), only the start of the tool that is not idempotent,
# or none.
EXPECTED = {"always": 3, "effects": 1, "never": 0}


@pytest.mark.parametrize("mode", ["always", "effects", "never"])
def test_each_mode_syncs_what_it_says_and_a_kill_loses_nothing(mode, kernel_env, tmp_path):
    env = {**kernel_env, "DURABLE_SYNC": mode}
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok(COUNTING)
        outputs = kernel.ok(CELL)
        text = "".join(o.get("text", "") for o in outputs)
        assert "charged paid" in text
        assert int(text.split("SYNCED")[1].split()[0]) == EXPECTED[mode], text
        kernel.kill()  # SIGKILL: whatever was only in the append log must survive
        kernel.start()
        kernel.ok(COUNTING)
        again = kernel.ok(CELL)
        assert "charged paid" in "".join(o.get("text", "") for o in again)
        assert json.loads(kernel.ok("print(json.dumps(ledger))")[0]["text"]) == [], "a tool ran twice"
    finally:
        kernel.shutdown()
