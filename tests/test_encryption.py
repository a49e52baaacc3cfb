"""Encryption at rest: with a key, what the agent saw and made is in no file of the journal, in any form.

A real kernel records a step (a model call whose prompt and answer carry unique strings, a tool result, a
tool error's message and a variable with unique strings) under DURABLE_KEY, then dies by SIGKILL with its
records in the append log. Every file the journal keeps is searched for the strings as raw bytes, in every
zstd frame and zlib stream inside them, and in what DuckDB returns for every table (DuckDB compresses its
columns its own way, so the file's bytes prove nothing about them; their decoded values do). The same run
without a key finds every string, so the search can fail. Then, with the key, the step replays with no
request and the variable restores; without it, `durable show` and a replay fail with one line naming the
setting; `durable ls` answers (the structure stays readable).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import duckdb
import pytest
import zstandard

from journal._blobs import _ZDICT_V1
from journal._blobstore import decompress
from tests.harness import Kernel, summaries

pytestmark = pytest.mark.slow

MARKS = {name: f"{name}-{uuid.uuid4().hex[:12]}" for name in ("PROMPT", "TOOL", "ERROR", "VARIABLE")}

SETUP = """
%load_ext kernel_ext
%durable session vault
import openai
from kernel_ext import tool
client = openai.OpenAI()

@tool
def lookup(city: str) -> dict:
    open(LEDGER, "a").write("lookup\\n")
    return {"city": city, "note": MARKS["TOOL"]}

@tool
def refuse(n: int) -> int:
    open(LEDGER, "a").write("refuse\\n")
    raise ValueError(MARKS["ERROR"])
"""

STEP = """%%durable secrets
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": MARKS["PROMPT"]}])
answer = reply.choices[0].message.content
found = lookup("Oslo")
try:
    refuse(1)
except ValueError as exc:
    said = str(exc)
kept = MARKS["VARIABLE"] + " " + answer
print(answer)
"""


def _durable(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=180)


def _decoded_forms(data: bytes) -> list[bytes]:
    """`data`, and what every zstd frame and zlib stream in it decompresses to (with and without our dictionary)."""
    forms = [data]
    plain = zstandard.ZstdDecompressor()
    preset = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(
        _ZDICT_V1, dict_type=zstandard.DICT_TYPE_RAWCONTENT))
    for match in re.finditer(re.escape(b"\x28\xb5\x2f\xfd"), data):
        for decompressor in (plain, preset):
            with contextlib.suppress(zstandard.ZstdError):
                forms.append(decompressor.decompressobj().decompress(data[match.start():]))
    for match in re.finditer(rb"\x78[\x01\x5e\x9c\xda]", data):
        for zdict in (None, _ZDICT_V1):
            try:
                unpacker = zlib.decompressobj(zdict=zdict) if zdict else zlib.decompressobj()
                forms.append(unpacker.decompress(data[match.start():]))
            except zlib.error:
                pass
    return forms


def _database_values(journal: Path) -> bytes:
    """Every value of every table of the journal as DuckDB reads it, packs of blobs unpacked."""
    con = duckdb.connect(str(journal), read_only=True)
    try:
        out = []
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
            for row in con.execute(f'SELECT * FROM "{table}"').fetchall():
                out.append(repr(row).encode())
        for codec, data in con.execute("SELECT codec, data FROM blobs WHERE hash IS NULL").fetchall():
            out.append(decompress(codec, data))
        return b"\n".join(out)
    finally:
        con.close()


def _found(journal: Path, marks: list[str]) -> set[str]:
    files = [p for p in journal.parent.rglob("*") if p.is_file()]
    assert files
    forms = [form for path in files for form in _decoded_forms(path.read_bytes())]
    if journal.is_file():
        forms.append(_database_values(journal))
    return {mark for mark in marks if any(mark.encode() in form for form in forms)}


def _record(kernel_env: dict[str, str], folder: Path, key: Path | None) -> tuple[Path, list[str], Kernel]:
    folder.mkdir()
    journal = folder / "journal" / "journal.duckdb"
    env = {**kernel_env, "DURABLE_JOURNAL": str(journal)}
    if key is not None:
        env["DURABLE_KEY"] = str(key)
    kernel = Kernel(env, folder)
    kernel.ok(f"MARKS = {MARKS!r}\nLEDGER = {str(folder / 'ledger.txt')!r}\n" + SETUP)
    outputs = kernel.ok(STEP)
    printed = "".join(o.get("text", "") for o in outputs)
    reply_id = re.search(r"\[scripted\] reply (\w{8})", printed).group(0)
    return journal, [*MARKS.values(), reply_id], kernel


def test_with_a_key_no_file_holds_what_the_agent_saw(kernel_env, tmp_path, model_server):
    # Without a key every string is found: the search below can fail.
    plain, plain_marks, kernel = _record(kernel_env, tmp_path / "plain", None)
    kernel.kill()
    assert _found(plain, plain_marks) == set(plain_marks)
    kernel = Kernel({**kernel_env, "DURABLE_JOURNAL": str(plain)}, tmp_path / "plain")
    kernel.shutdown()  # its start absorbed the dead log: DuckDB holds the strings too
    assert _found(plain, plain_marks) == set(plain_marks)

    key = tmp_path / "key"
    made = _durable("key", "new", str(key), env=kernel_env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (key.stat().st_mode & 0o777) == 0o600
    model_server.reset()
    journal, marks, kernel = _record(kernel_env, tmp_path / "sealed", key)
    assert model_server.stats()["requests"] == 1
    kernel.kill()  # the records are in the append log
    assert _found(journal, marks) == set()

    keyed = {**kernel_env, "DURABLE_JOURNAL": str(journal), "DURABLE_KEY": str(key)}
    kernel = Kernel(keyed, tmp_path / "sealed")
    try:
        kernel.ok(f"MARKS = {MARKS!r}\nLEDGER = {str(tmp_path / 'sealed' / 'ledger.txt')!r}\n" + SETUP)
        replayed = kernel.ok(STEP)
        assert summaries(replayed)[0]["live"] == 0
        assert model_server.stats()["requests"] == 1
        assert (tmp_path / "sealed" / "ledger.txt").read_text().split() == ["lookup", "refuse"]
        kernel.restart()
        kernel.ok("%load_ext kernel_ext\n%durable session vault")
        kernel.ok("%durable restore")
        shown = kernel.ok("print(kept, said)")
        assert MARKS["VARIABLE"] in shown[0]["text"] and MARKS["ERROR"] in shown[0]["text"]
        history = kernel.ok("%durable history")
        assert any("text/html" in o.get("data", {}) for o in history)
    finally:
        kernel.shutdown()
    # Absorbed into DuckDB, repacked, checkpointed: still nowhere in the clear.
    assert _found(journal, marks) == set()
    with_key = _durable("show", "vault", "--journal", str(journal), env=keyed, cwd=tmp_path)
    assert with_key.returncode == 0, with_key.stderr

    # Without the key: the structure answers, the content is one line naming the setting.
    bare = {k: v for k, v in keyed.items() if k != "DURABLE_KEY"}
    listed = _durable("ls", "--journal", str(journal), env=bare, cwd=tmp_path)
    assert listed.returncode == 0 and "vault" in listed.stdout, listed.stderr
    shown = _durable("show", "vault", "--journal", str(journal), env=bare, cwd=tmp_path)
    assert shown.returncode == 1
    assert shown.stderr.count("\n") == 1 and "DURABLE_KEY" in shown.stderr, shown.stderr
    wrong = tmp_path / "other-key"
    _durable("key", "new", str(wrong), env=kernel_env, cwd=tmp_path)
    shown = _durable("show", "vault", "--journal", str(journal), env={**bare, "DURABLE_KEY": str(wrong)},
                     cwd=tmp_path)
    assert shown.returncode == 1 and "another key" in shown.stderr and shown.stderr.count("\n") == 1
    kernel = Kernel(bare, tmp_path / "sealed")
    try:
        kernel.ok(f"MARKS = {MARKS!r}\nLEDGER = {str(tmp_path / 'sealed' / 'ledger.txt')!r}\n" + SETUP)
        status, outputs = kernel.execute(STEP)
        assert status == "error", outputs
        said = "".join(o.get("text", "") or o.get("evalue", "") for o in outputs).strip()
        assert "DURABLE_KEY" in said and "\n" not in said, said
    finally:
        kernel.shutdown()
    assert model_server.stats()["requests"] == 1
    assert (tmp_path / "sealed" / "ledger.txt").read_text().split() == ["lookup", "refuse"]
    assert not os.environ.get("DURABLE_KEY")
