"""A conversation is hashed by what is new, and an edit anywhere in it is a new chain from that point.

An agent sends its whole conversation on every call; the journal links only the messages a request
adds to one it linked lately. These tests make sure that reuse never matches a request to the wrong
recording: a message edited in place in the list the program keeps sending, a number that becomes a
boolean (equal in Python, not in JSON), and a fresh process replaying all of it with no request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb

from journal import Journal

PROGRAM = """
import json, sys
import openai, kernel_ext

client = openai.OpenAI(max_retries=0)
kernel_ext.session("chats", journal=sys.argv[1])
answers = []

def ask(messages):
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    answers.append(reply.choices[0].message.content)

with kernel_ext.step("chat"):
    messages = [{"role": "system", "content": "be brief"}]
    for turn in range(4):
        messages.append({"role": "user", "content": f"question {turn}"})
        ask(messages)
        messages.append({"role": "assistant", "content": answers[-1]})
    messages[1]["content"] = "question 0, edited"        # in place: the same dict objects are sent again
    ask(messages)
    flags = [{"role": "user", "content": "count", "name": "a"}]
    ask(flags + [{"role": "user", "content": "x", "tool_call_id": "1"}])
    ask([{"role": "user", "content": [{"type": "text", "text": "n"}], "n": 1}])
    ask([{"role": "user", "content": [{"type": "text", "text": "n"}], "n": True}])
print(json.dumps(answers))
"""


def _run(tmp_path: Path, env: dict[str, str]) -> list[str]:
    script = tmp_path / "chat.py"
    script.write_text(PROGRAM)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "j.duckdb")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_edit_in_place_is_a_new_request_and_a_replay_sends_nothing(tmp_path, kernel_env, model_server):
    model_server.reset()
    first = _run(tmp_path, kernel_env)
    assert model_server.stats()["requests"] == 8  # every request went out: none matched another's recording

    # What the journal holds for the edited request is the edited conversation, from its first message.
    journal = Journal(tmp_path / "j.duckdb")
    with journal.open(read_only=True) as store:
        calls = store.con.execute("SELECT id FROM calls WHERE step = 'chat' ORDER BY id").fetchall()
        edited = store.call_documents(calls[4][0])
        bodies = [store.call_documents(call_id)["request"]["body"] for (call_id,) in calls]
    sent = edited["request"]["body"]["messages"]
    assert sent[1]["content"] == "question 0, edited" and len(sent) == 9
    assert bodies[3]["messages"][1]["content"] == "question 0"  # the earlier request is as it was sent
    assert bodies[6]["messages"][0]["n"] == 1 and bodies[7]["messages"][0]["n"] is True

    # A fresh process replays every call, the edited one included, and gets the same answers.
    again = _run(tmp_path, kernel_env)
    assert again == first and model_server.stats()["requests"] == 8
    con = duckdb.connect(str(tmp_path / "j.duckdb"), read_only=True)
    try:
        (fingerprints,) = con.execute("SELECT count(DISTINCT doc->>'fingerprint') FROM records "
                                      "WHERE kind = 'call'").fetchone()
    finally:
        con.close()
    assert fingerprints == 8


def test_a_list_edited_in_place_between_two_splits_is_hashed_as_it_is_now():
    # The path of an SDK whose request document holds the caller's own message objects.
    from journal import Split, _blobs, split_document

    def key_of(document: dict) -> str:
        return split_document(document, Split())

    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    first = key_of({"messages": messages})
    messages[0]["content"] = "a, edited"
    messages.append({"role": "user", "content": "c"})
    second = key_of({"messages": messages})
    _blobs._recent.clear()  # what a process that never saw the first request computes
    assert second == key_of({"messages": [dict(m) for m in messages]}) != first


WINDOW = """
import glob, json, os, sys
import openai, kernel_ext

client = openai.OpenAI(max_retries=0)
kernel_ext.session("window", journal=sys.argv[1])
logs = sys.argv[1] + ".logs"
messages, answers, sizes = [], [], []
with kernel_ext.step("window"):
    for turn in range(40):
        messages.append({"role": "user", "content": f"turn {turn}: " + "lorem ipsum dolor " * 110})
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages[-20:])  # the last 20
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        answers.append(reply.choices[0].message.content)
        if turn in (19, 39):  # the log before DuckDB takes it in: what each call appended
            sizes.append(sum(os.path.getsize(f) for f in glob.glob(os.path.join(logs, "*.log"))))
print(json.dumps({"answers": answers, "sizes": sizes}))
"""


def test_a_sliding_window_stores_what_is_new_and_replays(tmp_path, kernel_env, model_server):
    model_server.reset()
    script = tmp_path / "window.py"
    script.write_text(WINDOW)

    def run() -> dict:
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "j.duckdb")], capture_output=True,
                              text=True, env=kernel_env, cwd=tmp_path, timeout=180)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run()
    assert model_server.stats()["requests"] == 40
    # Every call sends 20 messages of about 2 KB, 19 of them sent before; the log grows by what is new
    # (one message, the answer and a reference to each message sent again), not by the window.
    per_call = (first["sizes"][1] - first["sizes"][0]) / 20
    assert per_call < 8_000, f"{per_call:.0f} bytes of log per call, for about 2 KB of new content"
    again = run()
    assert again["answers"] == first["answers"] and model_server.stats()["requests"] == 40
