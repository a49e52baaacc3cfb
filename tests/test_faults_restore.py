"""Model-side faults retried and journaled; variables restored into a fresh kernel without running cells."""

from __future__ import annotations

import json

from journal import Journal
from tests.conftest import API_KEY
from tests.harness import Kernel, journal_bytes

SETUP = """%load_ext kernel_ext
from openai import OpenAI
client = OpenAI(max_retries={retries}, timeout={timeout})
"""

CHAIN = """%%durable chain
messages = [{"role": "user", "content": "start"}]
for i in range(20):
    reply = client.chat.completions.create(model="m", messages=messages)
    messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    messages.append({"role": "user", "content": f"next {i}"})
print(messages[-2]["content"])
"""


def _calls(tmp_path):
    with Journal(tmp_path / "journal.duckdb").open() as store:
        return store.con.execute("SELECT status, attempts FROM calls WHERE kind = 'llm' ORDER BY id").fetchall()


def test_thirty_percent_of_requests_failing_still_completes(kernel: Kernel, model_server, tmp_path):
    model_server.configure(fail_rate=0.3, fail_statuses=[429, 500, 503, 529], seed=11)
    kernel.ok(SETUP.format(retries=10, timeout=30))
    kernel.ok(CHAIN)
    stats = model_server.stats()
    assert stats["faults_injected"] >= 4
    calls = _calls(tmp_path)
    assert len(calls) == 20 and {s for s, _ in calls} == {"completed"}
    assert sum(a for _, a in calls) == stats["requests"]  # every attempt is accounted for
    assert max(a for _, a in calls) > 1


def test_timeouts_are_retried(kernel: Kernel, model_server, tmp_path):
    # The hung request never answers, so the 1 s timeout fires for it whatever the machine's load; a busy
    # machine may also time out an answered one, hence retries to spare and no fixed attempt count.
    kernel.ok(SETUP.format(retries=5, timeout=1.0))
    model_server.configure(hang_next=1)
    kernel.ok('%%durable slow\nclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])')
    ((status, attempts),) = _calls(tmp_path)
    log = model_server.requests()
    assert status == "completed" and attempts == len(log) >= 2  # every attempt is journaled
    assert log[0]["status"] is None and log[-1]["status"] == 200  # the first hung; a retry got the answer


def test_out_of_retries_fails_the_step_and_the_next_run_resumes_there(kernel: Kernel, model_server, tmp_path):
    kernel.ok(SETUP.format(retries=2, timeout=30))
    kernel.ok(CHAIN.replace("range(20)", "range(3)"))
    model_server.reset()
    edited = CHAIN.replace("range(20)", "range(6)")
    model_server.configure(fail_next=[500, 500, 500])  # calls 1-3 replay; call 4 fails three times
    status, outputs = kernel.execute(edited)
    assert status == "error"
    error = next(o for o in outputs if o["output_type"] == "error")
    assert error["ename"] == "InternalServerError" and "500" in error["evalue"]
    assert model_server.stats()["requests"] == 3
    model_server.reset()
    kernel.ok(edited)
    assert model_server.stats()["requests"] == 3  # calls 4, 5 and 6; 1-3 still replay


RESTORE_CELLS = [
    """%%durable gather
import threading
messages = [{"role": "user", "content": "Plan a trip"}]
for i in range(3):
    reply = client.chat.completions.create(model="m", messages=messages)
    messages.append(reply.choices[0].message)
big = list(range(300_000))
summary = {"turns": len(messages), "last": messages[-1].content}
lock = threading.Lock()
""",
    """%%durable extend
messages.append({"role": "user", "content": "one more thing"})
total = len(messages) + len(big)
""",
]
SHOW = """import json
print(json.dumps([m if isinstance(m, dict) else m.model_dump() for m in messages], sort_keys=True))
print(summary, total, sum(big), type(messages[1]).__name__)
"""


def test_restore_brings_back_the_last_completed_steps_variables(kernel: Kernel, model_server, tmp_path):
    kernel.ok(SETUP.format(retries=0, timeout=30))
    first = kernel.ok(RESTORE_CELLS[0])
    assert not any("lock" in o.get("text", "") for o in first)  # said where a restore is asked for, not here
    kernel.ok(RESTORE_CELLS[1])
    kernel.ok(RESTORE_CELLS[1].replace("one more thing", "and another"))  # `big` unchanged: not stored again
    expected = kernel.ok(SHOW)
    requests = model_server.stats()["requests"]
    with Journal(tmp_path / "journal.duckdb").open() as store:
        runs = store.con.execute("SELECT count(*) FROM step_runs").fetchone()[0]
        big_pickles = store.con.execute("SELECT count(hash) FROM blobs WHERE size > 500000").fetchone()[0]
    assert big_pickles == 1

    kernel.kill()
    kernel.start()
    kernel.ok("%load_ext kernel_ext")
    restored = "".join(o.get("text", "") for o in kernel.ok("%durable restore"))
    assert "restored" in restored and "messages" in restored and "big" in restored
    assert "not restored: lock (could not be pickled); run the cell of step" in restored
    assert kernel.ok(SHOW) == expected
    assert model_server.stats()["requests"] == requests
    with Journal(tmp_path / "journal.duckdb").open() as store:
        assert store.con.execute("SELECT count(*) FROM step_runs").fetchone()[0] == runs  # no cell ran
    assert json.loads(expected[0]["text"].splitlines()[0])[-1]["content"] == "and another"


def test_a_variable_holding_a_credential_is_not_journaled(kernel: Kernel, model_server, tmp_path):
    kernel.ok("%load_ext kernel_ext\nimport os")
    outputs = kernel.ok("""%%durable keys
headers = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Accept": "application/json"}
settings = {"model": "m", "key": os.environ["OPENAI_API_KEY"]}
harmless = {"model": "m"}
""")
    warned = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "headers, settings not journaled (hold credentials)" in warned
    kernel.kill()
    assert API_KEY.encode() not in journal_bytes(tmp_path / "journal.duckdb")
    kernel.start()
    kernel.ok("%load_ext kernel_ext")
    restored = "".join(o.get("text", "") for o in kernel.ok("%durable restore"))
    assert "restored 1 variables" in restored and "harmless" in restored
    assert "not restored: headers, settings (held a credential, never journaled); run the cell of step 'keys'" \
        in restored
    assert "".join(o.get("text", "") for o in kernel.ok("print('headers' in globals(), harmless)")) == \
        "False {'model': 'm'}\n"
