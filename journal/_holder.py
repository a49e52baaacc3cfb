"""Which process drives a session, identified well enough to tell whether it still lives."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Holder:
    """The process driving a session, identified well enough to tell whether it still lives."""

    pid: int
    host: str
    started: str  # process start time as the kernel reports it; guards against PID reuse
    label: str

    @classmethod
    def current(cls, label: str) -> Holder:
        return cls(os.getpid(), socket.gethostname(), process_start(os.getpid()), label)

    def is_alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # cannot see another machine's processes: assume it still runs
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return process_start(self.pid) == self.started

    def describe(self) -> str:
        return f"{self.label} (pid {self.pid} on {self.host})"


def process_start(pid: int) -> str:
    """Start time of a running process ("" where /proc cannot tell, "dead" for a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Fields count from after the command name, which may itself contain spaces.
    fields = stat.rsplit(")", 1)[1].split()
    return "dead" if fields[0] in ("Z", "X") else fields[19]
