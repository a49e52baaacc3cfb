"""A recorded plain `create` (chat completions, responses, embeddings; sync and async) replays above the SDK:
the object a live call returned is rebuilt from its stored JSON, with no HTTP request built and no HTTP
response parsed. Streams, raw and streaming responses, `.parse()` and extra headers keep the HTTP path, and
both paths share one replay rule (ordinals, strict mode and its messages, journals recorded without keys).

Whether the HTTP path was used is counted in the user's namespace of the test kernel, on the HTTP library the
SDK uses (requests built, responses made, sends): the HTTP path builds a request and a response also when it
replays a recorded one, the path above the SDK builds neither.
"""

from __future__ import annotations

import json

import pytest

from tests.harness import Kernel, summaries

SETUP = """
%load_ext kernel_ext
import json, sys
from openai import OpenAI, AsyncOpenAI
client = OpenAI(max_retries=0)
aclient = AsyncOpenAI(max_retries=0)

# The HTTP library the SDK sends with (httpx, or httpx2 for newer SDKs).
http = sys.modules[next(c for c in type(client._client).__mro__
                        if not c.__module__.startswith("openai")).__module__.partition(".")[0]]
HTTP = {"built": 0, "responses": 0, "sent": 0}

def _count(cls, name, what):
    original = getattr(cls, name)
    def counted(*args, **kwargs):
        HTTP[what] += 1
        return original(*args, **kwargs)
    setattr(cls, name, counted)

for cls in (http.Client, http.AsyncClient):
    _count(cls, "build_request", "built")
    _count(cls, "send", "sent")
_count(http.Response, "__init__", "responses")

def shape(obj):
    if hasattr(type(obj), "model_fields"):
        return [f"{type(obj).__module__}.{type(obj).__qualname__}", {k: shape(v) for k, v in vars(obj).items()}]
    if isinstance(obj, list):
        return [shape(v) for v in obj]
    if isinstance(obj, dict):
        return {k: shape(v) for k, v in obj.items()}
    return type(obj).__name__

def described(obj):
    return json.dumps({"type": shape(obj), "dump": repr(obj.model_dump()), "json": obj.to_json(),
                       "request_id": obj._request_id, "set": sorted(obj.model_fields_set)})

def counted():
    print("HTTP", json.dumps(HTTP))
    HTTP.update(built=0, responses=0, sent=0)
"""

WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

PLAIN = f"""%%durable plain
import asyncio
ask = [{{"role": "user", "content": "Plan a picnic"}}]
got = {{
    "chat": client.chat.completions.create(model="m", messages=ask),
    "chat_tools": client.chat.completions.create(model="m", messages=ask, tools=[{WEATHER!r}], temperature=0.5),
    "responses": client.responses.create(model="m", input="Say hello"),
    "embeddings": client.embeddings.create(model="e", input=["a", "b"]),
    "embeddings_float": client.embeddings.create(model="e", input="c", encoding_format="float"),
}}
got["achat"], got["aresponses"], got["aembeddings"] = await asyncio.gather(
    aclient.chat.completions.create(model="m", messages=[{{"role": "user", "content": "async"}}]),
    aclient.responses.create(model="m", input=[{{"role": "user", "content": "async hello"}}]),
    aclient.embeddings.create(model="e", input=["async"]),
)
# The reply passed back into the conversation: one of the SDK's own objects among the arguments.
got["followup"] = client.chat.completions.create(
    model="m", messages=ask + [got["chat"].choices[0].message, {{"role": "user", "content": "and then?"}}])
for name, obj in got.items():
    print(name, described(obj))
counted()
"""

KEPT = """%%durable kept
streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model="m", messages=[{"role": "user", "content": "stream"}], stream=True) if c.choices)
raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "raw"}])
with client.chat.completions.with_streaming_response.create(
        model="m", messages=[{"role": "user", "content": "streaming response"}]) as response:
    body = response.json()
parsed = client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "parse"}])
extra = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "extra"}],
                                       extra_headers={"X-Trace": "1"})
events = [e.type async for e in await aclient.responses.create(model="m", input="astream", stream=True)]
araw = await aclient.embeddings.with_raw_response.create(model="e", input=["raw"])
print(streamed, "|", raw.parse().choices[0].message.content, raw.headers["content-type"], "|",
      body["choices"][0]["message"]["content"], "|", type(parsed).__name__, parsed.choices[0].message.content, "|",
      extra.choices[0].message.content, "|", events[-1], "|", type(araw.parse()).__name__, len(araw.parse().data))
counted()
"""


def printed(outputs: list[dict]) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def http_counts(outputs: list[dict]) -> dict[str, int]:
    line = next(line for line in printed(outputs).splitlines() if line.startswith("HTTP "))
    return json.loads(line[5:])


def without_counts(outputs: list[dict]) -> str:
    return "\n".join(line for line in printed(outputs).splitlines() if not line.startswith("HTTP "))


def requests(server) -> int:
    return server.stats()["requests"]


@pytest.fixture
def nb(kernel: Kernel) -> Kernel:
    kernel.ok(SETUP)
    return kernel


def restart(kernel: Kernel) -> None:
    kernel.restart()
    kernel.ok(SETUP)


def test_plain_calls_replay_as_rebuilt_objects_without_the_http_path(nb, model_server):
    first = nb.ok(PLAIN)
    assert requests(model_server) == 9
    assert http_counts(first) == {"built": 9, "responses": 9, "sent": 9}
    restart(nb)
    second = nb.ok(PLAIN)
    assert requests(model_server) == 9
    assert http_counts(second) == {"built": 0, "responses": 0, "sent": 0}  # no request built, no response parsed
    assert summaries(second) == [{"step": "plain", "replayed": 9, "live": 0}]
    # Same types all the way down, the same model_dump() and to_json(), the same fields set.
    assert without_counts(second) == without_counts(first)
    lines = without_counts(first).splitlines()
    kinds = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])["type"][0] for line in lines}
    assert kinds == {
        "chat": "openai.types.chat.chat_completion.ChatCompletion",
        "chat_tools": "openai.types.chat.chat_completion.ChatCompletion",
        "responses": "openai.types.responses.response.Response",
        "embeddings": "openai.types.create_embedding_response.CreateEmbeddingResponse",
        "embeddings_float": "openai.types.create_embedding_response.CreateEmbeddingResponse",
        "achat": "openai.types.chat.chat_completion.ChatCompletion",
        "aresponses": "openai.types.responses.response.Response",
        "aembeddings": "openai.types.create_embedding_response.CreateEmbeddingResponse",
        "followup": "openai.types.chat.chat_completion.ChatCompletion",
    }
    # The default (base64) embeddings came back decoded to floats, as the SDK decodes them.
    embeddings = json.loads(next(line for line in lines if line.startswith("embeddings ")).split(" ", 1)[1])
    assert "'embedding': [" in embeddings["dump"] and "float" in json.dumps(embeddings["type"])


def test_streams_raw_and_parse_keep_the_http_path(nb, model_server):
    first = nb.ok(KEPT)
    assert requests(model_server) == 7
    restart(nb)
    second = nb.ok(KEPT)
    assert requests(model_server) == 7
    assert without_counts(second) == without_counts(first) and "[scripted]" in without_counts(first)
    counts = http_counts(second)
    assert counts["built"] == 7 and counts["sent"] == 0  # each replayed through the HTTP path
    assert summaries(second) == [{"step": "kept", "replayed": 7, "live": 0}]


def test_both_paths_share_one_replay_rule(nb, model_server):
    cell = """%%durable mixed
ask = dict(model="m", messages=[{"role": "user", "content": "the same question"}])
replies = [client.chat.completions.create(**ask),
           client.chat.completions.with_raw_response.create(**ask).parse(),   # the HTTP path
           client.chat.completions.create(**ask)]
print([r.choices[0].message.content for r in replies])
counted()
"""
    first = nb.ok(cell)
    assert requests(model_server) == 3
    again = nb.ok(cell)  # the three identical requests replay in order, whichever path claims them
    assert requests(model_server) == 3 and http_counts(again)["built"] == 1
    assert summaries(again) == [{"step": "mixed", "replayed": 3, "live": 0}]
    assert without_counts(again) == without_counts(first)

    # One more identical call than recorded: known by its arguments, it goes live, claimed once (its first
    # attempt answered 429 and the SDK's retry took its place), and is recorded for the next replay.
    retried = cell.replace("client.chat.completions.create(**ask)]",
                           "client.chat.completions.create(**ask),\n"
                           "           OpenAI(max_retries=2).chat.completions.create(**ask)]")
    model_server.configure(fail_next=[429], retry_after=0.01)
    grown = nb.ok(retried)
    assert requests(model_server) == 5  # the 429 and its retry
    assert summaries(grown) == [{"step": "mixed", "replayed": 3, "live": 1}]
    restart(nb)
    replayed = nb.ok(retried)
    assert requests(model_server) == 5
    assert http_counts(replayed)["built"] == 1  # only the raw response took the HTTP path
    assert summaries(replayed) == [{"step": "mixed", "replayed": 4, "live": 0}]
    assert without_counts(replayed) == without_counts(grown)


def test_a_journal_recorded_without_argument_keys_replays_through_the_http_path(nb, model_server):
    # Calls with extra headers are journaled by the HTTP path alone, as every call was before keys were
    # recorded; headers are not part of a request's identity, so the plain calls below are the same calls.
    cell = """%%durable older
reply = client.chat.completions.create(model="m", messages=[{{"role": "user", "content": "recorded long ago"}}]{extra})
embedded = client.embeddings.create(model="e", input=["old"]{extra})
print(reply.choices[0].message.content, embedded.data[0].embedding[:2])
"""
    first = nb.ok(cell.format(extra=', extra_headers={"X-Recorded-By": "the HTTP path"}'))
    assert requests(model_server) == 2
    restart(nb)
    plain = cell.format(extra="")
    for _ in range(2):
        replayed = nb.ok(plain + "counted()\n")
        assert requests(model_server) == 2
        assert http_counts(replayed)["built"] == 2 and http_counts(replayed)["sent"] == 0
        assert without_counts(replayed) == printed(first).rstrip("\n")
        assert summaries(replayed) == [{"step": "older", "replayed": 2, "live": 0}]


def _strict_error(kernel: Kernel, prompts: list[str], *, extra_headers: bool) -> str:
    extra = ', extra_headers={"X-Path": "http"}' if extra_headers else ""
    calls = "\n".join(f'client.chat.completions.create(model="m", messages=[{{"role": "user", "content": {p!r}}}]'
                      f"{extra})" for p in prompts)
    status, outputs = kernel.execute(f"%%durable plan --strict\n{calls}\n")
    assert status == "error"
    error = next(o for o in outputs if o["output_type"] == "error")
    assert error["ename"] == "StrictReplayError"
    return error["evalue"]


def test_strict_mode_refuses_as_the_http_path_does(nb, model_server):
    nb.ok("""%%durable plan
for q in ["first question", "second question"]:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
""")
    assert requests(model_server) == 2
    restart(nb)
    replayed = nb.ok("""%%durable plan --strict
for q in ["first question", "second question"]:
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
counted()
""")
    assert http_counts(replayed)["built"] == 0
    # A changed request has no recording with its arguments: the HTTP path names the difference.
    edited = _strict_error(nb, ["first question, edited"], extra_headers=False)
    assert "step 'plan', call 1 (chat.completions, model m) would go live" in edited
    assert "body.messages[0].content: 'first question' -> 'first question, edited'" in edited
    # A recorded request sent once more than recorded: claimed by its arguments above the SDK, refused with
    # the message a claim by the HTTP request itself gives.
    for prompts, difference in [
        (["first question", "first question"],
         "call 2 (chat.completions, model m) would go live: request differs from the recording at "
         "body.messages[0].content: 'second question' -> 'first question'"),
        (["first question", "second question", "first question"],
         "call 3 (chat.completions, model m) would go live: the recording of this step has no call at position 3"),
    ]:
        above = _strict_error(nb, prompts, extra_headers=False)
        assert difference in above
        assert above == _strict_error(nb, prompts, extra_headers=True)
    assert requests(model_server) == 2


def test_a_replayed_object_keeps_the_request_id_of_the_live_one(tmp_path, model_server):
    # In-process: a user-level transport adds the x-request-id header the scripted server does not send.
    import openai

    import kernel_ext

    sdk_client = type(openai.OpenAI(api_key="unused")._client)
    http = __import__(next(c for c in sdk_client.__mro__ if not c.__module__.startswith("openai")).__module__
                      .partition(".")[0])

    class Tagged(http.BaseTransport):
        def __init__(self) -> None:
            self.inner, self.sent = http.HTTPTransport(), 0

        def handle_request(self, request):
            self.sent += 1
            response = self.inner.handle_request(request)
            response.headers["x-request-id"] = f"req_{self.sent}"
            return response

    transport = Tagged()
    client = openai.OpenAI(base_url=model_server.base_url, api_key="unused", max_retries=0,
                           http_client=http.Client(transport=transport))
    kernel_ext.session("request-ids", journal=tmp_path / "j.duckdb")
    runs = []
    for _ in range(2):
        with kernel_ext.step("s") as active:
            runs.append([client.chat.completions.create(model="m", messages=[{"role": "user", "content": "id?"}]),
                         client.responses.create(model="m", input="id?"),
                         client.embeddings.create(model="e", input="id?")])
    assert transport.sent == 3 and active.replayed == 3
    for live, replayed in zip(*runs, strict=True):
        assert type(replayed) is type(live)
        assert replayed.model_dump() == live.model_dump() and replayed.to_json() == live.to_json()
        assert live._request_id is not None and replayed._request_id == live._request_id


ANTHROPIC = """%%durable claude
import anthropic
sync = anthropic.Anthropic(base_url=SERVER, api_key=KEY, max_retries=0)
aio = anthropic.AsyncAnthropic(base_url=SERVER, api_key=KEY, max_retries=0)
assert sys.modules[next(c for c in type(sync._client).__mro__ if not c.__module__.startswith("anthropic"))
                   .__module__.partition(".")[0]] is http  # the library counted in SETUP
ask = dict(model="claude-scripted", max_tokens=64)
clock = {"name": "clock", "description": "The local time in a city.",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
question = [{"role": "user", "content": "time?"}]
got = {"plain": sync.messages.create(messages=[{"role": "user", "content": "plain"}], **ask),
       "async": await aio.messages.create(messages=[{"role": "user", "content": "async"}], **ask),
       "tool_use": sync.messages.create(messages=question, tools=[clock], **ask)}
# The reply's content blocks passed back: the SDK's own objects among the arguments.
got["answer"] = sync.messages.create(messages=question + [
    {"role": "assistant", "content": got["tool_use"].content},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": got["tool_use"].content[-1].id,
                                  "content": "noon"}]}], tools=[clock], **ask)
with sync.messages.stream(messages=[{"role": "user", "content": "helper"}], **ask) as stream:  # the HTTP path
    helper = stream.get_final_message()
for name, obj in got.items():
    print(name, described(obj))
print("helper", helper.content[0].text)
print("TOKENS", sum(o.usage.input_tokens + o.usage.output_tokens for o in [*got.values(), helper]))
counted()
"""


def test_anthropic_messages_replay_above_the_sdk(nb, model_server):
    setup = f"import os\nSERVER, KEY = {model_server.url!r}, os.environ['OPENAI_API_KEY']"
    nb.ok(setup)
    first = nb.ok(ANTHROPIC)
    assert requests(model_server) == 5
    assert http_counts(first)["built"] == 5
    # Every answer's tokens are counted as the SDK counts them: the SDK reads JSON answers as streams
    # (anthropic >= 2.17) and the journal still stores them as JSON; a stream's input tokens come in its
    # first event, its output tokens in its last.
    tokens = next(int(line.split()[1]) for line in printed(first).splitlines() if line.startswith("TOKENS "))
    summary = next(o["data"]["text/plain"] for o in first if "durable" in o.get("metadata", {}))
    assert f"{tokens:,} tokens" in summary
    restart(nb)
    nb.ok(setup)
    second = nb.ok(ANTHROPIC)
    assert requests(model_server) == 5
    # Only the stream helper took the HTTP path (anthropic's is journaled inside the HTTP library's send).
    assert http_counts(second) == {"built": 1, "responses": 1, "sent": 1}
    (mark,) = summaries(second)
    assert (mark["step"], mark["replayed"], mark["live"]) == ("claude", 5, 0)
    # The cell answers the tool call itself ("noon"), with no journaled tool: said on every run.
    assert mark["warnings"] == summaries(first)[0]["warnings"] and "(clock)" in mark["warnings"][0]
    assert without_counts(second) == without_counts(first)
    kinds = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])["type"][0]
             for line in without_counts(first).splitlines() if not line.startswith(("helper ", "TOKENS "))}
    assert set(kinds.values()) == {"anthropic.types.message.Message"} and len(kinds) == 4
    assert "ToolUseBlock" in json.dumps(json.loads(without_counts(first).splitlines()[2].split(" ", 1)[1])["type"])


GEMINI = """%%durable gemini
import json
from google import genai
from google.genai import types as gtypes
from google.genai import _api_client

BELOW = {"sdk_http_path": 0}  # calls that reach the SDK's request layer (where the HTTP path journals them)
for name in ("request", "async_request", "request_streamed"):
    def counting(original):
        def counted(*args, **kwargs):
            BELOW["sdk_http_path"] += 1
            return original(*args, **kwargs)
        return counted
    setattr(_api_client.BaseApiClient, name, counting(getattr(_api_client.BaseApiClient, name)))

gclient = genai.Client(api_key=KEY, http_options={"base_url": SERVER})
model = "gemini-2.5-flash"
got = {
    "plain": gclient.models.generate_content(model=model, contents="Plan a picnic"),
    "config": gclient.models.generate_content(
        model=model, contents=[gtypes.Content(role="user", parts=[gtypes.Part(text="Be brief")])],
        config=gtypes.GenerateContentConfig(temperature=0.3, system_instruction="You plan picnics")),
    "schema": gclient.models.generate_content(model=model, contents="As JSON", config={
        "response_mime_type": "application/json", "response_schema": {"type": "OBJECT", "properties": {
            "plan": {"type": "STRING"}}}}),
    "async": await gclient.aio.models.generate_content(model=model, contents="async picnic"),
}
streamed = "".join(c.text or "" for c in gclient.models.generate_content_stream(model=model, contents="stream"))
for name, obj in got.items():
    print(name, type(obj).__module__, type(obj).__qualname__,
          json.dumps(obj.model_dump(mode="json", exclude={"sdk_http_response"}), sort_keys=True))
print("streamed", streamed)
print("BELOW", BELOW["sdk_http_path"])
"""


def test_gemini_generate_content_replays_above_the_sdk(nb, model_server):
    nb.ok(f"import os\nSERVER, KEY = {model_server.url!r}, os.environ['OPENAI_API_KEY']")
    first = nb.ok(GEMINI)
    assert requests(model_server) == 5

    def below(outputs: list[dict]) -> int:
        return int(next(line for line in printed(outputs).splitlines() if line.startswith("BELOW "))[6:])

    def objects(outputs: list[dict]) -> list[str]:
        return [line for line in printed(outputs).splitlines() if not line.startswith("BELOW ")]

    assert below(first) == 5
    restart(nb)
    nb.ok(f"import os\nSERVER, KEY = {model_server.url!r}, os.environ['OPENAI_API_KEY']")
    second = nb.ok(GEMINI)
    assert requests(model_server) == 5
    # Only the stream went down to the SDK's request layer; the rest were rebuilt above the SDK,
    # equal to what the live calls returned (the response headers aside: they are not recorded).
    assert below(second) == 1
    assert objects(second) == objects(first)
    assert summaries(second) == [{"step": "gemini", "replayed": 5, "live": 0}]
    assert any(line.startswith("schema google.genai.types GenerateContentResponse") for line in objects(first))
