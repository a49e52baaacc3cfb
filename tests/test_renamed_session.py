"""A notebook renamed between runs gets a new default session, whose steps are new: said at once, not silently.

JupyterLab asks for a name the first time a new notebook is saved, and the default session is the notebook's
name, so the next kernel records every step again (and pays for it). A new session whose first step has the
name and the code of a step another session recorded says which session that is and how to replay it.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import json, sys
from kernel_ext import session, tool

@tool
def plan(day: int) -> str:
    return f"day {day}"

durable = session(sys.argv[2], journal=sys.argv[1])
with durable.step("cell-1f2e", source=sys.argv[3]) as active:  # as a %%durable cell begins its step
    plan(1)
print("LINES", json.dumps(active.warning_lines()))
"""


def _run(tmp_path, session: str, source: str) -> tuple[list[str], str]:
    import json

    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "j.duckdb"), session, source],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.split("LINES ", 1)[1]), done.stderr


def test_a_new_session_whose_first_step_another_session_recorded_says_so(tmp_path):
    code = "plan(1)  # the cell's code"
    assert _run(tmp_path, "Untitled", code) == ([], "")
    lines, stderr = _run(tmp_path, "trip", code)  # the notebook saved as trip.ipynb, a new kernel
    said = ("session 'trip' is new, but session 'Untitled' recorded step 'cell-1f2e' with the same code: its "
            "calls go live again here; `%durable session Untitled` replays them")
    assert lines == [said] and said in stderr
    # Run again in the session it now has: nothing new to say. Other code, or another name: nothing either.
    assert _run(tmp_path, "trip", code) == ([], "")
    assert _run(tmp_path, "other", "plan(2)")[0] == []
