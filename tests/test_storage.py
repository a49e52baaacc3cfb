"""The journal's layout on disk: packs of blobs, the size of a growing chat, migration 7, compaction. No kernels."""

from __future__ import annotations

import random

import duckdb
import openai

import kernel_ext
from journal import Journal, Split, _blobs, _blobstore, _schema, split_document
from kernel_ext.scripted.server import ScriptedModelServer

WORDS = ("the", "agent", "reads", "a", "ticket", "and", "checks", "order", "status", "before", "it", "writes",
         "reply", "to", "customer", "about", "refund", "policy", "shipping", "delay", "invoice", "account")


def _text(seed: int, chars: int = 500) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(chars // 4))[:chars]


def _chat(path, turns: int) -> int:
    """A growing conversation of `turns` model calls in one step, as bench/storage.py runs it; the file's size."""
    with ScriptedModelServer(reply_chars=500) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        messages: list[dict[str, str]] = []
        with kernel_ext.session("chat", journal=path).step("chat"):
            for turn in range(turns):
                messages.append({"role": "user", "content": _text(turn)})
                reply = client.chat.completions.create(model="scripted-chat", messages=messages)
                messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        kernel_ext.current_session().release()
        kernel_ext.current_session().close_journal()
    return path.stat().st_size


def test_a_growing_chat_grows_the_journal_linearly_in_its_unique_content(tmp_path):
    short = _chat(tmp_path / "short.duckdb", 40)
    long = _chat(tmp_path / "long.duckdb", 200)
    # 1,000 characters of new messages a turn, about a fifth of that once compressed with the rest of the
    # conversation; the fixed part (schema, small tables) is a few hundred KB at most.
    assert long < 400_000, long
    assert (long - short) / 160 < 1_600, (short, long)
    for path in (tmp_path / "short.duckdb", tmp_path / "long.duckdb"):
        assert not path.with_name(path.name + ".compact").exists()


def test_a_pack_holds_the_blobs_written_together_and_each_reads_back_alone(tmp_path):
    blobs = {_blobs.digest(text.encode()): text.encode() for text in (_text(i) for i in range(600))}
    with Journal(tmp_path / "j.duckdb").open() as store:
        store.write_blobs(blobs)
        packs, keys = store.con.execute("SELECT count(*) - count(hash), count(hash) FROM blobs").fetchone()
        stored = store.con.execute("SELECT sum(octet_length(data)) FROM blobs").fetchone()[0]
    assert keys == 600 and 2 <= packs <= 4  # about 128 KB of text a pack
    assert stored < sum(map(len, blobs.values())) / 3
    with Journal(tmp_path / "j.duckdb").open() as store:  # a fresh connection: nothing cached
        for key in random.Random(1).sample(list(blobs), 20):
            assert store.fetch(key) == blobs[key]
        assert store._blobs_by_hash(list(blobs)) == blobs
        store.write_blobs(blobs)  # written once: stored keys are not written again
        assert store.con.execute("SELECT count(hash) FROM blobs").fetchone()[0] == 600


def test_a_blob_written_in_a_rolled_back_transaction_is_not_read_from_the_cache(tmp_path):
    with Journal(tmp_path / "j.duckdb").open() as store:
        first = store.put_bytes(b"first")
        assert store.fetch(first) == b"first"
        try:
            with store.transaction():
                gone = store.put_bytes(b"rolled back")
                assert store.fetch(gone) == b"rolled back"  # its pack is cached now
                raise RuntimeError
        except RuntimeError:
            pass
        other = store.put_bytes(b"another")  # takes the pack number the rolled-back pack had
        assert store.fetch(other) == b"another" and store.fetch(first) == b"first"
        assert store._stored([gone]) == set()


def _old_journal(path, blobs: dict[str, bytes]) -> None:
    """A journal as schema version 6 left it: one row per blob, hex keys, zlib with a preset dictionary."""
    con = duckdb.connect(str(path))
    _schema.migrate(con, upto=6)
    rows = []
    for key, data in blobs.items():
        codec, packed = _blobs.encode(data)
        rows.append([key, codec, len(data), packed])
    con.executemany("INSERT INTO blobs VALUES (?, ?, ?, ?)", rows + rows[:3])  # no key kept them unique
    con.execute("INSERT INTO call_records VALUES (1, 's', 'a', 1, ?)", ['{"status": "completed", "seq": 1}'])
    con.close()


def test_migration_7_packs_every_blob_of_an_older_journal_and_each_stays_readable(tmp_path):
    split = Split()
    conversation = {"model": "m", "messages": [{"role": "user", "content": _text(i)} for i in range(300)]}
    document = split_document(conversation, split)
    blobs = dict(split.blobs)
    for links in split.chains:
        for node, node_data, item, item_data in links:
            blobs[node], blobs[item] = node_data, item_data
    blobs[_blobs.digest(b"x" * 3_000_000)] = b"x" * 3_000_000  # a big pickle gets a pack of its own
    path = tmp_path / "old.duckdb"
    _old_journal(path, blobs)
    with Journal(path).open() as store:
        assert store.con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == _schema.LATEST
        assert store.con.execute("SELECT count(hash) FROM blobs").fetchone()[0] == len(blobs)
        assert store.get_json(document) == conversation
        assert all(store.fetch(key) == data for key, data in blobs.items())
        assert store.con.execute("SELECT doc FROM call_records").fetchone()[0] == '{"status": "completed", "seq": 1}'
        assert store.con.execute("SELECT count(*) FROM calls").fetchone()[0] == 1
        (table,) = store.con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'records'").fetchone()
    assert "doc VARCHAR USING COMPRESSION ZSTD" in table


def test_keys_are_the_digest_in_16_bytes():
    key = _blobs.digest(b"anything")
    assert _blobstore.to_hex(_blobstore.to_int(key)) == key
    assert _blobstore.to_hex(_blobstore.to_int("f" * 32)) == "f" * 32  # the top bit set: a negative HUGEINT


def test_a_compacted_journal_keeps_its_rows_and_sequences(tmp_path):
    path = tmp_path / "j.duckdb"
    _chat(path, 30)
    with Journal(path).open() as store:
        runs = store.con.execute("SELECT max(id) FROM step_runs").fetchone()[0]
        (run_id,) = store.con.execute("SELECT nextval('run_ids')").fetchone()
        assert run_id > runs
        assert store.con.execute("SELECT count(*) FROM calls WHERE status = 'completed'").fetchone()[0] == 30
    _chat(path, 30)  # the same chat again: replayed from the compacted file, nothing new sent
    with Journal(path).open() as store:
        assert store.con.execute("SELECT count(*) FROM calls").fetchone()[0] == 30
        assert store.con.execute("SELECT last_run_replayed FROM steps").fetchone()[0] == 30


def test_a_file_another_connection_of_this_process_uses_is_not_replaced(tmp_path):
    path = tmp_path / "j.duckdb"
    with Journal(path).open() as store:
        for i in range(40):  # many small commits: blocks to gain back
            store.put_bytes(_text(i).encode())
    inode = path.stat().st_ino
    other = Journal(path).connect()
    try:
        with Journal(path).open() as store:
            store.put_bytes(b"one more")
        assert path.stat().st_ino == inode
    finally:
        other.close()


def test_the_replay_packs_of_a_compacted_journal_stay_usable(tmp_path):
    path = tmp_path / "j.duckdb"
    _chat(path, 30)  # its close packs the step for its next run
    assert Journal(path).has_pack("chat", "chat")
    inode = path.stat().st_ino
    with Journal(path).open() as store:  # many small commits: the close replaces the file by a compacted copy
        for i in range(40):
            store.put_bytes(_text(i).encode())
    assert path.stat().st_ino != inode, "the close should have compacted the file"
    begun = Journal(path).begin_from_pack("chat", "chat")  # the copy has the same rows: its pack holds
    assert begun is not None
    run, _ = begun
    assert [call.status for call in run.recorded] == ["completed"] * 30
