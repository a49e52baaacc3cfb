"""Exported scripts: a session recorded in a real kernel, exported by `%durable export` and by
`durable export`, then run with plain `python`: live against a fresh journal, SIGKILLed mid-run
and resumed, replayed against the notebook's journal; notebook-only syntax kept as comments;
approvals asked on a real pseudo-terminal, or suspending the script with exit code 3."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from journal import Journal
from tests.harness import BOOK_HOTEL, Kernel

SETUP = '''import asyncio
from openai import AsyncOpenAI, OpenAI
from kernel_ext import run_tool_calls, tool

client = OpenAI(max_retries=0)
aclient = AsyncOpenAI(max_retries=0)
LEDGER = os.environ["LEDGER"]

''' + BOOK_HOTEL

PLAN = '''%%durable plan
messages = [{"role": "user", "content": """Plan a 3-day trip to Lisbon.
Book a hotel for every night."""}]
for turn in range(6):
    reply = client.chat.completions.create(model="m", messages=messages, tools=[book_hotel.schema])
    message = reply.choices[0].message
    messages.append(message)
    if message.tool_calls:
        messages += run_tool_calls(message, [book_hotel])
    else:
        messages.append({"role": "user", "content": f"Go on with part {turn}"})
len(messages)
'''

EXTRAS = '''%%durable extras
extra = [book_hotel("Sintra", 4), book_hotel("Cascais", 5)]
'''

SUMMARY = '''%%durable summary
async def ask(question):
    reply = await aclient.chat.completions.create(
        model="m", messages=messages + [{"role": "user", "content": question}])
    return reply.choices[0].message.content

highlights, budget = await asyncio.gather(ask("Highlights?"), ask("Budget?"))
'''

ANSWER = '''%%durable answer
final = await aclient.chat.completions.create(
    model="m", messages=[{"role": "user", "content": f"Summarise: {highlights} / {budget} / {extra}"}])
answer = final.choices[0].message.content
'''

CELLS = ["import json, os", "%load_ext kernel_ext", "%durable session trip", SETUP, PLAN, EXTRAS, SUMMARY, ANSWER,
         'print("ANSWER", answer)']
REQUESTS = 6 + 2 + 1  # plan, summary, answer


def _text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs)


def _answer(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("ANSWER"))


def _keys(ledger: Path) -> list[str]:
    return [json.loads(line)["key"] for line in ledger.read_text().splitlines()] if ledger.exists() else []


def _durable(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel_ext.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def _script_env(kernel_env: dict[str, str], ledger: Path) -> dict[str, str]:
    env = {k: v for k, v in kernel_env.items() if k != "DURABLE_JOURNAL"}
    return {**env, "LEDGER": str(ledger)}


def test_export_run_live_kill_resume_and_replay(kernel_env, model_server, tmp_path):
    notebook_ledger = tmp_path / "notebook-ledger.jsonl"
    kernel = Kernel({**kernel_env, "LEDGER": str(notebook_ledger)}, tmp_path)
    (tmp_path / "kernel").mkdir()
    (tmp_path / "cli").mkdir()
    try:
        outputs = [kernel.ok(cell) for cell in CELLS]
        assert model_server.stats()["requests"] == REQUESTS
        notebook_answer = _answer(_text(outputs[-1]))
        said = _text(kernel.ok(f"%durable export {tmp_path / 'kernel' / 'trip.py'}"))
        assert "session 'trip' as a script (5 setup cells, 4 steps)" in said and "python " in said, said
        # The CLI exports the same session while the notebook's kernel is still open.
        cli = _durable("export", "trip", "-o", str(tmp_path / "cli" / "trip.py"), env=kernel_env)
        assert cli.returncode == 0, cli.stderr
    finally:
        kernel.shutdown()
    script = tmp_path / "kernel" / "trip.py"
    text = script.read_text()
    assert (tmp_path / "cli" / "trip.py").read_text() == text
    for expected in ('script_session("trip")', 'with step("plan"):', 'with step("extras"):',
                     "async def _step_summary():", "    global ask, budget, highlights\n",
                     "async def _step_answer():", 'with step("answer"):\n    run_async(_step_answer())',
                     "# not needed in a script: %load_ext kernel_ext",
                     "# %durable session trip: the script's session is set at its top"):
        assert expected in text, expected
    notebook_keys = _keys(notebook_ledger)
    assert len(notebook_keys) == len(set(notebook_keys)) >= 3

    # A fresh journal: every call goes live, and the script ends with the notebook's answer.
    fresh_ledger, fresh = tmp_path / "fresh-ledger.jsonl", tmp_path / "fresh.duckdb"
    env = _script_env(kernel_env, fresh_ledger)
    model_server.reset()
    run = subprocess.run([sys.executable, str(script), "--journal", str(fresh)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert _answer(run.stdout) == notebook_answer
    assert model_server.stats()["requests"] == REQUESTS
    assert sorted(_keys(fresh_ledger)) == sorted(notebook_keys)  # same steps, same idempotency keys

    # SIGKILL while request 4 is in flight (tools already ran), then run it again: it resumes.
    ledger, journal = tmp_path / "ledger.jsonl", tmp_path / "killed.duckdb"
    env = _script_env(kernel_env, ledger)
    model_server.reset()
    model_server.configure(hold_request=4)
    process = subprocess.Popen([sys.executable, str(script), "--journal", str(journal)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        model_server.wait_for_held(timeout=60)
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        model_server.release()
        model_server.configure(hold_request=None)
    assert process.returncode == -signal.SIGKILL
    before = _keys(ledger)
    assert 0 < len(before) < len(notebook_keys), "killed midway: some tools ran, not all"
    model_server.reset()
    resumed = subprocess.run([sys.executable, str(script), "--journal", str(journal)], capture_output=True,
                             text=True, env=env, cwd=tmp_path, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert _answer(resumed.stdout) == notebook_answer
    assert model_server.stats()["requests"] == REQUESTS - 3  # 1-3 replayed; 4 never got its answer
    after = _keys(ledger)
    assert after[: len(before)] == before and sorted(after) == sorted(notebook_keys)  # each tool exactly once

    # The notebook's own journal (found through $DURABLE_JOURNAL): nothing is sent, no tool runs.
    replay_ledger = tmp_path / "replay-ledger.jsonl"
    model_server.reset()
    replayed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                              env={**_script_env(kernel_env, replay_ledger),
                                   "DURABLE_JOURNAL": kernel_env["DURABLE_JOURNAL"]}, timeout=120)
    assert replayed.returncode == 0, replayed.stderr
    assert _answer(replayed.stdout) == notebook_answer
    assert model_server.stats()["requests"] == 0 and not replay_ledger.exists()


NOTEBOOK_ONLY = [
    "%load_ext kernel_ext",
    '''import os
%env GREETING=hello
!echo shell
files = !ls
if os.sep:
    !echo indented
s = """
%not_a_magic
"""
%time n = 21 * 2
step = 7
n''',
    "%%bash\necho from bash",
    '''%%durable double
text = """two
lines"""
doubled = n * 2
''',
    "%durable status",
    'print("DONE", os.environ["GREETING"], repr(s), repr(text), doubled, step)',
]


def test_notebook_only_lines_are_commented_with_a_note(kernel, kernel_env, tmp_path):
    notebook = _text([kernel.ok(cell) for cell in NOTEBOOK_ONLY][-1])
    kernel.km.shutdown_kernel(now=False)  # as a notebook's "shut down": the cells after the last step are kept
    kernel.shutdown()
    script = tmp_path / "nb.py"
    exported = _durable("export", "default", "-o", str(script), env=kernel_env)
    assert exported.returncode == 0, exported.stderr
    text = script.read_text()
    for line in ('os.environ["GREETING"] = "hello"  # from: %env GREETING=hello',
                 "# notebook-only, not run: !echo shell",
                 "# notebook-only, not run: files = !ls",
                 "if os.sep:\n    # notebook-only, not run: !echo indented\n    pass",
                 "n = 21 * 2  # from: %time (the timing is notebook-only)",
                 "# notebook-only, not run: %%bash\n#     echo from bash",
                 "# notebook-only, not run: %durable status  (from a terminal: durable show SESSION)",
                 'sys.displayhook(n)',
                 "import kernel_ext\n",  # the cell's own `step = 7` must not hide the durable step
                 'with kernel_ext.step("double"):\n    text = """two\nlines"""'):
        assert line in text, line
    assert '"""\n%not_a_magic\n"""' in text  # inside a string: left alone
    run = subprocess.run([sys.executable, str(script), "--journal", str(tmp_path / "other.duckdb")],
                         capture_output=True, text=True, cwd=tmp_path, env=kernel_env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == notebook.strip()
    assert "42" in run.stdout.splitlines()  # the last expression of a cell is shown, as the notebook did


SHOP = [
    "%load_ext kernel_ext",
    "%durable session shop",
    '''import os
from kernel_ext import approve, tool


@tool
def refund(customer: str, amount_eur: int, idempotency_key: str) -> str:
    with open(os.environ["LEDGER"], "a") as f:
        f.write(idempotency_key + "\\n")
    return f"refunded {amount_eur} EUR to {customer}"
''',
]
REFUND = '''%%durable refund
decision = approve("Refund 120 EUR to Ana?", key="refund-ana", details={"customer": "ana", "amount_eur": 120})
print("REFUND", decision.approved, decision.by, decision.comment)
if decision.approved:
    print(refund("ana", 120))
'''
SHIP = '''%%durable ship
shipped = await approve("Ship the order?", key="ship")
print("SHIP", shipped.approved, shipped.by)
'''


class Terminal:
    """A process on a real pseudo-terminal: stdin and stdout are TTYs, as when a person runs it."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                        start_new_session=True)
        os.close(slave)
        self.seen = b""

    def expect(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline and self._read(0.5), f"no {text!r} in {self.seen.decode()!r}"

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self, timeout: float = 60) -> str:
        self.process.wait(timeout=timeout)
        while self._read(0.2):
            pass
        os.close(self.master)
        return self.seen.decode()

    def _read(self, wait: float) -> bool:
        if not select.select([self.master], [], [], wait)[0]:
            return self.process.poll() is None
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # the terminal closed: the process ended
            return False
        self.seen += chunk
        return bool(chunk)


def _record_shop(kernel: Kernel, env: dict[str, str], script: Path) -> None:
    for cell in SHOP:
        kernel.ok(cell)
    status, outputs = kernel.execute(REFUND)
    assert status == "error" and outputs[-1]["ename"] == "StepSuspended"
    assert _durable("approve", "shop", "refund-ana", env=env).returncode == 0
    assert "REFUND True" in _text(kernel.ok(REFUND))
    msg_id = kernel.kc.execute(SHIP)  # it waits in the kernel until the CLI decides
    deadline = time.monotonic() + 120
    while _durable("approve", "shop", "ship", env=env).returncode != 0:
        assert time.monotonic() < deadline, "the ship approval never became pending"
    reply = kernel.kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok"
    kernel.ok(f"%durable export {script}")


def test_approvals_in_a_script_tty_prompt_cli_or_exit_3(kernel_env, tmp_path):
    script = tmp_path / "shop.py"
    notebook_env = {**kernel_env, "LEDGER": str(tmp_path / "nb-ledger")}
    kernel = Kernel(notebook_env, tmp_path)
    try:
        _record_shop(kernel, notebook_env, script)
    finally:
        kernel.shutdown()
    ledger, journal = tmp_path / "ledger", tmp_path / "tty.duckdb"
    env = _script_env(kernel_env, ledger)
    args = [sys.executable, str(script), "--journal", str(journal)]

    def run(*extra: str, journal_path: Path = journal) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), "--journal", str(journal_path), *extra],
                              capture_output=True, text=True, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                              timeout=120)

    # No terminal (as under cron): the script suspends at once, says how to decide, exit code 3.
    suspended = run()
    assert suspended.returncode == 3, suspended.stderr
    assert f"durable approve shop refund-ana --journal {journal.resolve()}" in suspended.stderr
    assert "then run the script again" in suspended.stderr and "Traceback" not in suspended.stderr
    assert not ledger.exists()

    # On a terminal: both approvals are asked there and journaled as decided by the user (tty).
    terminal = Terminal(args, env, tmp_path)
    terminal.expect("Refund 120 EUR to Ana?")
    terminal.expect('"amount_eur": 120')
    terminal.expect("approve? [y/n] ")
    terminal.send("y")
    terminal.expect("comment (optional")
    terminal.send("checked the order")
    terminal.expect("Ship the order?")
    terminal.expect("approve? [y/n] ")
    terminal.send("n")
    terminal.expect("comment (optional")
    terminal.send("")
    output = terminal.finish()
    assert terminal.process.returncode == 0, output
    assert "refunded 120 EUR to ana" in output and "SHIP False" in output
    with Journal(journal).open() as store:
        decisions = {a["key"]: a["decision"] for a in store.approvals("shop")}
    assert decisions["refund-ana"]["approved"] is True and decisions["refund-ana"]["by"].endswith(" (tty)")
    assert decisions["refund-ana"]["comment"] == "checked the order" and decisions["ship"]["approved"] is False

    # Run again: the decisions replay, nothing is asked, the refund is not paid twice.
    again = run()
    assert again.returncode == 0, again.stderr
    assert "REFUND True" in again.stdout and "(tty) checked the order" in again.stdout
    assert "approve?" not in again.stdout and len(ledger.read_text().splitlines()) == 1

    # Decided from the CLI between runs; an awaited approval suspends the same way.
    cli_journal = tmp_path / "cli.duckdb"
    cli_env = {**env, "DURABLE_JOURNAL": str(cli_journal)}
    assert run(journal_path=cli_journal).returncode == 3
    assert _durable("approve", "shop", "refund-ana", env=cli_env).returncode == 0
    waiting = run(journal_path=cli_journal)
    assert waiting.returncode == 3 and "waiting for approval 'ship'" in waiting.stderr, waiting.stderr
    assert _durable("approve", "shop", "ship", "--reject", env=cli_env).returncode == 0
    done = run(journal_path=cli_journal)
    assert done.returncode == 0, done.stderr
    assert "SHIP False" in done.stdout and "(cli)" in done.stdout
    assert len(ledger.read_text().splitlines()) == 2  # one refund per journal


def test_export_errors_are_one_line(kernel_env, tmp_path):
    missing = _durable("export", "nope", "-o", str(tmp_path / "x.py"), env=kernel_env)
    assert missing.returncode == 1 and missing.stderr.startswith("durable export: no journal at")
    ran = subprocess.run([sys.executable, "-c", "from kernel_ext import session, step\nsession('scripted')\n"
                          "with step('s'):\n    pass"], env=kernel_env, timeout=60)
    assert ran.returncode == 0
    unknown = _durable("export", "nope", "-o", str(tmp_path / "x.py"), env=kernel_env)
    assert unknown.returncode == 1 and "no session 'nope'" in unknown.stderr and "scripted" in unknown.stderr
    no_cells = _durable("export", "scripted", "-o", str(tmp_path / "x.py"), env=kernel_env)
    assert no_cells.returncode == 1 and "no recorded notebook cells" in no_cells.stderr
    assert len(no_cells.stderr.strip().splitlines()) == 1


def test_script_help_names_the_exit_codes(tmp_path):
    script = tmp_path / "s.py"
    script.write_text('"""A durable script."""\nfrom kernel_ext import script_session\nscript_session("s")\n')
    shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--journal" in shown.stdout and "3 suspended" in shown.stdout
    wrong = subprocess.run([sys.executable, str(script), "--nope"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
