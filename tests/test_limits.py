"""Live-call limits: a fan-out of concurrent model calls meets at most `max_concurrent` of them in flight at the
server (counted by the scripted server itself), from coroutines and from threads; replayed calls are not limited.
"""

from __future__ import annotations

import pytest

from tests.harness import Kernel, summaries

SETUP = """
%load_ext kernel_ext
import asyncio
from concurrent.futures import ThreadPoolExecutor
from openai import AsyncOpenAI, OpenAI
aclient, client = AsyncOpenAI(max_retries=0), OpenAI(max_retries=0)
"""
GATHER = """%%durable {name}
answers = await asyncio.gather(*(aclient.chat.completions.create(
    model="m", messages=[{{"role": "user", "content": f"{name} {{i}}"}}]) for i in range(50)))
"""
THREADS = """%%durable threads
with ThreadPoolExecutor(max_workers=20) as pool:
    answers = list(pool.map(lambda i: client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"thread {i}"}]), range(30)))
"""


@pytest.mark.slow
def test_at_most_max_concurrent_live_calls_are_in_flight(kernel: Kernel, model_server):
    model_server.configure(delay=0.2)  # slow answers: without a limit, the fan-out piles up at the server
    kernel.ok(SETUP)
    kernel.ok(GATHER.format(name="unlimited"))
    assert model_server.stats()["max_in_flight"] > 5  # what the limit is there to prevent

    kernel.ok("%config Durable.max_concurrent = 5")
    model_server.reset()
    model_server.configure(delay=0.2)
    kernel.ok(GATHER.format(name="limited"))
    kernel.ok(THREADS)
    stats = model_server.stats()
    assert stats["requests"] == 80 and 1 < stats["max_in_flight"] <= 5

    # Replayed calls send nothing and wait for no turn.
    replayed = kernel.ok(GATHER.format(name="limited"))
    assert summaries(replayed)[0]["replayed"] == 50 and model_server.stats()["requests"] == 80


MODELS = """%%durable {name}
answers = await asyncio.gather(*(aclient.chat.completions.create(
    model={model!r}, messages=[{{"role": "user", "content": f"{name} {{i}}"}}]) for i in range(30)))
"""


@pytest.mark.slow
def test_a_limit_for_one_model_holds_its_calls_and_not_the_others(kernel: Kernel, model_server):
    kernel.ok(SETUP)
    kernel.ok("%config Durable.max_concurrent = 'small=3'")
    model_server.reset()
    model_server.configure(delay=0.2)
    kernel.ok(MODELS.format(name="small-fan", model="small"))
    assert model_server.stats()["requests"] == 30 and 1 < model_server.stats()["max_in_flight"] <= 3
    model_server.reset()
    model_server.configure(delay=0.2)
    kernel.ok(MODELS.format(name="big-fan", model="big"))
    assert model_server.stats()["max_in_flight"] > 3  # another model's calls wait for no one

    refused = str(kernel.ok("%config Durable.max_concurrent = 'small=0'"))  # IPython reports it, goes on
    assert "Durable.max_concurrent = 'small=0' is not valid" in refused and "MODEL=N pairs" in refused
