"""Adopting a plain function as a journaled tool: what changes (its calls inside steps) and what does not.

The kernel tests (tests/test_vendor_loops.py) adopt through a real model request; these check the function
itself, in one process with a real journal: its signature, defaults, docstring and pickles stay its own, its
calls replay inside steps and run plainly outside them, and what cannot be adopted is left alone.
"""

from __future__ import annotations

import asyncio
import functools
import inspect

import cloudpickle
import pytest

import kernel_ext
from kernel_ext import step
from kernel_ext.plain_tools import adopt, tool_names

SOURCE = '''
RUNS = []

def send_sms(to: str, body: str = "hi", *rest, urgent: bool = False, **extra) -> str:
    """Send a text."""
    RUNS.append(to)
    return f"sent {to} {body} {list(rest)} {urgent} {extra}"

def only_positional(a, b=2, /, c=3):
    RUNS.append(a)
    return [a, b, c]

async def later(x, y=1):
    RUNS.append(x)
    return x + y

def numbers():
    yield 1

def make(prefix):
    def inner(x):
        return prefix + x
    return inner

available = {"send_sms": send_sms}
'''


@pytest.fixture
def notebook(tmp_path):
    kernel_ext.session("plain", journal=tmp_path / "j.duckdb")
    namespace = {"__name__": "__main__"}
    exec(compile(SOURCE, "<cell>", "exec"), namespace)  # as a notebook cell defines them
    return namespace


def test_an_adopted_function_keeps_its_face(notebook):
    send_sms = notebook["send_sms"]
    before = inspect.signature(send_sms)
    assert adopt(send_sms, "send_sms") and adopt(send_sms, "send_sms"), "adopting twice changes nothing"
    assert inspect.signature(send_sms) == before and send_sms.__doc__ == "Send a text."
    assert send_sms.__name__ == "send_sms" and notebook["available"]["send_sms"] is send_sms
    assert send_sms("ana") == "sent ana hi [] False {}"  # outside a step: a plain call
    assert send_sms("bo", "yo", 1, 2, urgent=True, k=1) == "sent bo yo [1, 2] True {'k': 1}"
    copied = cloudpickle.loads(cloudpickle.dumps(send_sms))  # what a restore of variables does
    assert copied("cy") == "sent cy hi [] False {}"
    assert adopt(notebook["only_positional"], "only_positional")
    assert notebook["only_positional"](1, c=9) == [1, 2, 9]
    assert adopt(notebook["later"], "later") and inspect.iscoroutinefunction(notebook["later"])
    assert asyncio.run(notebook["later"](2)) == 3


def test_inside_a_step_its_calls_are_journaled_and_replay(notebook):
    runs = notebook["RUNS"]
    adopt(notebook["send_sms"], "send_sms")
    adopt(notebook["later"], "later")
    for _ in range(3):
        with step("texts") as active:
            assert notebook["available"]["send_sms"]("ana", urgent=True) == "sent ana hi [] True {}"
            assert notebook["send_sms"]("bo") == "sent bo hi [] False {}"
            assert asyncio.run(notebook["later"](4)) == 5
    assert runs == ["ana", "bo", 4], "each call ran once; the later runs replayed them"
    assert (active.live, active.replayed) == (0, 3)
    with kernel_ext.current_session().journal.open() as store:
        names = [name for (name,) in store.con.execute(
            "SELECT name FROM call_rows WHERE kind = 'tool' ORDER BY id").fetchall()]
    assert names == ["send_sms", "send_sms", "later"]


def test_what_cannot_be_adopted_is_left_alone(notebook):
    inner = notebook["make"]("to ")
    assert not adopt(inner, "inner"), "a closure keeps its cells: its code cannot be swapped"
    assert not adopt(notebook["numbers"], "numbers")
    assert inner("ana") == "to ana" and list(notebook["numbers"]()) == [1]
    partial = functools.partial(notebook["send_sms"], "ana")
    with pytest.raises(AttributeError):
        adopt(partial, "send_sms")  # not a function: adopt_named never offers one


def test_the_tools_a_request_offers_in_each_vendor_s_shape():
    request = {"tools": [
        {"type": "function", "function": {"name": "chat_tool"}},  # OpenAI chat
        {"type": "function", "name": "responses_tool"},  # OpenAI Responses
        {"name": "anthropic_tool", "input_schema": {}},  # Anthropic
        {"function_declarations": [{"name": "gemini_tool"}]},  # Gemini
        {"type": "web_search"},  # a hosted tool names no function
    ]}
    assert list(tool_names(request)) == ["chat_tool", "responses_tool", "anthropic_tool", "gemini_tool"]
    assert list(tool_names({"config": {"tools": [{"functionDeclarations": [{"name": "g"}]}]}})) == ["g"]
    assert list(tool_names({"messages": []})) == []
