"""Real Jupyter kernels for the notebook workloads (6 and 7): started with jupyter_client, one cell at a time.

Each kernel is a fresh process of this virtualenv's `python3` kernel spec, talking to the harness's
scripted model server through the real `openai` client (its base URL and key come from the environment).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from bench.systems import MODEL

API_KEY = "sk-bench"


def setup(session: str) -> str:
    """The untimed first cell: the extension, a client, the session the timed cell journals into."""
    return ("%load_ext kernel_ext\nfrom openai import OpenAI\n"
            # A retry would hide a failed call from the row and stretch its wall time.
            "client = OpenAI(max_retries=0)\n"
            f"%durable session {session}\n")


def chat_cell(step: str, calls: int, tag: str) -> str:
    """A `%%durable` cell of `calls` chat completions made one after the other, each with a distinct prompt."""
    return (f"%%durable {step}\n"
            f"for n in range({calls}):\n"
            f"    client.chat.completions.create(model={MODEL!r}, messages=[\n"
            f"        {{'role': 'user', 'content': f'{tag} question {{n}}: what is {{n}} plus {{n}}?'}}])\n")


class Kernel:
    """One kernel process, ready for cells once constructed; close() shuts it down and reaps it."""

    def __init__(self, cwd: Path, journal: Path, base_url: str) -> None:
        from jupyter_client import KernelManager

        env = {**os.environ, "DURABLE_JOURNAL": str(journal), "OPENAI_BASE_URL": base_url,
               "OPENAI_API_KEY": API_KEY}
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=str(cwd), stderr=subprocess.DEVNULL)  # its start-up warnings
        self.kc = self.km.client()
        try:
            self.kc.start_channels()
            self.kc.wait_for_ready(timeout=60)
        except BaseException:
            self.close()
            raise

    def run(self, code: str, timeout: float = 300) -> None:
        """Run a cell; a cell that fails raises with what it printed and its error."""
        said: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["header"]["msg_type"] == "stream":
                said.append(content["text"])
            elif msg["header"]["msg_type"] == "error":
                said.append(f"{content['ename']}: {content['evalue']}")

        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=timeout)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed in a kernel: {''.join(said)[-2000:]}")

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)


def sessions(journal: Path) -> dict[str, dict[str, Any]]:
    """The journal's sessions as `durable ls` reads them, by name (read after the kernels are gone)."""
    from journal import Journal

    with Journal(journal, create=False).open() as store:
        return {s["session"]: s for s in store.sessions_overview()}
