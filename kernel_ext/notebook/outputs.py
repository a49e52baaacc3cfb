"""Recording what a durable cell shows, in nbformat output shape, in the order it was shown.

`IPython.utils.capture.capture_output` would swallow the output and lose the interleaving
of streams and displays, and cannot be nested with `await`. Instead streams get a
write-through wrapper and displays are seen by a display-publisher hook: the frontend gets
everything as usual, and the recorder keeps a copy.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

DURABLE_METADATA = "durable"  # key of the metadata that marks our own summary outputs


def step_summaries(notebook: Any) -> list[dict[str, Any]]:
    """The summary marks (step, replayed, live) that durable cells left in an executed notebook."""
    marks = [o["metadata"][DURABLE_METADATA] for c in notebook.cells if c.cell_type == "code"
             for o in c.get("outputs", []) if DURABLE_METADATA in o.get("metadata", {})]
    return [m for m in marks if "state" not in m]  # not a progress line (running, or stopped by an error)


class OutputRecorder:
    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.outputs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._saved: tuple[TextIO, TextIO] | None = None

    def __enter__(self) -> OutputRecorder:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _WriteThrough(sys.stdout, "stdout", self)  # type: ignore[assignment]
        sys.stderr = _WriteThrough(sys.stderr, "stderr", self)  # type: ignore[assignment]
        publisher = getattr(self.shell, "display_pub", None)
        if hasattr(publisher, "register_hook"):
            publisher.register_hook(self._on_message)
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in self._saved or ():
            stream.flush()
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
        publisher = getattr(self.shell, "display_pub", None)
        if hasattr(publisher, "unregister_hook"):
            publisher.unregister_hook(self._on_message)

    def stream(self, name: str, text: str) -> None:
        with self._lock:
            last = self.outputs[-1] if self.outputs else None
            if last is not None and last["output_type"] == "stream" and last["name"] == name:
                last["text"] += text
            else:
                self.outputs.append({"output_type": "stream", "name": name, "text": text})

    def result(self, value: Any, execution_count: int | None) -> None:
        data, metadata = self.shell.display_formatter.format(value)
        with self._lock:
            self.outputs.append({"output_type": "execute_result", "data": data, "metadata": metadata,
                                 "execution_count": execution_count})

    def _on_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("msg_type", msg.get("header", {}).get("msg_type")) == "display_data":
            content = msg["content"]
            if DURABLE_METADATA not in content.get("metadata", {}):
                with self._lock:
                    self.outputs.append({"output_type": "display_data", "data": content.get("data", {}),
                                         "metadata": content.get("metadata", {})})
        return msg


class _WriteThrough:
    """A stream that forwards everything and lets the recorder keep a copy of what is written."""

    def __init__(self, inner: TextIO, name: str, recorder: OutputRecorder) -> None:
        self._inner, self._name, self._recorder = inner, name, recorder

    def write(self, text: str) -> int:
        if text:
            self._recorder.stream(self._name, text)
        return self._inner.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
