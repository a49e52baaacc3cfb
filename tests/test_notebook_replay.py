"""Replay of openai calls inside %%durable cells of a real kernel, against the scripted model server."""

from __future__ import annotations

import pytest

from tests.conftest import API_KEY
from tests.harness import Kernel, journal_bytes, summaries

SETUP = """
%load_ext kernel_ext
from openai import OpenAI, AsyncOpenAI
client = OpenAI(max_retries=0)
aclient = AsyncOpenAI(max_retries=0)
"""


def streams(outputs: list[dict]) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream")


def requests(server) -> int:
    return server.stats()["requests"]


@pytest.fixture
def nb(kernel: Kernel) -> Kernel:
    kernel.ok(SETUP)
    return kernel


def test_stream_replays_as_a_stream(nb, model_server):
    cell = """%%durable streamed
stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "stream me"}], stream=True)
print(type(stream).__name__)
print("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
"""
    first = nb.ok(cell)
    assert requests(model_server) == 1
    second = nb.ok(cell)
    assert requests(model_server) == 1
    assert streams(second) == streams(first)
    assert streams(first).startswith("Stream\n[scripted]")
    assert summaries(second) == [{"step": "streamed", "replayed": 1, "live": 0}]


def test_async_client_and_top_level_await(nb, model_server):
    cell = """%%durable concurrent
import asyncio
replies = await asyncio.gather(*[
    aclient.chat.completions.create(model="m", messages=[{"role": "user", "content": f"question {i}"}])
    for i in range(3)
])
astream = await aclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "s"}], stream=True)
streamed = "".join([c.choices[0].delta.content or "" async for c in astream if c.choices])
print([r.choices[0].message.content for r in replies], streamed)
"""
    first = nb.ok(cell)
    assert requests(model_server) == 4
    nb.restart()
    nb.ok(SETUP)
    second = nb.ok(cell)
    assert requests(model_server) == 4
    assert streams(second) == streams(first)


def test_responses_and_embeddings_replay_with_their_types(nb, model_server):
    cell = """%%durable other_apis
r = client.responses.create(model="m", input="Say hello")
e = client.embeddings.create(model="e", input=["a", "b"])
print(type(r).__name__, r.output_text, type(e).__name__, len(e.data), e.data[1].embedding[:3])
"""
    first = nb.ok(cell)
    nb.restart()
    nb.ok(SETUP)
    second = nb.ok(cell)
    assert requests(model_server) == 2
    assert streams(second) == streams(first)
    assert streams(first).startswith("Response [scripted]")


def test_edited_prompt_sends_only_the_changed_call(nb, model_server):
    template = """%%durable trio
answers = [client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}]).choices[0]
           .message.content for q in ["first question", "SECOND", "third question"]]
print(answers)
"""
    nb.ok(template.replace("SECOND", "second question"))
    assert requests(model_server) == 3
    nb.ok(template.replace("SECOND", "second question, edited"))
    assert requests(model_server) == 4
    assert model_server.requests()[-1]["body"]["messages"][0]["content"] == "second question, edited"
    # The superseded record stays: going back to the old prompt replays it.
    nb.ok(template.replace("SECOND", "second question"))
    assert requests(model_server) == 4


def test_strict_replays_and_names_the_call_that_would_go_live(nb, model_server):
    template = """%%durable plan {flags}
messages = [{{"role": "user", "content": "{prompt}"}}]
one = client.chat.completions.create(model="m", messages=messages)
two = client.chat.completions.create(model="m", messages=messages + [{{"role": "user", "content": "more"}}])
print(one.choices[0].message.content, two.choices[0].message.content)
"""
    recorded = nb.ok(template.format(flags="", prompt="Plan a trip"))
    replayed = nb.ok(template.format(flags="--strict", prompt="Plan a trip"))
    assert streams(replayed) == streams(recorded)
    assert requests(model_server) == 2
    status, outputs = nb.execute(template.format(flags="--strict", prompt="Plan a 4-day trip"))
    assert status == "error"
    assert requests(model_server) == 2
    error = next(o for o in outputs if o["output_type"] == "error")
    assert error["ename"] == "StrictReplayError"
    message = error["evalue"]
    assert "'plan'" in message and "call 1 (chat.completions, model m)" in message
    assert "body.messages[0].content: 'Plan a trip' -> 'Plan a 4-day trip'" in message


def test_rerun_sends_every_call_again(nb, model_server):
    cell = """%%durable again {flags}
client.chat.completions.create(model="m", messages=[{{"role": "user", "content": "hi"}}]).choices[0].message.content
"""
    nb.ok(cell.format(flags=""))
    nb.ok(cell.format(flags=""))
    assert requests(model_server) == 1
    nb.ok(cell.format(flags="--rerun"))
    assert requests(model_server) == 2
    nb.ok(cell.format(flags=""))
    assert requests(model_server) == 2


def test_outside_durable_cells_the_client_is_untouched(nb, model_server, tmp_path):
    for _ in range(2):
        nb.ok('client.chat.completions.create(model="m", messages=[{"role": "user", "content": "plain"}])')
    assert requests(model_server) == 2
    assert not (tmp_path / "journal.duckdb").exists()


def test_client_created_before_the_extension_is_journaled(kernel, model_server):
    kernel.ok("from openai import OpenAI\nearly = OpenAI(max_retries=0)")
    kernel.ok("%load_ext kernel_ext")
    cell = """%%durable early
early.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).id
"""
    first = kernel.ok(cell)
    second = kernel.ok(cell)
    assert requests(model_server) == 1
    assert [o["data"] for o in first if o["output_type"] == "execute_result"] == [
        o["data"] for o in second if o["output_type"] == "execute_result"
    ]


def test_outputs_are_recorded_and_replays_are_marked(nb, model_server, tmp_path):
    cell = """%%durable shown
from IPython.display import display, HTML
print("before")
display(HTML("<b>bold</b>"))
reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
print(reply.choices[0].message.content)
42
"""
    nb.ok(cell)
    second = nb.ok(cell)
    marks = [o for o in second if "durable" in o.get("metadata", {})]
    assert len(marks) == 1 and "replayed from the journal (recorded 20" in marks[0]["data"]["text/plain"]
    nb.ok("%%durable other\npass")  # closes the journal between steps, so it can be read here
    from journal import Journal

    with Journal(tmp_path / "journal.duckdb").open() as store:
        (key,) = store.con.execute(
            "SELECT outputs FROM step_runs WHERE step = 'shown' ORDER BY id DESC LIMIT 1").fetchone()
        import json

        outputs = json.loads(store.fetch(key))
    kinds = [(o["output_type"], o.get("name")) for o in outputs]
    assert kinds == [("stream", "stdout"), ("display_data", None), ("stream", "stdout"), ("execute_result", None)]
    assert outputs[1]["data"]["text/html"] == "<b>bold</b>"
    assert outputs[3]["data"]["text/plain"] == "42"


def test_usage_errors_are_one_line(nb):
    status, outputs = nb.execute("%%durable a b c\npass")
    assert status == "error"
    assert any("UsageError" in o.get("text", "") for o in outputs)
    status, outputs = nb.execute("%durable nonsense")
    assert status == "error" and ("available: session NAME [--budget-tokens N] [--budget-usd X], status, "
                                  "history [SESSION], sql QUERY") in streams(outputs)
    status, outputs = nb.execute("%%durable s --strict --rerun\npass")
    assert status == "error" and "--strict replays only and --rerun sends every call live; choose one" in (
        streams(outputs))


def test_second_kernel_on_the_same_session_is_refused_by_name(nb, kernel_env, tmp_path, model_server):
    nb.ok("%durable session shared\n")
    nb.ok("%%durable one\npass")
    other = Kernel(kernel_env, tmp_path)
    try:
        other.ok(SETUP)
        other.ok("%durable session shared\n")
        status, outputs = other.execute("%%durable two\npass")
        assert status == "error"
        text = streams(outputs)
        assert "UsageError: session 'shared' is being driven by kernel" in text
        assert f"pid {nb.pid}" in text
        # Between cells the first kernel holds no lock: the journal is usable from here.
        other.ok("%durable session elsewhere\n")
        other.ok("%%durable two\npass")
    finally:
        other.shutdown()


def test_api_key_never_reaches_the_journal(nb, model_server, tmp_path):
    nb.ok("""%%durable secretive
client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True).close()
client.chat.completions.create(model="m", messages=[{"role": "user", "content": "y"}])
""")
    data = journal_bytes(tmp_path / "journal.duckdb")
    assert data and API_KEY.encode() not in data and b"Bearer" not in data
