"""A journal path that names a folder, and a journal of a newer schema, are refused in one line that says
what to do: in a kernel, in the CLI and in a plain script; the newer journal also on the replay path that
reads the steps' packs without DuckDB, before any step replays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from journal import SCHEMA_VERSION, Journal
from tests.harness import Kernel


def _durable(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          timeout=180, env=env, cwd=cwd)


def _folder_line(folder: Path) -> str:
    return (f"journal path {folder} is a folder, not a journal file; point DURABLE_JOURNAL (or --journal, or the "
            f"journal setting) at a file, e.g. {folder / 'journal.duckdb'}")


def test_a_folder_given_as_the_journal_is_named_by_the_cli(tmp_path):
    folder = tmp_path / "journals"
    folder.mkdir()
    env = {**os.environ, "DURABLE_JOURNAL": str(folder)}
    commands = [(["ls", "--journal", str(folder)], None), (["show", "trip", "--journal", str(folder)], None),
                (["ls"], env), (["export", "trip", "-o", str(tmp_path / "trip.py")], env)]
    for args, environment in commands:
        result = _durable(*args, env=environment, cwd=tmp_path)
        assert result.returncode == 1, result
        assert result.stderr.splitlines() == [f"durable {args[0]}: {_folder_line(folder)}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journals"] and list(folder.iterdir()) == []


def test_a_folder_given_as_the_journal_is_named_by_a_durable_cell(model_server, tmp_path):
    folder = tmp_path / "journals"
    folder.mkdir()
    kernel = Kernel({**os.environ, "DURABLE_JOURNAL": str(folder)}, tmp_path)
    try:
        kernel.ok("%load_ext kernel_ext")
        status, outputs = kernel.execute("%%durable plan\nprint('planning')")
    finally:
        kernel.shutdown()
    assert status == "error"
    # IPython shows a UsageError as one line on stderr, with no traceback.
    assert outputs == [{"output_type": "stream", "name": "stderr", "text": f"UsageError: {_folder_line(folder)}\n"}]
    assert list(folder.iterdir()) == []


SCRIPT = """
import json, sys
from kernel_ext import session, step, tool

journal, ledger = sys.argv[1], sys.argv[2]

@tool
def charge(step_name: str) -> str:
    with open(ledger, "a") as out:
        out.write(step_name + "\\n")
    return f"charged in {step_name}"

session("newer", journal=journal)
for name in ("a", "b"):
    with step(name):
        charge(name)
print("REPORT", json.dumps({"duckdb": "duckdb" in sys.modules}), flush=True)
"""


def _run(tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "j.duckdb"), str(tmp_path / "ledger")],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)


def _report(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.split("REPORT ", 1)[1])


def _newer_line(path: Path) -> str:
    return (f"journal {path} has schema version {SCHEMA_VERSION + 1}, newer than this durable-kernel understands "
            f"({SCHEMA_VERSION}); it is left as it is: upgrade durable-kernel (pip install -U durable-kernel) to "
            "use it")


def _as_a_newer_release_leaves_it(path: Path, *, packs: bool) -> None:
    """The journal migrated to the next schema, with the packs that release wrote since, or none."""
    con = duckdb.connect(str(path))
    con.execute("UPDATE schema_version SET version = ?", [SCHEMA_VERSION + 1])
    con.close()
    folder = path.with_name(path.name + ".logs") / "packs"
    owner = folder / "journal"
    if packs:
        device, inode, _ = owner.read_text().split()
        owner.write_text(f"{device} {inode} {SCHEMA_VERSION + 1}")
    else:
        for pack in folder.glob("*.pack"):
            pack.unlink()
        owner.unlink()


def _files(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.parent.rglob("*")) if p.is_file()}


def test_a_newer_journal_is_refused_before_a_step_replays_from_its_pack(tmp_path):
    path = tmp_path / "j.duckdb"
    assert _report(_run(tmp_path))["duckdb"] is True
    assert _report(_run(tmp_path)) == {"duckdb": False}, "the steps began from their packs"
    packs = sorted(p.name for p in (tmp_path / "j.duckdb.logs" / "packs").glob("*.pack"))
    assert len(packs) == 2
    _as_a_newer_release_leaves_it(path, packs=True)
    before = _files(path)
    refused = _run(tmp_path)
    assert refused.returncode == 1 and "REPORT" not in refused.stdout
    assert refused.stderr.splitlines()[-1] == f"journal.errors.SchemaTooNewError: {_newer_line(path)}"
    assert _files(path) == before, "not a pack spent, not a log or lock written"
    listed = _durable("ls", "--journal", str(path), cwd=tmp_path)
    assert listed.returncode == 1 and listed.stderr.splitlines() == [f"durable ls: {_newer_line(path)}"]
    assert (tmp_path / "ledger").read_text().split() == ["a", "b"]


def test_a_newer_journal_without_packs_is_refused_when_duckdb_opens_it(tmp_path):
    path = tmp_path / "j.duckdb"
    _report(_run(tmp_path))
    _as_a_newer_release_leaves_it(path, packs=False)
    refused = _run(tmp_path)
    assert refused.returncode == 1 and "REPORT" not in refused.stdout
    assert refused.stderr.splitlines()[-1] == f"journal.errors.SchemaTooNewError: {_newer_line(path)}"
    shown = _durable("show", "newer", "--journal", str(path), cwd=tmp_path)
    assert shown.returncode == 1 and shown.stderr.splitlines() == [f"durable show: {_newer_line(path)}"]
    assert (tmp_path / "ledger").read_text().split() == ["a", "b"]


def test_packs_that_do_not_name_their_schema_are_not_replayed(tmp_path):
    path = tmp_path / "j.duckdb"
    _report(_run(tmp_path))
    owner = tmp_path / "j.duckdb.logs" / "packs" / "journal"
    device, inode, _ = owner.read_text().split()
    owner.write_text(f"{device} {inode}")  # as releases before the schema was recorded wrote it
    assert _report(_run(tmp_path)) == {"duckdb": True}, "the steps began through DuckDB, which checks the schema"
    assert (tmp_path / "ledger").read_text().split() == ["a", "b"], "and replayed from it"
    # The packs now name the file they were taken from (a close that compacted it made a new inode) and the schema.
    now = path.stat()
    assert owner.read_text() == f"{now.st_dev} {now.st_ino} {SCHEMA_VERSION}"
    with Journal(path).open() as store:
        runs = store.con.execute("SELECT count(*) FROM step_runs WHERE session = 'newer'").fetchone()[0]
    assert runs == 4
