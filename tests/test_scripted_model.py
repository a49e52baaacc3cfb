"""The scripted stand-in model, driven over loopback by the real openai clients."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from kernel_ext.scripted.server import ScriptedModelServer

ROOT = Path(__file__).resolve().parents[1]
ASK = [{"role": "user", "content": "What is the weather in Lisbon tomorrow?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "threshold": {"type": "number"},
                "detailed": {"type": "boolean"},
                "hours": {"type": "array", "items": {"type": "integer"}},
                "extra": {"type": "object"},
                "ignored": {"type": "string"},
            },
            "required": ["city", "days", "unit", "threshold", "detailed", "hours", "extra"],
        },
    },
}


@pytest.fixture
def srv() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture
def client(srv: ScriptedModelServer) -> Iterator[openai.OpenAI]:
    # Strict validation: every body must satisfy the SDK's pydantic types, not just parse leniently.
    c = openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, _strict_response_validation=True)
    yield c
    c.close()


def http(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_chat_text_reply(client: openai.OpenAI, srv: ScriptedModelServer) -> None:
    done = client.chat.completions.create(model="gpt-test", messages=ASK)
    choice = done.choices[0]
    assert re.fullmatch(r"\[scripted\] reply [0-9a-f]{8} to: What is the weather in Lisbon tomorrow\?",
                        choice.message.content or "")
    assert choice.finish_reason == "stop" and done.model == "gpt-test"
    assert done.usage is not None and done.usage.prompt_tokens == 7
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_reply_chars_pads_to_exact_length(srv: ScriptedModelServer, client: openai.OpenAI) -> None:
    srv.configure(reply_chars=300)
    long = client.chat.completions.create(model="m", messages=ASK).choices[0].message.content or ""
    assert len(long) == 300 and long.startswith("[scripted] reply")
    srv.configure(reply_chars=20)
    assert len(client.chat.completions.create(model="m", messages=ASK).choices[0].message.content or "") == 20


def test_tool_call_then_text_after_tool_result(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = (choice.message.tool_calls or [])[0]
    assert re.fullmatch(r"call_[0-9a-f]{12}", call.id) and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "days", "unit", "threshold", "detailed", "hours", "extra"}
    assert re.fullmatch(r"[a-z]+-[0-9a-f]{4}", args["city"]) and isinstance(args["days"], int)
    assert args["unit"] == "celsius" and isinstance(args["threshold"], float)
    assert args["detailed"] is True and args["hours"] == [] and args["extra"] == {}

    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"}]
    second = client.chat.completions.create(model="m", messages=history, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert (second.choices[0].message.content or "").endswith("to: sunny, 24C")
    # A request can ask for more rounds before the text answer.
    again = client.chat.completions.create(model="m", messages=history, tools=[WEATHER],
                                           metadata={"tool_rounds": "2"})
    assert again.choices[0].finish_reason == "tool_calls"


def test_streamed_chat_equals_non_streamed(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="m", messages=ASK)
    chunks = list(client.chat.completions.create(model="m", messages=ASK, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([d for d in deltas if d]) > 2  # really split into pieces
    assert "".join(deltas) == plain.choices[0].message.content
    assert {c.id for c in chunks} == {plain.id}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    plain = (client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER]).choices[0]
             .message.tool_calls or [])[0]
    ids, names, args, finish = set(), set(), "", None
    for chunk in client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], stream=True):
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.index == 0
            ids.add(delta.id) if delta.id else None
            if delta.function and delta.function.name:
                names.add(delta.function.name)
            args += (delta.function.arguments or "") if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert ids == {plain.id} and names == {"get_weather"} and finish == "tool_calls"
    assert json.loads(args) == json.loads(plain.function.arguments)


def test_responses_api_plain_and_streamed(client: openai.OpenAI) -> None:
    resp = client.responses.create(model="m", input="Summarise the plan", instructions="Be brief.")
    assert resp.status == "completed" and resp.id.startswith("resp_")
    assert resp.output_text.endswith("to: Summarise the plan")
    assert resp.usage is not None and resp.usage.input_tokens == 5

    events = list(client.responses.create(model="m", input="Summarise the plan", instructions="Be brief.",
                                          stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == resp.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))

    # The SDK's accumulating helper is stricter about event order than plain iteration.
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Summarise the plan"}]}]
    with client.responses.stream(model="m", input=items) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text.endswith("to: Summarise the plan")


def test_embeddings_default_and_float(srv: ScriptedModelServer) -> None:
    # Lenient client: openai's own default (base64 on the wire) fails its strict validation.
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0) as c:
        default = c.embeddings.create(model="emb", input=["alpha", "beta"])
        floats = c.embeddings.create(model="emb", input=["alpha", "beta"], encoding_format="float")
        single = c.embeddings.create(model="emb", input="alpha")
    assert [len(d.embedding) for d in default.data] == [8, 8]
    assert all(isinstance(x, float) and -1 <= x < 1 for x in default.data[0].embedding)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert single.data[0].embedding == default.data[0].embedding
    assert srv.requests()[0]["body"]["encoding_format"] == "base64"  # what the SDK chose by default


def test_identical_requests_get_identical_bytes(srv: ScriptedModelServer, client: openai.OpenAI) -> None:
    for body in ({"model": "m", "messages": ASK}, {"model": "m", "messages": ASK, "tools": [WEATHER]},
                 {"model": "m", "input": "hi"}, {"model": "m", "input": "hi", "stream": True}):
        path = "/v1/responses" if "input" in body else "/v1/chat/completions"
        first, second = http(srv.url + path, body), http(srv.url + path, body)
        assert first == second and first[0] == 200
    dumps = {client.chat.completions.create(model="m", messages=ASK).model_dump_json() for _ in range(2)}
    assert len(dumps) == 1


def test_stats_log_and_errors(srv: ScriptedModelServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="m", messages=ASK)
    client.models.list()
    assert http(srv.url + "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"})[0] == 400
    status, raw = http(srv.url + "/v1/nowhere", {"x": 1})
    assert status == 404 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    assert http(srv.url + "/_control/stats")[0] == 200  # control traffic is not counted

    assert srv.stats() == {"requests": 4, "faults_injected": 0, "max_in_flight": 1, "by_path": {
        "/v1/chat/completions": 2, "/v1/models": 1, "/v1/nowhere": 1}}
    log = srv.requests()
    assert [(r["n"], r["status"], r["authorized"]) for r in log] == [
        (1, 200, True), (2, 200, True), (3, 400, False), (4, 404, False)]
    assert log[0]["body"] == {"model": "m", "messages": ASK}
    assert "sk-test" not in json.dumps(log)

    srv.reset()
    assert srv.stats() == {"requests": 0, "by_path": {}, "faults_injected": 0, "max_in_flight": 0}
    assert srv.requests() == []
    with pytest.raises(TypeError):
        srv.configure(explode=True)


def test_fail_next_is_retried_quickly(srv: ScriptedModelServer, caplog: pytest.LogCaptureFixture) -> None:
    srv.configure(fail_next=[429])
    responses: list[dict[str, str]] = []
    hooks = {"response": [lambda response: responses.append(dict(response.headers))]}
    with (caplog.at_level(logging.INFO, logger="openai._base_client"),
          openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=1,
                        http_client=openai.DefaultHttpxClient(event_hooks=hooks)) as c):
        c.chat.completions.create(model="m", messages=ASK)
    assert [r["status"] for r in srv.requests()] == [429, 200]
    # The 429 says when to retry in the header the SDK prefers, and the SDK waits that (1 ms), not its own
    # backoff (0.375-0.5 s): what the SDK logs as its wait, so that the check does not depend on the clock.
    assert responses[0]["retry-after-ms"] == "1" and responses[0]["retry-after"] == "0"
    (retrying,) = [r for r in caplog.records if r.getMessage().startswith("Retrying request in")]
    assert retrying.args[0] == 0.001, retrying.getMessage()
    assert srv.stats()["faults_injected"] == 1

    srv.configure(fail_next=[500, 503])
    with (openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0) as c,
          pytest.raises(openai.InternalServerError) as err):
        c.chat.completions.create(model="m", messages=ASK)
    assert err.value.status_code == 500 and err.value.body["type"] == "server_error"  # type: ignore[index]
    status, raw = http(srv.url + "/v1/models")
    assert status == 503 and json.loads(raw)["error"]["code"] == "service_unavailable"


def test_fail_rate_is_reproducible(srv: ScriptedModelServer) -> None:
    def run() -> list[int]:
        srv.reset()
        srv.configure(fail_rate=0.5, fail_statuses=[429, 500], seed=7)
        return [http(srv.url + "/v1/chat/completions", {"model": "m", "messages": ASK})[0] for _ in range(20)]

    first = run()
    assert first == run()
    assert {429, 500, 200} <= set(first)
    assert srv.stats()["faults_injected"] == sum(s != 200 for s in first)


def test_hold_request_until_release(srv: ScriptedModelServer, client: openai.OpenAI) -> None:
    srv.configure(hold_request=2)
    answers: list[str] = []

    def calls() -> None:
        for _ in range(3):
            answers.append(client.chat.completions.create(model="m", messages=ASK).id)

    worker = threading.Thread(target=calls)
    worker.start()
    assert srv.wait_for_held(timeout=60) == 2
    time.sleep(0.05)
    assert worker.is_alive() and len(answers) == 1
    assert [r["status"] for r in srv.requests()] == [200, None]  # counted and logged while in flight
    srv.release()
    worker.join(60)
    assert len(answers) == 3 and [r["status"] for r in srv.requests()] == [200, 200, 200]
    with pytest.raises(TimeoutError):
        srv.wait_for_held(timeout=0.05)


def test_hang_next_times_out_client_and_stop_frees_it() -> None:
    srv = ScriptedModelServer().start()
    srv.configure(hang_next=1)
    # The hang never ends by itself, so any client timeout fires; 0.3 s keeps the test short.
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            c.chat.completions.create(model="m", messages=ASK)
        # Only the next one hangs (a generous timeout: this one must not time out on a busy machine).
        assert c.with_options(timeout=120).chat.completions.create(model="m", messages=ASK).choices
        srv.configure(hold_request=3)
        errors: list[Exception] = []

        def held_call() -> None:
            try:
                # Longer than any guard below: only the dropped connection can end this call in time.
                c.with_options(timeout=600).chat.completions.create(model="m", messages=ASK)
            except openai.APIConnectionError as exc:
                errors.append(exc)

        worker = threading.Thread(target=held_call, daemon=True)
        worker.start()
        assert srv.wait_for_held(timeout=60) == 3
        # stop() must not wait for the held request; the client sees the connection drop.
        stopper = threading.Thread(target=srv.stop, daemon=True)
        stopper.start()
        stopper.join(120)
        worker.join(120)
    assert not stopper.is_alive() and not worker.is_alive()
    assert len(errors) == 1 and not isinstance(errors[0], openai.APITimeoutError), errors
    stats = srv.stats()
    assert {k: stats[k] for k in ("requests", "by_path", "faults_injected")} == {
        "requests": 3, "by_path": {"/v1/chat/completions": 3}, "faults_injected": 2}


def test_client_killed_while_held(srv: ScriptedModelServer, capfd: pytest.CaptureFixture[str]) -> None:
    # The use case this exists for: SIGKILL the caller while call k is in flight, then carry on.
    srv.configure(hold_request=1)
    code = (f"import openai; openai.OpenAI(base_url={srv.base_url!r}, api_key='sk-test', max_retries=0)"
            ".chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'hi'}], stream=True)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert srv.wait_for_held(timeout=60) == 1
    finally:
        proc.kill()
        proc.wait(60)
    srv.release()
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0) as c:
        assert c.chat.completions.create(model="m", messages=ASK).choices[0].finish_reason == "stop"
    assert srv.stats()["requests"] == 2 and srv.requests()[0]["body"]["stream"] is True
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the server never logs, even when writing to a dead client


def test_async_client_many_concurrent_requests(srv: ScriptedModelServer) -> None:
    async def main() -> tuple[list[str], str]:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0,
                                      _strict_response_validation=True) as c:
            replies = await asyncio.gather(*(
                c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(40)))
            stream = await c.chat.completions.create(model="m", messages=ASK, stream=True)
            streamed = "".join([ch.choices[0].delta.content or "" async for ch in stream])
        return [r.choices[0].message.content or "" for r in replies], streamed

    # The first request is held until all the others have been answered: a server that served one
    # request at a time would never answer them (and the release below would come only at the guard).
    srv.configure(hold_request=1)
    others_answered = threading.Event()

    def release_once_the_others_are_answered() -> None:
        srv.wait_for_held(timeout=120)
        deadline = time.monotonic() + 120  # a guard against a hang, not a speed limit
        while time.monotonic() < deadline:
            if sum(r["status"] == 200 for r in srv.requests()) == 39:
                others_answered.set()
                break
            time.sleep(0.01)
        srv.release()

    releaser = threading.Thread(target=release_once_the_others_are_answered)
    releaser.start()
    contents, streamed = asyncio.run(main())
    releaser.join(120)
    assert others_answered.is_set()
    assert len(set(contents)) == 40 and all(c.endswith(f"to: q{i}") for i, c in enumerate(contents))
    assert streamed.endswith("to: What is the weather in Lisbon tomorrow?")
    assert srv.stats()["requests"] == 41


def test_cli_and_control_plane() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "kernel_ext.scripted.server", "--reply-chars", "64"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.fullmatch(r"scripted model server listening on (http://127\.0\.0\.1:\d+)/v1\n", line)
        assert match, line
        url = match.group(1)
        control = url + "/_control/"
        with openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as c:
            assert len(c.chat.completions.create(model="m", messages=ASK).choices[0].message.content or "") == 64
            assert http(control + "configure", {"fail_next": [503]}) == (200, b'{"ok":true}')
            with pytest.raises(openai.InternalServerError):
                c.chat.completions.create(model="m", messages=ASK)
            assert http(control + "configure", {"bogus": 1})[0] == 400
            assert http(control + "held?timeout=0.05")[0] == 408

            assert http(control + "configure", {"hold_request": 3})[0] == 200
            worker = threading.Thread(target=lambda: c.chat.completions.create(model="m", messages=ASK))
            worker.start()
            status, raw = http(control + "held?timeout=60")
            assert (status, json.loads(raw)) == (200, {"n": 3})
            assert http(control + "release", {})[0] == 200
            worker.join(60)
            assert not worker.is_alive()

        stats = json.loads(http(control + "stats")[1])
        assert stats == {"requests": 3, "by_path": {"/v1/chat/completions": 3}, "faults_injected": 2,
                         "max_in_flight": 1}
        log = json.loads(http(control + "requests")[1])
        assert [r["status"] for r in log] == [200, 503, 200] and "sk-test" not in json.dumps(log)
        assert http(control + "reset", {})[0] == 200
        assert json.loads(http(control + "stats")[1])["requests"] == 0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == ""  # one line on stdout, nothing more
