"""Driving real kernels for tests: execute code or whole notebooks, and kill them with SIGKILL."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client import AsyncKernelManager, KernelManager
from nbclient import NotebookClient

from kernel_ext.notebook.outputs import DURABLE_METADATA

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# A cell's tool that writes each booking to the file $LEDGER names (the cell defines LEDGER and imports
# json and `tool`): the record of which effects happened, and how often.
BOOK_HOTEL = '''
@tool
def book_hotel(city: str, day: int, idempotency_key: str) -> dict:
    """Book a hotel room (charges a card: not idempotent).

    Args:
        city: where.
        day: which night of the trip.
    """
    with open(LEDGER, "a") as f:
        f.write(json.dumps({"key": idempotency_key, "city": city, "day": day}) + "\\n")
    return {"booked": city, "day": day}
'''


class Kernel:
    """One ipykernel process; restart() replaces it with a fresh one, as a user's restart does."""

    def __init__(self, env: dict[str, str], cwd: Path, python: str | None = None) -> None:
        self.env, self.cwd, self.python = env, cwd, python
        self.km: KernelManager | None = None
        self.kc: Any = None
        self.start()

    def start(self) -> None:
        self.km = KernelManager(kernel_name="python3")
        if self.python:
            # Another interpreter's kernel (a separate install), launched as its own kernelspec would.
            self.km.kernel_spec.argv = [self.python, *self.km.kernel_spec.argv[1:]]
        self.km.start_kernel(env=self.env, cwd=str(self.cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def execute(self, code: str, timeout: float = 60) -> tuple[str, list[dict[str, Any]]]:
        """Run code; return the reply status and the IOPub outputs in nbformat shape."""
        outputs: list[dict[str, Any]] = []
        by_display_id: dict[str, dict[str, Any]] = {}

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["header"]["msg_type"], msg["content"]
            display_id = content.get("transient", {}).get("display_id")
            if kind == "stream":
                outputs.append({"output_type": "stream", "name": content["name"], "text": content["text"]})
            elif kind in ("display_data", "execute_result"):
                outputs.append({"output_type": kind, "data": content["data"],
                                "metadata": content.get("metadata", {})})
                if display_id:
                    by_display_id[display_id] = outputs[-1]
            elif kind == "update_display_data" and display_id in by_display_id:
                # As a frontend does: the output shown under that display id changes in place.
                by_display_id[display_id].update(data=content["data"], metadata=content.get("metadata", {}))
            elif kind == "error":
                outputs.append({"output_type": "error", "ename": content["ename"], "evalue": content["evalue"]})

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=timeout)
        return reply["content"]["status"], outputs

    def ok(self, code: str, timeout: float = 60) -> list[dict[str, Any]]:
        status, outputs = self.execute(code, timeout)
        assert status == "ok", f"cell failed: {outputs}"
        return outputs

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.km.provisioner.process.wait()
        self.shutdown()

    def restart(self) -> None:
        self.shutdown()
        self.start()

    def shutdown(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        if self.km is not None:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)
            self.km = None


def run_notebook(path: Path, env: dict[str, str], cwd: Path, *, km: AsyncKernelManager | None = None,
                 timeout: float = 120) -> nbformat.NotebookNode:
    """Execute a notebook headless in a real kernel (as `jupyter nbconvert --execute` would)."""
    nb = nbformat.read(path, as_version=4)
    # Without a km nbclient owns the kernel and shuts it down at the end; with one, the caller
    # keeps it (to kill it).
    client = NotebookClient(nb, km=km, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(cwd)}})
    # A Jupyter server tells the kernel which notebook it runs; the default session is named after it.
    client.execute(cwd=str(cwd), env={**env, "JPY_SESSION_NAME": str(path)})
    return nb


def cell_outputs(nb: nbformat.NotebookNode, *, keep_summary: bool = False) -> list[list[dict[str, Any]]]:
    """The outputs of each code cell, without durable-kernel's own summary lines unless asked."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs: list[dict[str, Any]] = []
        for o in cell.outputs:
            if not keep_summary and DURABLE_METADATA in o.get("metadata", {}):
                continue
            # Stream chunking depends on flush timing, not on what was printed.
            if o["output_type"] == "stream" and outs and outs[-1].get("name") == o["name"]:
                outs[-1] = {**outs[-1], "text": outs[-1]["text"] + o["text"]}
            else:
                outs.append(dict(o))
        cells.append(outs)
    return cells


def summaries(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["metadata"][DURABLE_METADATA] for o in outputs if DURABLE_METADATA in o.get("metadata", {})]


def journal_bytes(journal: Path) -> bytes:
    """Every byte a journal keeps on disk: its file, its WAL and its append logs (searched for secrets)."""
    logs = journal.with_name(journal.name + ".logs")
    files = [p for p in journal.parent.glob(journal.name + "*") if p.is_file()]
    files += [p for p in logs.glob("*") if p.is_file()] if logs.is_dir() else []
    return b"".join(p.read_bytes() for p in files)
