"""What the results were measured on: hardware, system and the versions of everything measured."""

from __future__ import annotations

import os
import platform
import sqlite3
import tempfile
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("durable-kernel", "duckdb", "openai", "ipykernel", "jupyter_client", "dbos", "SQLAlchemy", "langgraph",
            "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "langchain-core")


def versions() -> list[tuple[str, str]]:
    found = []
    for name in PACKAGES:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            found.append((name, "not installed"))
    return [*found, ("SQLite library (Python's sqlite3)", sqlite3.sqlite_version),
            ("Python", platform.python_version())]


def _first(path: str, key: str, sep: str = ":") -> str:
    """The value of the first `key<sep>value` line of a /proc or /etc file."""
    try:
        for line in Path(path).read_text().splitlines():
            name, found, value = line.partition(sep)
            if found and name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return "unknown"


def _filesystem(path: str) -> str:
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if path.startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def describe() -> list[tuple[str, str]]:
    memory = _first("/proc/meminfo", "MemTotal")
    if memory.endswith(" kB"):
        memory = f"{int(memory[:-3]) / 1024 ** 2:.1f} GiB"
    temp = tempfile.gettempdir()
    return [
        ("CPU", _first("/proc/cpuinfo", "model name")
         + (", virtual machine" if " hypervisor" in _first("/proc/cpuinfo", "flags") else "")),
        ("Cores (os.cpu_count)", str(os.cpu_count())),
        ("RAM", memory),
        ("OS", f"{_first('/etc/os-release', 'PRETTY_NAME', '=')}, {platform.system()} {platform.release()} "
               f"({platform.machine()})"),
        ("Temporary files", f"{temp} ({_filesystem(temp)})"),
    ]


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _ours() -> float:
    """CPU seconds of this process and of its children that have ended (every measured child has, by then)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Others:
    """How much CPU other processes took while a measurement ran: on a shared 2-core machine they skew timings."""

    def __init__(self) -> None:
        self.start, self.busy, self.ours = time.monotonic(), _busy_seconds(), _ours()

    def cores(self) -> float:
        """Other processes' CPU time over the wall time since creation, in cores."""
        wall = max(time.monotonic() - self.start, 1e-9)
        return max(0.0, (_busy_seconds() - self.busy) - (_ours() - self.ours)) / wall


def others_now(interval: float = 1.0) -> float:
    """Cores other processes keep busy right now (sampled over `interval` while we do nothing)."""
    sample = Others()
    time.sleep(interval)
    return sample.cores()
