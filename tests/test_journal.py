"""Unit tests of the `journal` package: blobs, schema, locking, sessions, secrets and replay. No kernels.

Every test drives the real code: real DuckDB files, real subprocesses holding locks or dying, the real
`openai` client over loopback HTTP against the scripted stand-in model.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest

import journal
import kernel_ext
from journal import Holder, Journal, Split, _blobs, _blobstore, _schema, _store, join_document, split_document
from journal._holder import process_start
from kernel_ext.scripted.server import ScriptedModelServer
from tests.harness import journal_bytes

SECRET, SECRET2 = "sk-live-SECRET-123", "SECRET2"


def _all_blobs(split: Split) -> dict[str, bytes]:
    """Every blob a split produced: loose blobs plus the nodes and items of its chains."""
    out = dict(split.blobs)
    for links in split.chains:
        for node, node_data, item, item_data in links:
            out[node], out[item] = node_data, item_data
    return out


def _blob_rows(store: journal.Store) -> int:
    return store.con.execute("SELECT count(hash) FROM blobs").fetchone()[0]  # a pack's own row has none


def _record(store: journal.Store, run: journal.StepRun, seq: int, answer: Any) -> int:
    request, response = Split(), Split()
    fingerprint = split_document({"question": seq}, request)
    key = split_document({"answer": answer}, response)
    writer = journal.StepWriter(store.journal, run, store.reserve_call_ids)
    return writer.record_call(seq=seq, fingerprint=fingerprint, ordinal=0, kind="value", name="test",
                              request=request, response=response, response_key=key, meta={"status": 200},
                              started_at=_store.now())


def _python(code: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=60, **kwargs)


# -- blobs -------------------------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Grüße aus Lisboa: 東京 → 🙂, \"quotes\" and \\ backslashes\n"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": [1, 2]}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "ünïcode"}]},
]
DOCUMENTS = {
    "chat request": {"method": "POST", "path": "chat/completions", "query": [],
                     "body": {"model": "m", "messages": CONVERSATION, "temperature": 0.5, "stream": False}},
    "chat response": {"id": "chatcmpl-1", "object": "chat.completion", "usage": {"prompt_tokens": 3},
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": "Olá, 世界", "refusal": None}},
                                  {"index": 1, "message": {}}]},
    "empty lists": {"messages": [], "input": [], "choices": [], "tools": [], "nested": {"messages": []}},
    "responses input": {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "é"}]},
                                                 {"type": "message", "message": {"role": "x", "content": "y"}}]},
    "scalars in a chain": {"messages": [1, "two", None, True, 2.5, [3, {"messages": ["deep"]}], {}]},
    "non-ascii keys": {"ключ": "значение", "messages": [{"内容": "ß" * 300}], "message": {"é": ["ü"]}},
    "plain values": {"input": "a string, not a list", "message": "a string, not a mapping", "n": 0},
}


@pytest.mark.parametrize("document", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_split_and_join_round_trip(document, tmp_path):
    split = Split()
    key = split_document(document, split)
    blobs = _all_blobs(split)
    assert join_document(key, blobs.__getitem__) == document
    for data in blobs.values():  # every blob is canonical JSON that a reader can parse on its own
        json.loads(data)
    with Journal(tmp_path / "j.duckdb").open() as store:  # and the same through a real journal
        store.put(split)
        assert store.get_json(key) == document
    with Journal(tmp_path / "j.duckdb").open() as store:  # a fresh process reads it back
        assert store.get_json(key) == document


def test_conversation_lists_are_chains_of_items():
    split = Split()
    key = split_document(DOCUMENTS["chat request"], split)
    skeleton = json.loads(_all_blobs(split)[key])
    assert skeleton["body"]["messages"]["$durable"] == "chain"
    assert len(split.chains) == 1 and len(split.chains[0]) == len(CONVERSATION)


def test_identical_documents_give_identical_hashes():
    a, b = Split(), Split()
    reordered = {"body": {k: v for k, v in reversed(DOCUMENTS["chat request"]["body"].items())},
                 "query": [], "path": "chat/completions", "method": "POST"}
    assert split_document(DOCUMENTS["chat request"], a) == split_document(reordered, b)
    assert _all_blobs(a) == _all_blobs(b)
    changed = json.loads(json.dumps(DOCUMENTS["chat request"]))
    changed["body"]["messages"][1]["content"] += "!"
    assert split_document(changed, Split()) != split_document(DOCUMENTS["chat request"], Split())


def _message(i: int) -> dict[str, str]:
    role = "user" if i % 2 == 0 else "assistant"
    return {"role": role, "content": f"message {i}: " + "lorem ipsum dolor sit amet " * 20}


def _put_turn(store: journal.Store, turn: int) -> int:
    """Store the request of `turn` (2 * turn messages); return how many blob rows it added."""
    before = _blob_rows(store)
    split = Split()
    split_document({"model": "m", "messages": [_message(i) for i in range(2 * turn)]}, split)
    store.put(split)
    return _blob_rows(store) - before


def test_growing_conversation_adds_a_bounded_number_of_blobs(tmp_path):
    path = tmp_path / "j.duckdb"
    added = {}
    with Journal(path).open() as store:
        for turn in range(1, 51):
            added[turn] = _put_turn(store, turn)
        last = store.get_json(split_document({"model": "m", "messages": [_message(i) for i in range(100)]},
                                             Split()))
    assert last["messages"] == [_message(i) for i in range(100)]
    # the skeleton and one run of the 2 new messages: the same at turn 5 and at turn 50
    assert added[5] == added[50] == 2, added
    assert set(list(added.values())[1:]) == {added[50]}, added
    with Journal(path).open() as store:  # a fresh process knows nothing and asks the journal instead
        assert _put_turn(store, 51) == added[50]
        assert _put_turn(store, 51) == 0


def test_assistant_message_of_a_response_is_not_stored_again_when_sent_back(tmp_path):
    reply = {"role": "assistant", "content": "the answer " * 40, "refusal": None}
    with Journal(tmp_path / "j.duckdb").open() as store:
        store.put_json({"model": "m", "messages": [_message(0)]})
        store.put_json({"id": "r1", "choices": [{"index": 0, "message": reply}]})
        before = _blob_rows(store)
        key = store.put_json({"model": "m", "messages": [_message(0), reply, _message(2)]})
        assert _blob_rows(store) - before == 2  # the skeleton and the run of the two new messages
        (run,) = [store.fetch(k) for k in store._known if store.fetch(k).startswith(b'{"m":[{"$durable":"item"')]
        assert b"the answer" not in run  # the reply is the response's item, named, not repeated
        assert store.get_json(key)["messages"] == [_message(0), reply, _message(2)]


def test_a_conversation_stored_a_node_per_message_grows_by_runs(tmp_path):
    # Releases before schema 8 stored a node blob per message and each message as an item.
    old = Split()
    split_document({"model": "m", "messages": [_message(i) for i in range(4)]}, old)
    with Journal(tmp_path / "j.duckdb").open() as store:
        store.write_blobs(_all_blobs(old))
    with Journal(tmp_path / "j.duckdb").open() as store:  # a fresh process: it asks the journal
        before = _blob_rows(store)
        key = store.put_json({"model": "m", "messages": [_message(i) for i in range(6)]})
        assert _blob_rows(store) - before == 2  # the skeleton and a run extending the old nodes
        assert store.get_json(key)["messages"] == [_message(i) for i in range(6)]


def test_blobs_of_a_rolled_back_transaction_are_written_again(tmp_path):
    # begin_step and end_step put the cell source / outputs inside a transaction; if it rolls back, the
    # same source or outputs later are never written, and their step rows name a missing blob.
    document = {"messages": [{"role": "user", "content": "hello"}]}
    with Journal(tmp_path / "j.duckdb").open() as store:
        with pytest.raises(KeyboardInterrupt), store.transaction():
            store.put_json(document)
            raise KeyboardInterrupt  # e.g. the user interrupts the cell while the journal writes
        key = store.put_json(document)
        assert store.get_json(key) == document


# -- importable on its own -----------------------------------------------------------------------------

def test_journal_imports_without_ipython_ipywidgets_or_openai(tmp_path):
    result = _python(
        """
        import sys
        BLOCKED = {"IPython", "ipywidgets", "ipykernel", "openai", "httpx2", "httpx", "kernel_ext", "widgets"}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked by the test")

        assert not [m for m in sys.modules if m.partition(".")[0] in BLOCKED]
        sys.meta_path.insert(0, Blocker())
        for name in BLOCKED:
            sys.modules[name] = None
        import journal

        j = journal.Journal(sys.argv[1])
        with j.open() as store:
            store.claim_session("s", journal.Holder.current("script"))
            run = store.begin_step("s", "a", "print(1)")
            request, response = journal.Split(), journal.Split()
            fp = journal.split_document({"messages": [{"role": "user", "content": "hi"}]}, request)
            key = journal.split_document({"value": 42}, response)
            writer = journal.StepWriter(j, run, store.reserve_call_ids)
            writer.record_call(seq=1, fingerprint=fp, ordinal=0, kind="value", name="now", request=request,
                               response=response, response_key=key, meta={}, started_at=journal.now())
            writer.end_step("completed", live=1, replayed=0)
        with j.open() as store:
            (call,) = store.begin_step("s", "a", None).recorded
            print(store.get_json(call.response)["value"], store.get_json(call.request)["messages"][0]["content"])
        """,
        str(tmp_path / "j.duckdb"), cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "hi"]


# -- schema --------------------------------------------------------------------------------------------

def test_fresh_journal_has_the_latest_schema_and_reopening_does_not_reapply(tmp_path):
    path = tmp_path / "j.duckdb"
    with Journal(path).open() as store:
        rows = store.con.execute("SELECT version, applied_at FROM schema_version").fetchall()
        tables = {r[0] for r in store.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        key = store.put_json({"kept": True})
    assert [r[0] for r in rows] == [journal.SCHEMA_VERSION] == [_schema.LATEST]  # one row since version 7
    assert {"blobs", "records", "prices", "schema_version"} == tables  # one table of records since version 8
    with Journal(path).open() as store:
        views = {r[0] for r in store.con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    # The documented views, and the old tables' names over `records`.
    assert {"sessions", "steps", "calls", "approvals", "session_records", "step_records", "step_runs",
            "call_records", "journal_state", "cells"} <= views
    for _ in range(2):
        with Journal(path).open() as store:
            assert store.con.execute("SELECT version, applied_at FROM schema_version").fetchall() == rows
            assert store.get_json(key) == {"kept": True}
    con = duckdb.connect(str(path))
    try:
        assert _schema.migrate(con) == journal.SCHEMA_VERSION  # reports what it found, applies nothing
        assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(rows)
    finally:
        con.close()


def _make_too_new(path: Path) -> None:
    with Journal(path).open():
        pass
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version (version) VALUES (?)", [journal.SCHEMA_VERSION + 1])
    con.close()


def test_journal_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "j.duckdb"
    _make_too_new(path)
    with pytest.raises(journal.SchemaTooNewError, match="upgrade") as caught, Journal(path).open():
        pass
    assert str(journal.SCHEMA_VERSION + 1) in str(caught.value)
    assert isinstance(caught.value, journal.JournalError)
    del caught


def test_refused_journal_is_not_left_locked(tmp_path):
    path = tmp_path / "j.duckdb"
    _make_too_new(path)
    with pytest.raises(journal.SchemaTooNewError) as caught, Journal(path).open():
        pass
    # `caught` keeps the traceback alive, as IPython keeps sys.last_traceback after an error.
    result = _python("import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(path))
    assert caught.value.__traceback__ is not None
    assert result.returncode == 0, result.stderr[-300:]


# -- locking -------------------------------------------------------------------------------------------

HOLD = """
import duckdb, sys
con = duckdb.connect(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # holds the file until told to let go (or until its stdin closes)
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    with Journal(path).open():
        pass
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_open_of_a_locked_journal_names_the_holder(tmp_path):
    path = tmp_path / "j.duckdb"
    proc = _holder(path)
    try:
        started = time.monotonic()
        with pytest.raises(journal.JournalBusyError) as caught, Journal(path, wait=0.5).open():
            pass
        assert time.monotonic() - started >= 0.5  # it tried for as long as it was told to, not once
        assert f"process {proc.pid} " in str(caught.value)
        assert caught.value.holder.startswith(f"process {proc.pid} ")
    finally:
        proc.kill()
        proc.wait()
    with Journal(path, wait=0.5).open() as store:
        assert store.put_json({"after": "holder exited"})


def test_open_waits_for_a_holder_that_lets_go(tmp_path):
    path = tmp_path / "j.duckdb"
    proc = _holder(path)
    opened: list[bool] = []

    def open_and_write() -> None:
        with Journal(path, wait=120).open() as store:
            opened.append(bool(store.put_json({"opened": True})))

    try:
        # Locked now: an open has to wait for the holder.
        with pytest.raises(journal.JournalBusyError), Journal(path, wait=0).open():
            pass
        opener = threading.Thread(target=open_and_write)
        opener.start()
        time.sleep(0.5)  # time to find the file locked; not asserted, the holder is what it waits for
        assert opener.is_alive() and not opened
        proc.stdin.close()  # the holder lets go
        opener.join(120)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    assert opened == [True]  # the retry loop got in once the holder let go


# -- sessions ------------------------------------------------------------------------------------------

def _other_process() -> tuple[subprocess.Popen[bytes], Holder]:
    proc = subprocess.Popen(["sleep", "30"])
    return proc, Holder(proc.pid, socket.gethostname(), process_start(proc.pid), "other kernel")


def test_session_driven_by_a_live_process_is_refused_until_it_dies(tmp_path):
    proc, other = _other_process()
    me = Holder.current("this test")
    try:
        with Journal(tmp_path / "j.duckdb").open() as store:
            store.claim_session("s", other)
            with pytest.raises(journal.SessionHeldError) as caught:
                store.claim_session("s", me)
            assert "other kernel" in str(caught.value) and f"pid {proc.pid} " in str(caught.value)
            assert store.session_holder("s") == other
            proc.kill()
            proc.wait()
            store.claim_session("s", me)
            assert store.session_holder("s") == me
            store.claim_session("s", Holder(me.pid, me.host, me.started, "same process, new label"))
            assert store.session_holder("s").label == "same process, new label"
    finally:
        proc.kill()
        proc.wait()


def test_session_of_a_killed_but_unreaped_process_can_be_claimed(tmp_path):
    proc, other = _other_process()
    try:
        proc.kill()
        deadline = time.monotonic() + 60
        while process_start(proc.pid) != "dead" and time.monotonic() < deadline:
            time.sleep(0.01)
        with Journal(tmp_path / "j.duckdb").open() as store:
            store.claim_session("s", other)
            store.claim_session("s", Holder.current("this test"))
    finally:
        proc.wait()


def test_session_holder_identity_guards_against_pid_reuse_and_other_hosts(tmp_path):
    me = Holder.current("this test")
    with Journal(tmp_path / "j.duckdb").open() as store:
        store.claim_session("s", Holder(me.pid, me.host, "1", "old kernel whose pid was reused"))
        store.claim_session("s", me)  # same pid, another start time: the old holder is gone
        store.claim_session("t", Holder(1, me.host + ".elsewhere", "1", "remote kernel"))
        with pytest.raises(journal.SessionHeldError, match="remote kernel"):
            store.claim_session("t", me)  # cannot see another host's processes: assume it lives


# -- steps that never ended ------------------------------------------------------------------------------

KILLED = """
import os, signal, sys
import journal
from journal import _store
store = journal.Store(journal.Journal(sys.argv[1]), journal.Journal(sys.argv[1])._connect())
store.claim_session("s", journal.Holder.current("killed kernel"))
run = store.begin_step("s", "a", "source")
for seq in (1, 2):
    request, response = journal.Split(), journal.Split()
    fp = journal.split_document({"question": seq}, request)
    key = journal.split_document({"answer": seq * 10}, response)
    journal.StepWriter(store.journal, run, store.reserve_call_ids).record_call(
        seq=seq, fingerprint=fp, ordinal=0, kind="value", name="test", request=request,
        response=response, response_key=key, meta={"status": 200}, started_at=journal.now())
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("ending", ["closed", "killed"])
def test_step_that_never_ended_is_marked_interrupted_and_its_calls_replay(tmp_path, ending):
    path = tmp_path / "j.duckdb"
    if ending == "closed":
        with Journal(path).open() as store:
            store.claim_session("s", Holder.current("first"))
            run = store.begin_step("s", "a", "source")
            _record(store, run, 1, 10)
            _record(store, run, 2, 20)
    else:  # SIGKILL: no step end, no close, no checkpoint; the journal replays its WAL and absorbs the log
        result = _python(KILLED, str(path))
        assert result.returncode == -signal.SIGKILL, result.stderr
    with Journal(path).open() as store:
        assert store.con.execute("SELECT status, epoch FROM steps").fetchall() == [("running", 1)]
        assert store.con.execute("SELECT status, ended_at FROM step_runs").fetchall() == [("running", None)]
        store.claim_session("s", Holder.current("next run"))
        again = store.begin_step("s", "a", "source")
        # The next run keeps the epoch and loads the recorded calls for replay, responses preloaded.
        assert again.epoch == 1
        assert [(c.seq, c.status) for c in again.recorded] == [(1, "completed"), (2, "completed")]
        assert [store.get_json(c.response)["answer"] for c in again.recorded] == [10, 20]
        assert [json.loads(c.data) for c in again.recorded] == [{"answer": 10}, {"answer": 20}]
        # The run whose process died is marked as such once the session is claimed again.
        runs = store.con.execute("SELECT id, status FROM step_runs ORDER BY id").fetchall()
        assert [status for _, status in runs] == ["interrupted", "running"] and runs[1][0] == again.run_id
        journal.StepWriter(store.journal, again, store.reserve_call_ids).end_step("completed", live=0, replayed=2)
        store.absorb()
        assert store.con.execute("SELECT status FROM steps").fetchall() == [("completed",)]
        assert store.begin_step("s", "a", None, rerun=True).recorded == []  # --rerun: a new, empty epoch


# -- the openai client through kernel_ext, in this plain Python process ------------------------------------

def _calls(client: openai.OpenAI) -> list[Any]:
    chat = client.chat.completions.create(model="scripted-chat", messages=[{"role": "user", "content": "hello"}])
    stream = client.chat.completions.create(model="scripted-chat", stream=True,
                                            messages=[{"role": "user", "content": "stream, please"}])
    chunks = list(stream)
    response = client.responses.create(model="scripted-chat", input="hello from responses")
    events = list(client.responses.create(model="scripted-chat", input="a streamed response", stream=True))
    embedding = client.embeddings.create(model="scripted-embed", input=["one", "two"])
    return [chat, type(stream), chunks, response, events, embedding]


def test_api_keys_and_auth_headers_never_reach_the_journal(tmp_path):
    path = tmp_path / "j.duckdb"
    with ScriptedModelServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=SECRET, max_retries=0)
        with kernel_ext.session("secrets", journal=path).step("a"):
            _calls(client)
            client.chat.completions.create(model="scripted-chat", extra_query={"api-key": SECRET2},
                                           messages=[{"role": "user", "content": "with a key in the query"}])
        requests = server.requests()
    assert len(requests) == 6 and all(r["authorized"] for r in requests)
    kernel_ext.current_session().close_journal()  # it stays open a moment after a step, for the next one
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM calls WHERE status = 'completed'").fetchone()[0] == 6
        blobs = [_blobstore.decompress(codec, data) for codec, data in
                 con.execute("SELECT codec, data FROM blobs WHERE hash IS NULL").fetchall()]
        text = [repr(con.execute(f"SELECT * FROM {table}").fetchall())
                for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
    finally:
        con.close()
    assert any(b"with a key in the query" in blob for blob in blobs)  # the search below covers the calls
    on_disk = journal_bytes(tmp_path / "j.duckdb")
    assert on_disk
    for needle in (SECRET, SECRET2, "Bearer"):
        assert needle.encode() not in on_disk, needle
        assert not [blob for blob in blobs if needle.encode() in blob], needle
        assert not [t for t in text if needle in t], needle
    assert not [blob for blob in blobs if b"api-key" in blob]


def test_second_run_of_a_step_replays_every_call_with_the_same_types(tmp_path):
    path = tmp_path / "j.duckdb"
    with ScriptedModelServer(reply_chars=120) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        with kernel_ext.session("replay", journal=path).step("a") as active:
            first = _calls(client)
        assert (active.live, active.replayed) == (5, 0)
        sent = server.stats()["requests"]
        assert sent == 5
        with kernel_ext.session("replay", journal=path).step("a") as active:
            second = _calls(client)
        assert (active.live, active.replayed) == (0, 5)
        assert server.stats()["requests"] == sent  # nothing reached the server
    chat, stream_type, chunks, response, events, embedding = second
    assert type(chat) is openai.types.chat.ChatCompletion
    assert stream_type is openai.Stream
    assert chunks and all(type(c) is openai.types.chat.ChatCompletionChunk for c in chunks)
    assert type(response) is openai.types.responses.Response
    assert type(embedding) is openai.types.CreateEmbeddingResponse
    assert [type(x) for x in first] == [type(x) for x in second]
    assert [[type(c) for c in x] for x in (first[2], first[4])] == [[type(c) for c in x] for x in (chunks, events)]
    assert first == second
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


REPLAY_SCRIPT = """
import json, sys
import kernel_ext, openai
client = openai.OpenAI(base_url=sys.argv[2], api_key="sk-test", max_retries=0)
with kernel_ext.session("script", journal=sys.argv[1]).step("a") as active:
    chat = client.chat.completions.create(model="scripted-chat", messages=[{"role": "user", "content": "hi"}])
    stream = client.chat.completions.create(model="scripted-chat", messages=[{"role": "user", "content": "s"}],
                                            stream=True)
    chunks = list(stream)
    response = client.responses.create(model="scripted-chat", input="hello")
    embedding = client.embeddings.create(model="scripted-embed", input="one")
out = [[type(x).__module__ + "." + type(x).__qualname__, x.model_dump(mode="json")]
       for x in [chat, *chunks, response, embedding]]
print(json.dumps({"live": active.live, "replayed": active.replayed, "stream": type(stream).__qualname__,
                  "modules": sorted(m for m in ("IPython", "ipykernel") if m in sys.modules), "out": out}))
"""


def test_exported_script_replays_in_a_fresh_process(tmp_path):
    path = tmp_path / "j.duckdb"
    with ScriptedModelServer(reply_chars=60) as server:
        runs = []
        for _ in range(2):
            result = _python(REPLAY_SCRIPT, str(path), server.base_url, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            runs.append(json.loads(result.stdout))
            runs[-1]["requests"] = server.stats()["requests"]
    first, second = runs
    assert (first["live"], first["replayed"], first["requests"]) == (4, 0, 4)
    assert (second["live"], second["replayed"], second["requests"]) == (0, 4, 4)
    assert first["out"] == second["out"] and second["stream"] == "Stream" and second["modules"] == []
    assert second["out"][0][0] == "openai.types.chat.chat_completion.ChatCompletion"


def test_a_users_own_durable_key_is_not_taken_for_a_reference():
    split = Split()
    document = {"args": {"$durable": "item", "h": "abc"}, "messages": [{"$durable": "chain", "h": "x"}]}
    key = split_document(document, split)
    blobs = dict(split.blobs)
    for links in split.chains:
        for node, node_data, item, item_data in links:
            blobs[node], blobs[item] = node_data, item_data
    assert join_document(key, blobs.__getitem__) == document


def test_a_journal_of_an_earlier_schema_keeps_its_calls_through_the_migrations(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, description VARCHAR, "
                "applied_at TIMESTAMP NOT NULL DEFAULT now())")
    for version, description, statements in _schema.MIGRATIONS[:3]:  # as release 3 left it
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_version (version, description) VALUES (?, ?)", [version, description])
    con.execute("INSERT INTO session_records VALUES ('s', NULL, now(), now(), NULL)")
    con.execute("INSERT INTO step_records VALUES ('s', 'a', 1, 'completed', NULL, now(), now())")
    ok = _blobs.digest(b"ok")
    con.execute("INSERT INTO blobs VALUES (?, 0, 2, 'ok'::BLOB)", [ok])
    con.execute("""INSERT INTO call_records VALUES (7, 's', 'a', 1, 3, 1, 'fp', 0, 'llm', 'chat.completions', 'm',
                   'completed', 'fp', ?, '{"status": 200}', 10, 5, 2, TIMESTAMP '2026-01-02 03:04:05',
                   TIMESTAMP '2026-01-02 03:04:06', 1000.0)""", [ok])
    con.close()
    with Journal(path).open() as store:
        (row,) = store.con.execute("SELECT id, session, step, kind, model, status, attempts, prompt_tokens, "
                                   "completion_tokens, latency_ms, started_at FROM calls").fetchall()
        assert row[:9] == (7, "s", "a", "llm", "m", "completed", 2, 10, 5) and row[9] == 1000.0
        assert str(row[10]) == "2026-01-02 03:04:05"
        assert store.call(7)["meta"] == '{"status":200}' and store.fetch(ok) == b"ok"
        assert store.steps_of("s")[0]["tokens"] == 15


REPLAY_SMALL_VALUES = """
import sys
import kernel_ext
from kernel_ext import step, tool
runs = []

@tool
def lookup(city: str) -> dict:
    runs.append(city)
    return {"city": "same answer"}

for name in ("first", "second"):
    kernel_ext.session(name, journal=sys.argv[1])
    with step("a"):
        print(lookup("x"), lookup("y"))
    with step("b"):
        print(lookup("z"))
print("RAN", len(runs))
"""


def test_small_tool_values_kept_in_call_rows_replay_in_a_fresh_process(tmp_path):
    # The same small result, kept once in the first row that returned it, serves later calls in
    # the same step, in another step and in another session: every replay finds it.
    path = tmp_path / "j.duckdb"
    first = _python(REPLAY_SMALL_VALUES, str(path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "RAN 6"
    again = _python(REPLAY_SMALL_VALUES, str(path))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == first.stdout.splitlines()[:-1] + ["RAN 0"]
    with Journal(path).open() as store:
        assert _blob_rows(store) <= 4  # step sources and outputs; the tool values live in their rows
