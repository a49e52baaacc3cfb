"""The scripted stand-in's other dialects (Responses tool calls, Anthropic Messages, Gemini), each
driven over loopback by the real client library, plus the agent frameworks built on them."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from kernel_ext.scripted.server import ScriptedModelServer

QUESTION = "What is the weather in Lisbon tomorrow?"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "days", "unit"],
}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
                  "parameters": SCHEMA}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Weather for a city.", "input_schema": SCHEMA}
ASK = [{"role": "user", "content": QUESTION}]
REPLY = re.compile(r"\[scripted\] reply [0-9a-f]{8} to: (.*)")


def check_args(args: dict[str, Any]) -> None:
    assert set(args) == {"city", "days", "unit"} and args["unit"] == "celsius"
    assert re.fullmatch(r"[a-z]+-[0-9a-f]{4}", args["city"]) and isinstance(args["days"], int)


def said_to(text: str | None) -> str:
    match = REPLY.fullmatch(text or "")
    assert match, text
    return match.group(1)


def http(url: str, body: Any = None) -> tuple[int, bytes]:
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def srv() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture
def oai(srv: ScriptedModelServer) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, _strict_response_validation=True)
    yield c
    c.close()


@pytest.fixture
def claude(srv: ScriptedModelServer) -> Iterator[anthropic.Anthropic]:
    # The SDK appends /v1/messages itself: it gets the server root, not base_url.
    c = anthropic.Anthropic(base_url=srv.url, api_key="sk-ant-test", max_retries=0,
                            _strict_response_validation=True)
    yield c
    c.close()


@pytest.fixture
def gemini(srv: ScriptedModelServer) -> Iterator[genai.Client]:
    c = genai.Client(api_key="g-test", http_options={"base_url": srv.url})
    yield c
    c.close()


# --- OpenAI Responses API: function calls -------------------------------------------------------

def test_responses_function_call_round(oai: openai.OpenAI, srv: ScriptedModelServer) -> None:
    first = oai.responses.create(model="m", input=QUESTION, tools=[RESPONSES_TOOL])
    call = first.output[0]
    assert call.type == "function_call" and call.status == "completed" and call.name == "get_weather"
    assert re.fullmatch(r"fc_[0-9a-f]{24}", call.id or "") and re.fullmatch(r"call_[0-9a-f]{12}", call.call_id)
    check_args(json.loads(call.arguments))
    assert first.output_text == ""

    history: list[Any] = [{"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True),
                          {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24C"}]
    second = oai.responses.create(model="m", input=history, tools=[RESPONSES_TOOL])
    assert second.output[0].type == "message" and said_to(second.output_text) == "sunny, 24C"
    again = oai.responses.create(model="m", input=history, tools=[RESPONSES_TOOL], metadata={"tool_rounds": "2"})
    assert again.output[0].type == "function_call"
    off = oai.responses.create(model="m", input=QUESTION, tools=[RESPONSES_TOOL], tool_choice="none")
    assert said_to(off.output_text) == QUESTION
    assert srv.stats()["by_path"] == {"/v1/responses": 4}


def test_responses_streamed_function_call(oai: openai.OpenAI, srv: ScriptedModelServer) -> None:
    plain = oai.responses.create(model="m", input=QUESTION, tools=[RESPONSES_TOOL]).output[0]
    assert plain.type == "function_call"
    events = list(oai.responses.create(model="m", input=QUESTION, tools=[RESPONSES_TOOL], stream=True))
    kinds = [e.type for e in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert deltas > 1 and kinds == [
        "response.created", "response.in_progress", "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas, "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert streamed == plain.arguments
    assert events[-1].type == "response.completed" and events[-1].response.output[0] == plain

    with oai.responses.stream(model="m", input=QUESTION, tools=[RESPONSES_TOOL]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response().output[0]
    assert final.type == "function_call" and (final.call_id, final.arguments) == (plain.call_id, plain.arguments)

    async def run_async() -> str:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0) as c:
            stream = await c.responses.create(model="m", input=QUESTION, tools=[RESPONSES_TOOL], stream=True)
            return "".join([e.delta async for e in stream if e.type == "response.function_call_arguments.delta"])

    assert asyncio.run(run_async()) == plain.arguments


def test_openai_agents_sdk_calls_the_tool_once(srv: ScriptedModelServer) -> None:
    set_tracing_disabled(True)  # tracing would export to api.openai.com
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather forecast for a city."""
        cities.append(city)
        return "sunny, 24C"

    async def main() -> tuple[Any, Any]:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0) as client:
            agent = Agent(name="forecaster", instructions="Be brief.", tools=[get_weather],
                          model=OpenAIResponsesModel(model="scripted-chat", openai_client=client))
            done = await Runner.run(agent, QUESTION)
            streamed = Runner.run_streamed(agent, "And in Porto?")
            async for _ in streamed.stream_events():
                pass
            return done.final_output, streamed.final_output

    plain, streamed = asyncio.run(main())
    assert said_to(plain) == "sunny, 24C" and said_to(streamed) == "sunny, 24C"
    assert len(cities) == 2 and all(re.fullmatch(r"[a-z]+-[0-9a-f]{4}", c) for c in cities)
    log = srv.requests()
    assert [(r["path"], r["status"], bool(r["body"].get("stream"))) for r in log] == [
        ("/v1/responses", 200, False), ("/v1/responses", 200, False),
        ("/v1/responses", 200, True), ("/v1/responses", 200, True)]
    assert [i.get("type") for i in log[1]["body"]["input"]] == [None, "function_call", "function_call_output"]


def test_pydantic_ai_agent_over_chat_completions(srv: ScriptedModelServer) -> None:
    cities: list[str] = []

    async def main() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0) as client:
            agent = PydanticAgent(OpenAIChatModel("scripted-chat", provider=OpenAIProvider(openai_client=client)))

            @agent.tool_plain
            def get_weather(city: str) -> str:
                """The weather forecast for a city."""
                cities.append(city)
                return "rainy, 14C"

            done = await agent.run(QUESTION)
            async with agent.run_stream("And in Porto?") as streamed:
                text = await streamed.get_output()
            return done.output, text

    plain, streamed = asyncio.run(main())
    assert said_to(plain) == "rainy, 14C" and said_to(streamed) == "rainy, 14C" and len(cities) == 2
    assert srv.stats()["by_path"] == {"/v1/chat/completions": 4}
    assert [m["role"] for m in srv.requests()[1]["body"]["messages"]] == ["user", "assistant", "tool"]


# --- Anthropic Messages API --------------------------------------------------------------------

def test_anthropic_text_sync_and_async(claude: anthropic.Anthropic, srv: ScriptedModelServer) -> None:
    done = claude.messages.create(model="claude-test", max_tokens=256, messages=ASK, system="Be brief.")
    assert re.fullmatch(r"msg_[0-9a-f]{24}", done.id) and done.type == "message" and done.role == "assistant"
    assert done.model == "claude-test" and done.stop_reason == "end_turn" and done.stop_sequence is None
    assert len(done.content) == 1 and done.content[0].type == "text"
    assert said_to(done.content[0].text) == QUESTION
    assert (done.usage.input_tokens, done.usage.output_tokens) == (9, 11)

    async def run_async() -> anthropic.types.Message:
        async with anthropic.AsyncAnthropic(base_url=srv.url, api_key="sk-ant-test", max_retries=0,
                                            _strict_response_validation=True) as c:
            return await c.messages.create(model="claude-test", max_tokens=256, messages=ASK, system="Be brief.")

    assert asyncio.run(run_async()) == done
    assert [(r["path"], r["status"], r["authorized"]) for r in srv.requests()] == [("/v1/messages", 200, True)] * 2


def test_anthropic_tool_round(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(model="c", max_tokens=256, messages=ASK, tools=[ANTHROPIC_TOOL])
    assert first.stop_reason == "tool_use" and len(first.content) == 1
    use = first.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and re.fullmatch(r"toolu_[0-9a-f]{24}", use.id)
    check_args(use.input)

    result = {"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": "sunny, 24C"}]}
    history: list[Any] = [*ASK, first.to_param(), {"role": "user", "content": [result]}]
    second = claude.messages.create(model="c", max_tokens=256, messages=history, tools=[ANTHROPIC_TOOL])
    assert second.stop_reason == "end_turn" and said_to(second.content[0].text) == "sunny, 24C"  # type: ignore[union-attr]
    again = claude.messages.create(model="c", max_tokens=256, messages=history, tools=[ANTHROPIC_TOOL],
                                   metadata={"tool_rounds": "2"})  # type: ignore[typeddict-unknown-key]
    assert again.stop_reason == "tool_use" and again.content[0].id != use.id  # type: ignore[union-attr]
    # A new prompt after the tool result starts a new turn, with its own rounds.
    fresh = claude.messages.create(model="c", max_tokens=256, tools=[ANTHROPIC_TOOL],
                                   messages=[*history, second.to_param(), {"role": "user", "content": "And Porto?"}])
    assert fresh.stop_reason == "tool_use"
    off = claude.messages.create(model="c", max_tokens=256, messages=ASK, tools=[ANTHROPIC_TOOL],
                                 tool_choice={"type": "none"})
    assert off.stop_reason == "end_turn"


def test_anthropic_streamed_equals_non_streamed(claude: anthropic.Anthropic, srv: ScriptedModelServer) -> None:
    plain = claude.messages.create(model="c", max_tokens=256, messages=ASK)
    events = list(claude.messages.create(model="c", max_tokens=256, messages=ASK, stream=True))
    kinds = [e.type for e in events]
    deltas = kinds.count("content_block_delta")
    assert deltas > 1 and kinds == ["message_start", "content_block_start", *["content_block_delta"] * deltas,
                                    "content_block_stop", "message_delta", "message_stop"]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta"  # type: ignore[union-attr]
                   ) == plain.content[0].text  # type: ignore[union-attr]
    assert events[-2].delta.stop_reason == "end_turn"  # type: ignore[union-attr]

    with claude.messages.stream(model="c", max_tokens=256, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text and final.model_dump() == plain.model_dump()  # type: ignore[union-attr]

    tool_plain = claude.messages.create(model="c", max_tokens=256, messages=ASK, tools=[ANTHROPIC_TOOL])
    with claude.messages.stream(model="c", max_tokens=256, messages=ASK, tools=[ANTHROPIC_TOOL]) as stream:
        partial = "".join(e.delta.partial_json for e in stream  # type: ignore[union-attr]
                          if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
        tool_final = stream.get_final_message()
    assert tool_final.model_dump() == tool_plain.model_dump()
    assert json.loads(partial) == tool_plain.content[0].input  # type: ignore[union-attr]

    async def run_async() -> tuple[str, anthropic.types.Message]:
        async with (anthropic.AsyncAnthropic(base_url=srv.url, api_key="sk-ant-test", max_retries=0) as c,
                    c.messages.stream(model="c", max_tokens=256, messages=ASK) as stream):
            pieces = [t async for t in stream.text_stream]
            return "".join(pieces), await stream.get_final_message()

    text, final = asyncio.run(run_async())
    assert text == plain.content[0].text and final.model_dump() == plain.model_dump()  # type: ignore[union-attr]
    # The raw wire format: named events, a ping the SDK skips, byte-identical on a repeat.
    body = {"model": "c", "max_tokens": 256, "messages": ASK, "stream": True}
    first, second = http(srv.url + "/v1/messages", body), http(srv.url + "/v1/messages", body)
    assert first == second and first[0] == 200
    assert first[1].startswith(b"event: message_start\ndata: {") and b"event: ping\ndata: " in first[1]


def test_anthropic_errors_and_retried_overload(srv: ScriptedModelServer, claude: anthropic.Anthropic) -> None:
    srv.configure(fail_next=[529])
    with anthropic.Anthropic(base_url=srv.url, api_key="sk-ant-test", max_retries=1) as retrying:
        done = retrying.messages.create(model="c", max_tokens=256, messages=ASK)
    assert said_to(done.content[0].text) == QUESTION  # type: ignore[union-attr]
    assert [r["status"] for r in srv.requests()] == [529, 200] and srv.stats()["faults_injected"] == 1

    srv.configure(fail_next=[429, 500, 529])
    for kind, error in ((anthropic.RateLimitError, "rate_limit_error"), (anthropic.InternalServerError, "api_error"),
                        (anthropic.OverloadedError, "overloaded_error")):
        with pytest.raises(kind) as err:
            claude.messages.create(model="c", max_tokens=256, messages=ASK)
        assert err.value.body == {"type": "error", "error": {"type": error, "message": "Scripted fault injected."}}
    status, raw = http(srv.url + "/v1/messages", b"{nope")
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    status, raw = http(srv.url + "/v1/messages", {"model": "c", "messages": "hi"})
    assert status == 400 and json.loads(raw)["type"] == "error"
    status, raw = http(srv.url + "/v1/messages/count_tokens", {"model": "c", "messages": ASK})
    assert status == 404 and json.loads(raw)["error"]["type"] == "not_found_error"
    assert srv.stats()["requests"] == 8 and srv.stats()["faults_injected"] == 4


# --- Gemini (google-genai) ---------------------------------------------------------------------

def test_gemini_text_sync_async_and_streamed(gemini: genai.Client, srv: ScriptedModelServer) -> None:
    config = genai_types.GenerateContentConfig(system_instruction="Be brief.")
    done = gemini.models.generate_content(model="gemini-test", contents=QUESTION, config=config)
    assert said_to(done.text) == QUESTION and done.model_version == "gemini-test"
    candidate = (done.candidates or [])[0]
    assert candidate.finish_reason == genai_types.FinishReason.STOP and candidate.content.role == "model"  # type: ignore[union-attr]
    usage = done.usage_metadata
    assert usage is not None and (usage.prompt_token_count, usage.candidates_token_count) == (9, 11)
    assert usage.total_token_count == 20 and re.fullmatch(r"[0-9a-f]{24}", done.response_id or "")

    chunks = list(gemini.models.generate_content_stream(model="gemini-test", contents=QUESTION, config=config))
    assert len(chunks) > 1 and "".join(c.text or "" for c in chunks) == done.text
    assert [c.usage_metadata for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].usage_metadata == usage and chunks[-1].candidates[0].finish_reason == "STOP"  # type: ignore[index]
    assert {c.response_id for c in chunks} == {done.response_id}

    async def run_async() -> tuple[str | None, str]:
        answer = await gemini.aio.models.generate_content(model="gemini-test", contents=QUESTION, config=config)
        stream = await gemini.aio.models.generate_content_stream(model="gemini-test", contents=QUESTION,
                                                                 config=config)
        return answer.text, "".join([c.text or "" async for c in stream])

    assert asyncio.run(run_async()) == (done.text, done.text)
    log = srv.requests()
    assert [(r["path"], r["authorized"]) for r in log] == [
        ("/v1/models/gemini-test:generateContent", True), ("/v1/models/gemini-test:streamGenerateContent", True)] * 2
    # Identical bodies get identical bytes; the stream is SSE with Google's CRLF framing.
    url = srv.url + "/v1beta/models/gemini-test:"
    body = log[0]["body"]
    assert http(url + "generateContent", body) == http(url + "generateContent", body)
    status, raw = http(url + "streamGenerateContent?alt=sse", body)
    assert status == 200 and raw.startswith(b"data: {") and raw.endswith(b"}\r\n\r\n")
    status, raw = http(url + "streamGenerateContent", body)  # without alt=sse: one JSON array
    assert status == 200 and "".join(c["candidates"][0]["content"]["parts"][0]["text"]
                                     for c in json.loads(raw)) == done.text


def test_gemini_tool_round(gemini: genai.Client, srv: ScriptedModelServer) -> None:
    declaration = genai_types.FunctionDeclaration(name="get_weather", description="Weather for a city.",
                                                  parameters_json_schema=SCHEMA)
    config = genai_types.GenerateContentConfig(tools=[genai_types.Tool(function_declarations=[declaration])])
    first = gemini.models.generate_content(model="g", contents=QUESTION, config=config)
    calls = first.function_calls or []
    assert len(calls) == 1 and calls[0].name == "get_weather" and first.text is None
    check_args(calls[0].args or {})
    streamed = list(gemini.models.generate_content_stream(model="g", contents=QUESTION, config=config))
    assert [c.function_calls for c in streamed] == [calls]

    history = [genai_types.Content(role="user", parts=[genai_types.Part(text=QUESTION)]),
               (first.candidates or [])[0].content,
               genai_types.Content(role="user", parts=[genai_types.Part.from_function_response(
                   name="get_weather", response={"result": "sunny, 24C"})])]
    second = gemini.models.generate_content(model="g", contents=history, config=config)  # type: ignore[arg-type]
    assert said_to(second.text) == "sunny, 24C" and not second.function_calls

    # Gemini has no metadata field; the override rides in through the SDK's extra_body.
    more = config.model_copy(update={"http_options": genai_types.HttpOptions(
        extra_body={"metadata": {"tool_rounds": "2"}})})
    assert gemini.models.generate_content(model="g", contents=history, config=more).function_calls  # type: ignore[arg-type]
    none = config.model_copy(update={"tool_config": genai_types.ToolConfig(
        function_calling_config=genai_types.FunctionCallingConfig(mode=genai_types.FunctionCallingConfigMode.NONE))})
    assert said_to(gemini.models.generate_content(model="g", contents=QUESTION, config=none).text) == QUESTION

    # Automatic function calling: the SDK runs a Python tool itself and sends back its result.
    cities: list[str] = []

    def get_weather(city: str) -> str:
        """The weather forecast for a city."""
        cities.append(city)
        return "cloudy, 18C"

    afc = gemini.models.generate_content(model="g", contents=QUESTION,
                                         config=genai_types.GenerateContentConfig(tools=[get_weather]))
    assert said_to(afc.text) == "cloudy, 18C" and len(cities) == 1


def test_gemini_errors_and_retried_fault(srv: ScriptedModelServer, gemini: genai.Client) -> None:
    srv.configure(fail_next=[429])
    with pytest.raises(genai_errors.ClientError) as err:
        gemini.models.generate_content(model="g", contents=QUESTION)
    assert (err.value.code, err.value.status, err.value.message) == (429, "RESOURCE_EXHAUSTED",
                                                                     "Scripted fault injected.")
    srv.configure(fail_next=[503])
    with pytest.raises(genai_errors.ServerError) as server_err:
        list(gemini.models.generate_content_stream(model="g", contents=QUESTION))
    assert server_err.value.status == "UNAVAILABLE"

    # google-genai retries only when asked to; no wait between attempts keeps the test quick.
    retry = genai_types.HttpRetryOptions(attempts=2, initial_delay=0, jitter=0)
    with genai.Client(api_key="g-test", http_options=genai_types.HttpOptions(
            base_url=srv.url, api_version="v1beta", retry_options=retry)) as retrying:
        srv.configure(fail_next=[503])
        assert said_to(retrying.models.generate_content(model="g", contents=QUESTION).text) == QUESTION
    assert [(r["path"], r["status"]) for r in srv.requests()] == [
        ("/v1/models/g:generateContent", 429), ("/v1/models/g:streamGenerateContent", 503),
        ("/v1beta/models/g:generateContent", 503), ("/v1beta/models/g:generateContent", 200)]
    assert srv.stats()["faults_injected"] == 3

    status, raw = http(srv.url + "/v1beta/models/g:countTokens", {"contents": []})
    assert status == 404 and json.loads(raw)["error"]["status"] == "NOT_FOUND"
    status, raw = http(srv.url + "/v1beta/models/g:generateContent", {"contents": "hi"})
    assert (status, json.loads(raw)["error"]["status"]) == (400, "INVALID_ARGUMENT")


# --- One server, every dialect -------------------------------------------------------------------

def test_one_server_counts_and_holds_every_api(srv: ScriptedModelServer, oai: openai.OpenAI,
                                               claude: anthropic.Anthropic, gemini: genai.Client) -> None:
    oai.chat.completions.create(model="m", messages=ASK)  # type: ignore[arg-type]
    claude.messages.create(model="c", max_tokens=64, messages=ASK)
    gemini.models.generate_content(model="g", contents=QUESTION)
    srv.configure(hold_request=4)
    answers: list[str] = []
    worker = threading.Thread(target=lambda: answers.append(
        claude.messages.create(model="c", max_tokens=64, messages=ASK).content[0].text))  # type: ignore[union-attr]
    worker.start()
    assert srv.wait_for_held(timeout=60) == 4
    assert [r["status"] for r in srv.requests()] == [200, 200, 200, None]  # logged while in flight
    srv.release()
    worker.join(60)
    assert not worker.is_alive() and said_to(answers[0]) == QUESTION
    assert srv.stats() == {"requests": 4, "faults_injected": 1, "max_in_flight": 1, "by_path": {
        "/v1/chat/completions": 1, "/v1/messages": 2, "/v1/models/g:generateContent": 1}}
    log = json.dumps(srv.requests())
    assert all(key not in log for key in ("sk-test", "sk-ant-test", "g-test"))
