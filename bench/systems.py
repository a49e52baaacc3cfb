"""The three systems under test, set up the same way by every workload.

Each store lives in its own folder, so its size is the size of that folder. The peers are imported inside
the functions that need them: a durable-kernel child never pays for importing them, and the reverse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DURABLE, DBOS, LANGGRAPH = "durable-kernel", "dbos", "langgraph"
SYSTEMS = (DURABLE, DBOS, LANGGRAPH)
TITLES = {DURABLE: "durable-kernel", DBOS: "DBOS", LANGGRAPH: "LangGraph"}
MODEL = "scripted-chat"
AGENT_ID = "agent-1"  # the one workflow / thread / session each killed-and-resumed run uses
TEXT = ("the agent reads a ticket and checks the order status before it writes a reply " * 13)[:1000]
# LangGraph warns before unpickling a type it was not told about; the model's reply type is expected here.
_LANGGRAPH_TYPES = [("openai.types.chat.chat_completion", "ChatCompletion")]


def payload(i: int) -> dict[str, Any]:
    """The benchmarked tool: trivial work, a result of about 1 KB."""
    return {"i": i, "text": TEXT}


def store_dir(workdir: Path) -> Path:
    path = workdir / "store"
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_bytes(workdir: Path, under: str = "") -> int:
    """Everything the store left on disk, in every folder: main file, WAL, rollback journal, shared memory, and
    durable-kernel's append logs and replay packs beside its journal (`under` names one subfolder only)."""
    return sum(f.stat().st_size for f in (store_dir(workdir) / under).rglob("*") if f.is_file())


def journal_path(workdir: Path) -> Path:
    return store_dir(workdir) / "journal.duckdb"


def dbos_url(workdir: Path) -> str:
    return f"sqlite:///{store_dir(workdir) / 'dbos.sqlite'}"


def dbos_init(workdir: Path, name: str) -> None:
    """Configure DBOS with its SQLite system database; workflows are declared after this, then launched."""
    from dbos import DBOS as Dbos

    Dbos(config={"name": name, "system_database_url": dbos_url(workdir), "log_level": "WARNING"})


def langgraph_saver(workdir: Path) -> Any:
    """A SqliteSaver on its own file (it sets WAL mode itself); graphs run tasks in threads, hence the flag."""
    import sqlite3

    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(str(store_dir(workdir) / "checkpoints.sqlite"), check_same_thread=False)
    return SqliteSaver(conn, serde=JsonPlusSerializer(allowed_msgpack_modules=_LANGGRAPH_TYPES))


def thread(thread_id: str, recursion_limit: int | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    if recursion_limit is not None:
        config["recursion_limit"] = recursion_limit
    return config
