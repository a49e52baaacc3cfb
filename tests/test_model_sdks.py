"""Every model SDK journaled with the guarantees of openai's: plain and streamed, sync and async, no glue.

Each test runs a cell against the scripted stand-in of that vendor's API (not a model) in a real
kernel, then runs it again in a fresh kernel: the second run sends no request and prints the same.
"""

from __future__ import annotations

import pytest

from tests.conftest import API_KEY
from tests.harness import Kernel, journal_bytes, summaries

ANTHROPIC = """%%durable claude
import anthropic
sync, aio = anthropic.Anthropic(base_url=SERVER, api_key=KEY), anthropic.AsyncAnthropic(base_url=SERVER, api_key=KEY)
ask = dict(model="claude-scripted", max_tokens=64)
plain = sync.messages.create(messages=[{"role": "user", "content": "plain"}], **ask)
streamed = "".join(e.delta.text for e in sync.messages.create(
    messages=[{"role": "user", "content": "streamed"}], stream=True, **ask) if e.type == "content_block_delta")
with sync.messages.stream(messages=[{"role": "user", "content": "helper"}], **ask) as stream:
    helper = stream.get_final_message()
aplain = await aio.messages.create(messages=[{"role": "user", "content": "async"}], **ask)
astreamed = "".join([e.delta.text async for e in await aio.messages.create(
    messages=[{"role": "user", "content": "async streamed"}], stream=True, **ask) if e.type == "content_block_delta"])
import datetime

@anthropic.beta_tool
def clock(city: str) -> str:
    \"\"\"The local time in a city.\"\"\"
    with open("ledger.txt", "a") as ledger:   # the SDK's tool runner calls it itself
        ledger.write(city + "\\n")
    return datetime.datetime.now().isoformat()

timed = list(sync.beta.messages.tool_runner(messages=[{"role": "user", "content": "time?"}], tools=[clock], **ask))
print(type(plain).__name__, type(helper).__name__, plain.content[0].text, streamed, helper.content[0].text,
      aplain.content[0].text, astreamed, plain.usage.output_tokens, timed[-1].content[0].text)
"""

GEMINI = """%%durable gemini
from google import genai
client = genai.Client(api_key=KEY, http_options={"base_url": SERVER})
plain = client.models.generate_content(model="gemini-scripted", contents="plain")
streamed = "".join(c.text or "" for c in client.models.generate_content_stream(model="gemini-scripted",
                                                                                contents="streamed"))
aplain = await client.aio.models.generate_content(model="gemini-scripted", contents="async")
astreamed = "".join([c.text or "" async for c in await client.aio.models.generate_content_stream(
    model="gemini-scripted", contents="async streamed")])
import datetime

def clock(city: str) -> str:
    \"\"\"The local time in a city.\"\"\"
    with open("ledger.txt", "a") as ledger:   # the SDK calls it itself (automatic function calling)
        ledger.write(city + "\\n")
    return datetime.datetime.now().isoformat()

timed = client.models.generate_content(model="gemini-scripted", contents="time?", config={"tools": [clock]})
print(type(plain).__name__, plain.text, streamed, aplain.text, astreamed, plain.usage_metadata.total_token_count,
      timed.text)
"""

LITELLM = """%%durable litellm
import litellm
ask = dict(model="openai/scripted-chat", api_base=SERVER + "/v1", api_key=KEY)
plain = litellm.completion(messages=[{"role": "user", "content": "plain"}], **ask)
streamed = "".join(c.choices[0].delta.content or "" for c in litellm.completion(
    messages=[{"role": "user", "content": "streamed"}], stream=True, **ask))
aplain = await litellm.acompletion(messages=[{"role": "user", "content": "async"}], **ask)
astreamed = "".join([c.choices[0].delta.content or "" async for c in await litellm.acompletion(
    messages=[{"role": "user", "content": "async streamed"}], stream=True, **ask)])
print(type(plain).__name__, plain.choices[0].message.content, streamed, aplain.choices[0].message.content, astreamed)
"""


def _printed(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("cell, requests, calls", [(ANTHROPIC, 7, 8), (GEMINI, 6, 7), (LITELLM, 4, 4)],
                         ids=["anthropic", "google-genai", "litellm"])
def test_sdk_calls_replay_in_a_fresh_kernel(kernel_env, tmp_path, model_server, cell, requests, calls):
    env = {**kernel_env, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # litellm fetches prices at import otherwise
    setup = f"%load_ext kernel_ext\nimport os\nSERVER, KEY = {model_server.url!r}, os.environ[\"OPENAI_API_KEY\"]"
    runs = []
    for _ in range(2):
        kernel = Kernel(env, tmp_path)
        try:
            kernel.ok(setup)
            runs.append(kernel.ok(cell, timeout=120))
        finally:
            kernel.shutdown()
        if len(runs) == 1:
            assert model_server.stats()["requests"] == requests
    first, second = runs
    assert model_server.stats()["requests"] == requests  # the fresh kernel sent nothing
    assert _printed(first) == _printed(second) and "[scripted]" in _printed(first)
    assert summaries(first) == [{"step": summaries(first)[0]["step"], "replayed": 0, "live": calls}]
    assert summaries(second)[0]["replayed"] == calls and summaries(second)[0]["live"] == 0
    journal = journal_bytes(tmp_path / "journal.duckdb")
    assert API_KEY.encode() not in journal
    if (tmp_path / "ledger.txt").exists():  # a tool the SDK called itself ran once, its clock replayed
        assert (tmp_path / "ledger.txt").read_text().count("\n") == 1


def test_raw_http_in_a_step_is_named_in_its_summary(kernel, model_server):
    kernel.ok(f"%load_ext kernel_ext\nSERVER = {model_server.url!r}")
    outputs = kernel.ok("""%%durable raw
import httpx, requests, urllib.request
httpx.get(SERVER + "/v1/models"); httpx.get(SERVER + "/v1/models")
requests.get(SERVER + "/v1/models")
urllib.request.urlopen(SERVER + "/v1/models").read()
""")
    [mark] = summaries(outputs)
    assert mark["warnings"] == ["4 HTTP requests to 127.0.0.1 were not journaled (sent live on every run); "
                                "wrap them in a @tool"]
    shown = next(o["data"]["text/plain"] for o in outputs if "durable" in o.get("metadata", {}))
    assert "4 HTTP requests to 127.0.0.1 were not journaled" in shown
    wrapped = kernel.ok("""%%durable wrapped
from kernel_ext import tool
@tool(idempotent=True)
def models() -> int:
    return httpx.get(SERVER + "/v1/models").status_code
models()
""")
    assert "warnings" not in summaries(wrapped)[0]


def test_a_strict_replay_through_anthropic_stops_instead_of_being_retried(tmp_path, model_server):
    # The SDK wraps any error of its HTTP send as a connection error and retries it; the runtime's
    # own error must reach the step as it is, and no request may leave.
    import anthropic

    import kernel_ext
    from kernel_ext import StrictReplayError

    kernel_ext.session("strict-anthropic", journal=tmp_path / "j.duckdb")
    client = anthropic.Anthropic(base_url=model_server.url, api_key="unused", max_retries=2)
    with pytest.raises(StrictReplayError, match="would go live"), kernel_ext.step("s", strict=True):
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert model_server.stats()["requests"] == 0
