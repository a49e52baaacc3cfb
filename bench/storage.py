"""Workload 3: the store's size on disk after an agent's growing conversation.

Sizes do not depend on timing, so the harness runs these children two at a time; each child serves its own
scripted model in a thread rather than sharing the harness's.
Child: python -m bench.storage SYSTEM DIR TURNS
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from bench.child import emit, spawn
from bench.rows import Context, Row, Table, at_most
from bench.systems import (
    DBOS,
    DURABLE,
    LANGGRAPH,
    MODEL,
    dbos_init,
    journal_path,
    langgraph_saver,
    store_bytes,
    thread,
)

CHARS = 500
VOCAB = (
    "the", "agent", "reads", "a", "ticket", "and", "checks", "order", "status", "before", "it", "writes", "reply",
    "to", "customer", "about", "refund", "policy", "shipping", "delay", "invoice", "account", "billing", "address",
    "warehouse", "tracking", "number", "please", "confirm", "we", "will", "update", "you", "soon", "thanks", "for",
    "your", "patience", "our", "team", "has", "reviewed", "request", "details", "found", "that", "package", "left",
    "yesterday", "morning", "is", "on", "its", "way", "today", "with", "new", "label", "sorry", "inconvenience",
    "hello", "again", "next", "week",
)


def _linear(table: Table) -> bool:
    short, long = table["storage_short"][DURABLE], table["storage_long"][DURABLE]
    return short is not None and long is not None and long <= 5.5 * short


ROWS = [
    Row("storage_short", "3. Storage after a {short}-turn growing chat", "MB",
        "One agent run (one durable step; one DBOS workflow; one LangGraph graph invocation) holds a "
        "conversation: each turn appends a {chars}-character user message (English-like words, seeded), sends the "
        "whole history to the scripted model (real loopback HTTP, replies of exactly {chars} characters) and "
        "appends the reply. durable-kernel journals the call inside `with step(...)`; DBOS makes the model call a "
        "`@DBOS.step()` that returns the `ChatCompletion` (DBOS stores step outputs, not step inputs); LangGraph "
        "runs a `StateGraph(MessagesState)` whose one node does a turn and loops back to itself, checkpointed by "
        "`SqliteSaver` after every turn (`durability=\"sync\"`). Requests are sent with the client's generic "
        "`client.post(\"/chat/completions\", ...)`: the bytes sent and recorded are those of "
        "`chat.completions.create`, without the SDK's per-message request validation, which alone takes minutes "
        "at 1,000 turns. Size = every file the store left after a clean close, in every folder: for durable-kernel the "
        "DuckDB file and the folder of append logs beside it, which holds the step's replay pack. MB = 10^6 bytes.",
        target="<= 0.25 MB, replay packs included", met=at_most("storage_short", 0.25)),
    Row("storage_long", "3. Storage after a {long}-turn growing chat", "MB",
        "As above with {long} turns. Storage linear in the unique content grows about 5x from {short} to {long} "
        "turns (less, with a fixed baseline); storing the whole history at every step grows about 25x.",
        target="linear: <= 5.5 x the {short}-turn size", met=_linear),
]
DETAILS = {
    "storage_growth": ("growth per turn between the two runs", "KB"),
    "storage_unique": ("unique message content of the long chat", "MB"),
    "storage_whole_history": ("whole history stored on every call (sum of the JSON of each request's messages)",
                              "MB"),
}


def measure(system: str, ctx: Context) -> dict[str, Any]:
    short, long = ctx.scale.turns
    results = {}
    for turns in (short, long):
        workdir = ctx.workdir / f"turns-{turns}"
        workdir.mkdir()
        results[turns] = spawn("storage", system, workdir, turns, cwd=workdir)
    out = results[long]
    metrics: dict[str, Any] = {
        "storage_short": results[short]["bytes"] / 1e6,
        "storage_long": out["bytes"] / 1e6,
        "storage_growth": (out["bytes"] - results[short]["bytes"]) / (long - short) / 1e3,
        "storage_unique": out["unique"] / 1e6,
        "storage_whole_history": out["whole_history"] / 1e6,
    }
    if out.get("tables"):
        metrics["note:storage_tables"] = (
            f"durable-kernel journal after {long} turns, DuckDB blocks per table (pragma_storage_info; "
            f"{out['block_size']:,}-byte blocks, {out['used_blocks']} used in all): "
            + ", ".join(f"{name} {blocks}" for name, blocks in out["tables"].items()))
        first = results[short]
        metrics["note:storage_split"] = (
            f"durable-kernel, of the {short}-turn size: the DuckDB file {first['bytes'] - first['beside']:,} bytes, "
            f"and beside it (the step's replay pack, the call-id counter, the session's lock file) "
            f"{first['beside']:,} bytes; of the {long}-turn size: {out['bytes'] - out['beside']:,} and "
            f"{out['beside']:,} bytes")
        whole, file = first["bytes"] / 1e6, (first["bytes"] - first["beside"]) / 1e6
        if whole > 0.25:  # why the target is missed, from the numbers of this run
            metrics["note:storage_target"] = (
                f"durable-kernel against the {short}-turn target (<= 0.25 MB): the DuckDB journal file alone is "
                f"{file:.3f} MB ({'within' if file <= 0.25 else 'over'} the target); the replay pack beside it, a "
                f"second compressed copy of the step's replay data that lets the next run replay without opening "
                f"DuckDB, brings it to {whole:.3f} MB. The file is whole {first['block_size']:,}-byte blocks: "
                f"{first['used_blocks']} used, {first['catalog_blocks']} of them by DuckDB's catalog (tables and "
                "views) and the rest by rows, each non-empty table taking at least one block of its own")
    return metrics


def user_text(turn: int, chars: int = CHARS) -> str:
    rng, words, size = random.Random(turn), [], 0
    while size <= chars:
        words.append(rng.choice(VOCAB))
        size += len(words[-1]) + 1
    return " ".join(words)[:chars]


class Chat:
    """The client side of the conversation, plus what it would cost to store the whole history at every call."""

    def __init__(self, base_url: str) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        self.unique = self.whole_history = self._history_json = 0

    def ask(self, messages: list[dict[str, str]]) -> Any:
        from openai.types.chat import ChatCompletion

        return self.client.post("/chat/completions", body={"model": MODEL, "messages": messages},
                                cast_to=ChatCompletion)

    def count(self, message: dict[str, str]) -> None:
        self.unique += len(message["content"])
        self._history_json += len(json.dumps(message)) + 2  # ", " between messages in the list

    def sent(self) -> None:
        self.whole_history += self._history_json


def _durable(workdir: Path, turns: int, chat: Chat) -> dict[str, Any]:
    import kernel_ext

    messages: list[dict[str, str]] = []
    with kernel_ext.session("bench-chat", journal=journal_path(workdir)).step("chat"):
        for turn in range(turns):
            messages.append({"role": "user", "content": user_text(turn)})
            chat.count(messages[-1])
            chat.sent()
            messages.append({"role": "assistant", "content": chat.ask(messages).choices[0].message.content})
            chat.count(messages[-1])
    kernel_ext.current_session().release()
    side = store_bytes(workdir, journal_path(workdir).name + ".logs")
    return {**_duckdb_blocks(journal_path(workdir)), "beside": side}


def _duckdb_blocks(path: Path) -> dict[str, Any]:
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        block_size, used = con.execute("SELECT block_size, used_blocks FROM pragma_database_size()").fetchone()
        tables = {}
        for (name,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
            (tables[name],) = con.execute(
                "SELECT count(DISTINCT block_id) FROM pragma_storage_info(?) WHERE block_id >= 0", [name]
            ).fetchone()
        (catalog,) = con.execute("SELECT count(*) FROM pragma_metadata_info()").fetchone()
    return {"tables": tables, "block_size": block_size, "used_blocks": used, "catalog_blocks": catalog}


def _dbos(workdir: Path, turns: int, chat: Chat) -> dict[str, Any]:
    from dbos import DBOS as Dbos

    dbos_init(workdir, "bench-chat")

    @Dbos.step(name="call_model")
    def call_model(messages: list[dict[str, str]]) -> Any:
        return chat.ask(messages)

    @Dbos.workflow(name="chat")
    def conversation(n: int) -> int:
        messages: list[dict[str, str]] = []
        for turn in range(n):
            messages.append({"role": "user", "content": user_text(turn)})
            chat.count(messages[-1])
            chat.sent()
            messages.append({"role": "assistant", "content": call_model(messages).choices[0].message.content})
            chat.count(messages[-1])
        return len(messages)

    Dbos.launch()
    try:
        assert conversation(turns) == 2 * turns
    finally:
        Dbos.destroy()
    return {}


def _langgraph(workdir: Path, turns: int, chat: Chat) -> dict[str, Any]:
    from langchain_core.messages import convert_to_openai_messages
    from langgraph.graph import END, START, MessagesState, StateGraph

    def turn(state: MessagesState) -> dict[str, Any]:
        user = {"role": "user", "content": user_text(len(state["messages"]) // 2)}
        chat.count(user)
        chat.sent()
        reply = chat.ask(convert_to_openai_messages(state["messages"]) + [user]).choices[0].message.content
        chat.count({"role": "assistant", "content": reply})
        return {"messages": [user, {"role": "assistant", "content": reply}]}

    graph = StateGraph(MessagesState)
    graph.add_node("turn", turn)
    graph.add_edge(START, "turn")
    graph.add_conditional_edges("turn", lambda state: "turn" if len(state["messages"]) < 2 * turns else END)
    saver = langgraph_saver(workdir)
    try:
        app = graph.compile(checkpointer=saver)
        final = app.invoke({"messages": []}, thread("chat", recursion_limit=turns + 10), durability="sync")
        assert len(final["messages"]) == 2 * turns
    finally:
        saver.conn.close()  # the last connection's close merges the WAL into the file
    return {}


def main(argv: list[str]) -> None:
    system, workdir, turns = argv[0], Path(argv[1]), int(argv[2])
    from kernel_ext.scripted.server import ScriptedModelServer

    with ScriptedModelServer(reply_chars=CHARS) as server:
        chat = Chat(server.base_url)
        runner = {DURABLE: _durable, DBOS: _dbos, LANGGRAPH: _langgraph}[system]
        extra = runner(workdir, turns, chat)
        assert server.stats()["requests"] == turns, server.stats()
    emit({"bytes": store_bytes(workdir), "unique": chat.unique, "whole_history": chat.whole_history, **extra})


if __name__ == "__main__":
    main(sys.argv[1:])
