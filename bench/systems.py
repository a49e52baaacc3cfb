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


def dbos_init(workdir: Path, name: str, store: str = "default") -> Any:
    """Configure DBOS and return it; workflows are declared after this, then launched.

    `store`: "default", its SQLite system database as DBOS leaves it (SQLite's rollback journal); "wal", the
    same file in WAL mode with `synchronous=FULL` set on every connection DBOS opens (every commit fsyncs the
    WAL), so that each step is as durable as durable-kernel's `DURABLE_SYNC=always`; or a `postgresql://` URL.
    """
    from dbos import DBOS as Dbos

    if store == "wal":
        import sqlalchemy

        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _wal_full)
    url = store if store.startswith("postgresql") else dbos_url(workdir)
    return Dbos(config={"name": name, "system_database_url": url, "log_level": "WARNING"})


SQLITE_MODES: dict[str, Any] = {}  # what the last connection DBOS opened in "wal" mode reported


def _wal_full(dbapi_conn: Any, _record: Any) -> None:
    # A pragma set here holds for that connection only; journal_mode=WAL also stays in the file.
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA synchronous=FULL")
    mode = dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = dbapi_conn.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2), f"DBOS's SQLite connection is in journal_mode {mode}, synchronous {sync}"
    SQLITE_MODES.update(journal_mode=mode, synchronous="FULL")


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
