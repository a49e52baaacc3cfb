"""A durable sleep on the DBOS engine: a session exported with `--engine dbos` sleeps, its process is
SIGKILLed in the middle of the sleep, and the run started again wakes at the recorded time (counted
from the first run), not a whole sleep after the restart; the model call after it is sent once.
On DBOS's SQLite (one machine), as `python app.py run` does without a Postgres URL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from kernel_ext.scripted.server import ScriptedModelServer
from tests.test_dbos import _app, _durable, _env, _record, _wait_for

pytestmark = pytest.mark.slow

NAP = '''%%durable nap
from kernel_ext import sleep
slept_from = now().isoformat()
sleep(float(os.environ.get("NAP_SECONDS", "0.1")))
woke = now().isoformat()
reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "awake"}])
answer = reply.choices[0].message.content
'''

SECONDS = 20.0
INTO = 8.0  # seconds of the sleep the first run had slept when it was killed


def test_a_sleep_killed_on_dbos_wakes_at_its_recorded_time(tmp_path: Path) -> None:
    with ScriptedModelServer() as server:
        kernel = _record(tmp_path, server, "nap", [NAP])
        kernel.shutdown()
        exported = _durable(_env(tmp_path, server), "export", "nap", "--engine", "dbos",
                            "-o", str(tmp_path / "app.py"))
        assert exported.returncode == 0, exported.stderr
        env = {**_env(tmp_path, server), "NAP_SECONDS": str(SECONDS)}
        env.pop("DBOS_SYSTEM_DATABASE_URL", None)
        before = server.stats()["requests"]

        first = subprocess.Popen([sys.executable, str(tmp_path / "app.py"), "run", "--session", "nap-2"],
                                 cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        shown: list[str] = []

        def sleeping() -> bool:
            done = _durable(env, "show", "nap-2", "--dbos", f"sqlite:///{tmp_path / 'app.sqlite'}")
            shown.append(done.stdout)
            return "sleeping until" in done.stdout

        _wait_for(sleeping)
        time.sleep(INTO)
        first.kill()
        first.wait()
        again = _app(tmp_path, env, "run", "--session", "nap-2")
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout.strip().splitlines()[-1])["result"]
        slept_from, woke = datetime.fromisoformat(result["slept_from"]), datetime.fromisoformat(result["woke"])
        # `slept_from` is the first run's (a recorded value, replayed); `woke` the second run's. Woken a
        # sleep after the first run reached it: a sleep counted from the restart would wake at least INTO
        # seconds later than that. The margin is half of INTO, for a loaded machine.
        slept = (woke - slept_from).total_seconds()
        assert SECONDS <= slept < SECONDS + INTO / 2, slept
        assert server.stats()["requests"] - before == 1  # the call after the sleep: once
