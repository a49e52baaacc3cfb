"""A journal is data, never code: a journal from another user runs none of its pickles, until trusted.

Another user (another signing key: DURABLE_HOME of their own) records a session whose tool result, recorded
value, tool error and variables are pickles with a payload that appends to a file when unpickled. This user
replays, restores, views (history widget and HTML, `durable ls/show/sql/export`) and runs it headless: the
payload never runs. A tool result stored as data replays with no trust step; a pickled one stops the step with
one line naming the call and `durable trust`. After `durable trust`, the step replays (and, since the
pickles are then loaded, the payload runs: proof the test would see it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from kernel_ext import codec
from tests.harness import Kernel, summaries

pytestmark = pytest.mark.slow

ATTACKER_SETUP = """
%load_ext kernel_ext
%durable session shared
import random as _r
from kernel_ext import tool, random

class Payload:
    def __reduce__(self):
        return (exec, ("open(%r, 'a').write('ran\\\\n')" % PAYLOAD,))

class Boom(Exception):
    pass

@tool
def lookup(city: str) -> dict:
    return {"city": city, "sunny": True}

@tool
def fetch(url: str):
    return Payload()

@tool
def fail(n: int):
    raise Boom(Payload())
"""

PLAIN = """%%durable plain
weather = lookup("Lisbon")
print(weather)
"""

ATTACKER_EVIL = """%%durable evil
page = fetch("https://example.com")
_r.random = lambda: Payload()   # a journal may hold anything: here a recorded value that is a pickle
drawn = random()
try:
    fail(1)
except Boom:
    pass
"""

# This user's notebook: the same tools, which say so in a ledger if they ever run.
VICTIM_SETUP = """
%load_ext kernel_ext
%durable session shared
from kernel_ext import tool, random

def ran(name):
    open(LEDGER, "a").write(name + "\\n")

class Boom(Exception):
    pass

@tool
def lookup(city: str) -> dict:
    ran("lookup")
    return {"city": city, "sunny": False}

@tool
def fetch(url: str):
    ran("fetch")
    return "page"

@tool
def fail(n: int):
    ran("fail")
    raise Boom(n)
"""

VICTIM_EVIL = """%%durable evil
page = fetch("https://example.com")
drawn = random()
try:
    fail(1)
except Exception:   # the recorded error is of the other user's class Boom, once trusted
    pass
"""


def _durable(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=180)


@pytest.fixture
def shared(tmp_path: Path, kernel_env: dict[str, str]) -> dict[str, Path]:
    """A journal recorded by another user, with pickles that append to `payload` when loaded."""
    paths = {"journal": tmp_path / "shared.duckdb", "payload": tmp_path / "payload-ran",
             "ledger": tmp_path / "ledger.txt"}
    other = tmp_path / "other-user"
    attacker = Kernel({**kernel_env, "DURABLE_HOME": str(other), "DURABLE_JOURNAL": str(paths["journal"])},
                      tmp_path)
    try:
        attacker.ok(f"PAYLOAD = {str(paths['payload'])!r}\n" + ATTACKER_SETUP)
        attacker.ok(PLAIN)
        attacker.ok(ATTACKER_EVIL)
    finally:
        attacker.shutdown()
    assert not paths["payload"].exists(), "recording ran the payload"
    return paths


def _victim(kernel_env: dict[str, str], shared: dict[str, Path], tmp_path: Path) -> Kernel:
    kernel = Kernel({**kernel_env, "DURABLE_JOURNAL": str(shared["journal"])}, tmp_path)
    kernel.ok(f"LEDGER = {str(shared['ledger'])!r}\n" + VICTIM_SETUP)
    return kernel


def test_a_journal_from_another_user_runs_no_pickle_until_trusted(shared, kernel_env, tmp_path, model_server):
    journal, payload, ledger = shared["journal"], shared["payload"], shared["ledger"]
    env = {**kernel_env, "DURABLE_JOURNAL": str(journal)}

    # Views: the CLI's, which never load a pickle.
    for args in (("ls",), ("show", "shared"), ("show", "shared", "--json"), ("sql", "SELECT * FROM calls"),
                 ("export", "shared", "-o", str(tmp_path / "exported.py"))):
        done = _durable(*args, "--journal", str(journal), env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    shown = _durable("show", "shared", "--journal", str(journal), env=env, cwd=tmp_path).stdout
    assert "fetch" in shown and "lookup" in shown
    assert not payload.exists()

    kernel = _victim(kernel_env, shared, tmp_path)
    try:
        # The data form replays with no trust step.
        replayed = kernel.ok(PLAIN)
        assert summaries(replayed)[0]["live"] == 0
        assert "{'city': 'Lisbon', 'sunny': True}" in "".join(o.get("text", "") for o in replayed)
        # A pickle fails closed, with one line naming the call and the way to trust the journal.
        status, outputs = kernel.execute(VICTIM_EVIL)
        assert status == "error"
        (error,) = [o for o in outputs if o["output_type"] == "error"]
        assert error["ename"] == "UntrustedPickleError" and "\n" not in error["evalue"]
        assert "tool 'fetch'" in error["evalue"] and f"durable trust {journal}" in error["evalue"]
        assert "not written by this user" in error["evalue"]
        # Restore and the history (widget, and the HTML it carries) load no pickle either.
        restored = kernel.ok("%durable restore")
        said = "".join(o.get("text", "") for o in restored)
        assert "not restored" in said and "durable trust" in said and "page" in said
        history = kernel.ok("%durable history")
        page = next(o["data"]["text/html"] for o in history if "text/html" in o.get("data", {}))
        assert "fetch" in page and "pickle" in page
    finally:
        kernel.shutdown()
    assert not payload.exists() and not ledger.exists()

    # A headless run stops at the same place, with exit code 1.
    notebook = tmp_path / "shared.ipynb"
    cells = [f"LEDGER = {str(ledger)!r}\n" + VICTIM_SETUP, PLAIN, VICTIM_EVIL, "%durable history"]
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), notebook)
    done = _durable("run", str(notebook), "--session", "shared", "--journal", str(journal), env=env, cwd=tmp_path)
    assert done.returncode == 1 and "UntrustedPickleError" in done.stdout + done.stderr
    assert not payload.exists() and not ledger.exists()

    # Trusting it, after checking where it came from, is what lets its pickles load.
    trusted = _durable("trust", str(journal), env=env, cwd=tmp_path)
    assert trusted.returncode == 0 and f"trusted {journal}" in trusted.stdout
    kernel = _victim(kernel_env, shared, tmp_path)
    try:
        again = kernel.ok(VICTIM_EVIL)
        assert summaries(again)[0]["live"] == 0
    finally:
        kernel.shutdown()
    assert payload.exists() and not ledger.exists()


def test_this_users_own_pickles_load_without_a_trust_step(kernel, tmp_path):
    setup = ("%load_ext kernel_ext\nfrom kernel_ext import tool\n"
             "class Box:\n    def __init__(self, n):\n        self.n = n\n")  # no data form: a sealed pickle
    kernel.ok(setup + "@tool\ndef box():\n    return Box(7)\n")
    kernel.ok("%%durable own\nheld = box()\nnumbers = [1, 2]\n")
    kernel.restart()
    kernel.ok(setup + "@tool\ndef box():\n    raise AssertionError('ran again')\n")
    replayed = kernel.ok("%%durable own\nheld = box()\nnumbers = [1, 2]\nprint('held', held.n)\n")
    assert summaries(replayed)[0]["live"] == 0 and "held 7" in "".join(o.get("text", "") for o in replayed)
    kernel.restart()
    restored = kernel.ok("%load_ext kernel_ext\n%durable restore\nprint(numbers, held.n)")
    assert "[1, 2] 7" in "".join(o.get("text", "") for o in restored)


def test_values_stored_as_data_come_back_as_they_were():
    import dataclasses
    import datetime
    import decimal
    import uuid

    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        tags: tuple[str, ...]

    Point.__module__, Point.__qualname__ = __name__, "Point"
    globals()["Point"] = Point
    values = [None, True, 3, 2.5, "text", b"\x00\xff", [1, {"a": (1, 2)}], {"$ref": 1}, {1: "one"}, {1, 2},
              datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc), datetime.date(2026, 1, 2),
              datetime.timedelta(seconds=90), uuid.UUID(int=7), decimal.Decimal("1.10"), Point(1, ("a",)),
              ValueError("bad input"), KeyError("k")]
    for value in values:
        back = codec.decode(codec.encode(value))
        assert type(back) is type(value)
        if isinstance(value, BaseException):
            assert back.args == value.args
        else:
            assert back == value
    with pytest.raises(codec.NotData):
        codec.encode(object())

    @dataclasses.dataclass
    class Local:  # its qualname names a function's locals: no class to look up, so it stays a pickle
        x: int

    with pytest.raises(codec.NotData):
        codec.encode(Local(1))
    # A module's __getattr__ (here a lazy import) is never asked for a name a journal chose.
    lazy = types.ModuleType("lazy_module_for_the_codec_test")
    asked: list[str] = []
    lazy.__getattr__ = lambda name: asked.append(name) or Point
    sys.modules[lazy.__name__] = lazy
    try:
        forged = json.dumps({"$dataclass": "lazy_module_for_the_codec_test:Thing", "fields": {}}).encode()
        with pytest.raises(LookupError):
            codec.decode(forged)
        assert asked == []
    finally:
        del sys.modules[lazy.__name__]
    # A class is looked up among imported modules only, never imported.
    text = json.dumps({"$dataclass": "a_module_nobody_imported:Thing", "fields": {}}).encode()
    assert "a_module_nobody_imported" not in sys.modules
    with pytest.raises(LookupError, match="not imported"):
        codec.decode(text)
    assert "a_module_nobody_imported" not in sys.modules


def test_the_signing_key_is_owner_only(tmp_path):
    home = tmp_path / "home"
    code = "from kernel_ext import trust; trust.seal(1); trust.trust([trust.seal(2)])"
    old = os.umask(0o022)
    try:
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "DURABLE_HOME": str(home)},
                       timeout=60)
    finally:
        os.umask(old)
    assert home.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in home.iterdir()} == {"key": 0o600, "trusted": 0o600}
