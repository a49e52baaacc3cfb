"""Workload 10: what a long session costs durable-kernel: per step, per call as a chat grows, on disk for a
sliding-window chat, for `durable ls` and `%durable history` on a big journal, and in memory.

The peers have no such rows: their sessions, listings and history views are not the same things.
Children:
  python -m bench.long_session steps DIR BASE_URL STEPS CALLS_PER_STEP
  python -m bench.long_session chat DIR BASE_URL TURNS
  python -m bench.long_session window DIR BASE_URL CALLS
  python -m bench.long_session history DIR SESSION CALLS
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import floors
from bench.child import emit, median_us, spawn, timed
from bench.rows import Context, Row, Table, at_most
from bench.systems import DBOS, DURABLE, LANGGRAPH, MODEL, journal_path, store_bytes, store_dir

SESSION = "long"
CALLS_PER_STEP = 10  # in the session of many calls: 1,000 notebook cells of 10 model calls each
CHAT_CHARS = 2000  # the message a turn of the growing chat adds
WINDOW = 20  # messages the sliding-window chat sends
SPREAD = 5  # turns either side of a named turn whose calls give its median
_NA = {DBOS: "durable-kernel only", LANGGRAPH: "durable-kernel only"}


def _per_step(table: Table) -> bool:
    step, floor = table["long_step"][DURABLE], table["long_floor"][DURABLE]
    return step is not None and floor is not None and step * 1000 <= 10 * floor


def _flat(table: Table) -> bool:
    first, last = table["long_chat_first"][DURABLE], table["long_chat_last"][DURABLE]
    return first is not None and last is not None and last <= 2.5 * first


ROWS = [
    Row("long_step", "10. One step of one model call, in a session of {session_steps} such steps (median, step - "
        "plain call)", "ms",
        "A child makes {session_steps} durable steps in one session (`with step(f\"step-{{i}}\")`, the script form "
        "of a `%%durable` cell), each holding one chat completion with a distinct short prompt through the real "
        "`openai` client over loopback HTTP to the scripted model server in the harness process; each step is "
        "timed whole with `perf_counter_ns` (begin; the call; end), default sync mode (`effects`). The first step "
        "claims the session through DuckDB; the later ones are new steps, begun from the append log; DuckDB takes "
        "them in beside the loop when the run ids reserved run low (every few hundred steps), in a thread of "
        "the same process, and at the end (`release()`, a detail row). Before the session the same child times "
        "100 plain calls (after 20 warm-up "
        "calls); the row is the median step minus the median plain call. The target is judged against the next "
        "row, measured in the same child.",
        target="<= 10 x one write + fdatasync of 1 KB (next row)", met=_per_step, not_applicable=_NA),
    Row("long_floor", "10. ... one `os.write` + `os.fdatasync` of 1 KB, in the same folder (median)", "us",
        "1,000 `os.write`s of 1,000 bytes to an `O_APPEND` file in the folder holding that session's journal, "
        "each followed by `os.fdatasync`, after 20 warm-up writes, timed alone, in the same child after the "
        "session.", not_applicable=_NA),
    Row("long_chat_first", "10. Overhead per call of a growing chat at turn {turn_first} (median, journaled - plain)",
        "ms",
        "A child holds a conversation of {turn_last} turns three times: plainly, inside one durable step, and "
        "plainly again. Each turn "
        f"appends a {CHAT_CHARS:,}-character user message (English-like words, seeded) and sends the whole "
        "conversation, as chat clients do, to the scripted model server in the harness process (real loopback "
        "HTTP; its short reply is appended too), through the `openai` client's generic `client.post(\"/chat/"
        "completions\", ...)` as workload 3 does; each call is timed alone. The row is, around turn {turn_first} "
        f"(the {2 * SPREAD + 1} calls from {SPREAD} turns before to {SPREAD} after), the median journaled call minus "
        "the median of the plain calls of both plain conversations there.", not_applicable=_NA),
    Row("long_chat_mid", "10. ... at turn {turn_mid}", "ms", "As above, around turn {turn_mid}.",
        not_applicable=_NA),
    Row("long_chat_last", "10. ... at turn {turn_last}", "ms",
        f"As above, around turn {{turn_last}} (the last {2 * SPREAD + 1} turns: {SPREAD} before and the turn "
        "itself, as the conversation ends there). The target compares it with the row at turn {turn_first}.",
        target="<= 2.5 x the turn-{turn_first} overhead", met=_flat, not_applicable=_NA),
    Row("long_window", "10. Storage per call of a sliding-window chat (growth)", "KB",
        f"A child holds a conversation inside one durable step: each call appends a {CHAT_CHARS:,}-character user "
        f"message and sends only the last {WINDOW} messages (the client's generic `client.post` again), then "
        "appends the short reply. Everything the store leaves on disk (the DuckDB file and its WAL, the append "
        "logs and replay packs beside it), after the session is released and the child has exited, is measured "
        "after {window_half} and after {window_calls} calls (two fresh children); the row is the difference over "
        "the {window_half} calls between them. KB = 10^3 bytes.", not_applicable=_NA),
    Row("long_ls_small", "10. `durable ls` on a journal of {session_steps} one-call steps: start to exit", "s",
        "`durable ls --journal J` (the virtualenv's console script) run as a subprocess on the journal the "
        "one-call-step session left, after its child exited; wall time from spawn to exit, interpreter start and "
        "imports included; the median of 3 runs one after the other. It must list the session completed with "
        "all of its calls.",
        target="<= 0.3 s", met=at_most("long_ls_small", 0.3), not_applicable=_NA),
    Row("long_ls_big", "10. ... on a journal of {session_calls} calls ({session_big_steps} steps of "
        f"{CALLS_PER_STEP})", "s",
        "As above, on the journal of a second session: {session_big_steps} steps of "
        f"{CALLS_PER_STEP} model calls each, made by a fresh child as the first session was.", not_applicable=_NA),
    Row("long_history_small", "10. `%durable history` of {session_steps} calls ({session_steps} steps)", "s",
        "A fresh child starts an IPython `InteractiveShell` (no kernel), runs `%load_ext kernel_ext` with "
        "`DURABLE_JOURNAL` naming the journal, then times `%durable history long` together with formatting its "
        "result as the kernel's display hook does (`shell.display_formatter.format`): with ipywidgets installed "
        "that is the history widget and its text/HTML fallbacks. Imports of the extension are not timed; those "
        "the magic makes itself are.",
        target="<= 1.5 s", met=at_most("long_history_small", 1.5), not_applicable=_NA),
    Row("long_history_small_load", "10. ... of which the data: `load_history`", "s",
        "In the same child, after the magic: `kernel_ext.history.model.load_history(Journal(J), 'long', "
        "read_only=True)` timed alone (steps, calls, what replay saved: the model the pictures are drawn from).",
        not_applicable=_NA),
    Row("long_history_small_size", "10. ... its output in the notebook", "MB",
        "The length of the JSON of the formatted output (every MIME type of it) that the notebook would store.",
        target="<= 3 MB", met=at_most("long_history_small_size", 3), not_applicable=_NA),
    Row("long_history_big", "10. `%durable history` of {session_calls} calls ({session_big_steps} steps)", "s",
        "As above, on the journal of the second session.", not_applicable=_NA),
    Row("long_history_big_load", "10. ... of which the data: `load_history`", "s", "As above.",
        not_applicable=_NA),
    Row("long_rss", "10. Peak memory of a process that made {session_calls} journaled calls", "MB",
        "The second session's child: its peak resident size (`VmHWM` of /proc/self/status) when its last step "
        "has ended (not `ru_maxrss`, which keeps the harness's peak across fork and exec) "
        "(interpreter, `openai`, `kernel_ext` and everything the session kept). MB = 2^20 bytes.",
        not_applicable=_NA),
]
DETAILS = {
    "long_plain_call": ("plain model call, short prompt (median)", "ms"),
    "long_step_early": ("one-call step, the first tenth of the session's steps (median)", "ms"),
    "long_step_late": ("one-call step, the last tenth of the session's steps (median)", "ms"),
    "long_session_wall": ("the one-call-step session, all its steps (wall)", "s"),
    "long_big_step": (f"a step of {CALLS_PER_STEP} calls in the second session (median)", "ms"),
    "long_big_wall": ("the second session, all its steps (wall)", "s"),
    "long_rss_small": ("peak memory of the one-call-step session's process", "MB"),
    "long_rss_start": ("memory of the second session's process before its first step (VmRSS)", "MB"),
    "long_chat_plain_last": ("plain call of the growing chat at its last turn (median)", "ms"),
    "long_chat_journaled_last": ("journaled call of the growing chat at its last turn (median)", "ms"),
    "long_window_total": ("sliding-window chat, everything on disk after all its calls", "MB"),
    "long_window_sent": ("sliding-window chat, request bodies sent per call (mean)", "KB"),
    "long_window_new": ("sliding-window chat, new message content per call (mean)", "KB"),
    "long_history_big_size": ("`%durable history` output of the second session in the notebook", "MB"),
    "long_close_small": ("closing the one-call-step session at its end (`release()`: DuckDB takes in what is "
                         "left of its log and packs its steps)", "s"),
    "long_close_big": ("closing the second session at its end (as above)", "s"),
    "long_close_mb": ("the second session's peak memory growth while it closes (VmHWM after - before)", "MB"),
}


def measure(system: str, ctx: Context) -> dict[str, Any]:
    s, url = ctx.scale, ctx.server.base_url
    ctx.server.reset()  # its log of request bodies: a growing chat's would fill the harness's memory
    small, big = ctx.workdir / "steps", ctx.workdir / "calls"
    small.mkdir()
    big.mkdir()
    one = spawn("long_session", "steps", small, url, s.session_steps, 1, cwd=small)
    many = spawn("long_session", "steps", big, url, s.session_calls // CALLS_PER_STEP, CALLS_PER_STEP, cwd=big)
    metrics: dict[str, Any] = {
        "long_step": one["step_ms"] - one["plain_ms"], "long_floor": one["fdatasync_us"],
        "long_plain_call": one["plain_ms"], "long_step_early": one["early_ms"], "long_step_late": one["late_ms"],
        "long_session_wall": one["wall_s"], "long_rss_small": one["peak_mb"],
        "long_big_step": many["step_ms"], "long_big_wall": many["wall_s"], "long_rss": many["peak_mb"],
        "long_rss_start": many["start_mb"], "long_close_small": one["close_s"], "long_close_big": many["close_s"],
        "long_close_mb": many["close_mb"],
    }
    for name, folder, calls in (("small", small, s.session_steps), ("big", big, s.session_calls)):
        metrics[f"long_ls_{name}"] = _ls(folder, calls)
        shown = spawn("long_session", "history", folder, SESSION, calls, cwd=folder,
                      env={"DURABLE_JOURNAL": str(journal_path(folder))})
        metrics |= {f"long_history_{name}": shown["view_s"], f"long_history_{name}_load": shown["load_s"],
                    f"long_history_{name}_size": shown["bytes"] / 1e6}
    chat = ctx.workdir / "chat"
    chat.mkdir()
    out = spawn("long_session", "chat", chat, url, max(s.chat_turns), cwd=chat)
    ctx.server.reset()
    for key, turn in zip(("first", "mid", "last"), s.chat_turns, strict=True):
        metrics[f"long_chat_{key}"] = _around([out["journaled"]], turn) - _around(out["plain"], turn)
    metrics["long_chat_plain_last"] = _around(out["plain"], max(s.chat_turns))
    metrics["long_chat_journaled_last"] = _around([out["journaled"]], max(s.chat_turns))
    sizes = {}
    for calls in (s.window_calls // 2, s.window_calls):
        folder = ctx.workdir / f"window-{calls}"
        folder.mkdir()
        window = spawn("long_session", "window", folder, url, calls, cwd=folder)
        sizes[calls] = store_bytes(folder)
    metrics |= {"long_window": (sizes[s.window_calls] - sizes[s.window_calls // 2]) / (s.window_calls // 2) / 1e3,
                "long_window_total": sizes[s.window_calls] / 1e6, "long_window_sent": window["sent"] / 1e3,
                "long_window_new": window["new"] / 1e3}
    metrics["note:long_sync"] = (f"workload 10's sessions ran in sync mode `{one['sync']}`; their journals: "
                                 f"{store_bytes(small) / 1e6:.2f} MB after {s.session_steps:,} one-call steps, "
                                 f"{store_bytes(big) / 1e6:.2f} MB after {s.session_calls:,} calls")
    return metrics


def _around(conversations: list[list[float]], turn: int) -> float:
    """The median of the calls around turn `turn` (1-based) in all the conversations, as far as they go."""
    return statistics.median(ms for one in conversations for ms in one[max(0, turn - 1 - SPREAD):turn + SPREAD])


def _ls(folder: Path, calls: int) -> float:
    script = Path(sys.executable).with_name("durable")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kernel_ext.cli.main"]
    command += ["ls", "--journal", str(journal_path(folder))]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"durable ls exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        line = next((ln.split() for ln in proc.stdout.splitlines() if ln.split()[:1] == [SESSION]), None)
        assert line is not None and line[1] == "completed" and int(line[3]) == calls, proc.stdout
    return statistics.median(times)


# -- children ------------------------------------------------------------------------------------------

def _client(base_url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _steps(workdir: Path, base_url: str, steps: int, per_step: int) -> None:
    import kernel_ext

    client = _client(base_url)

    def ask(prompt: str) -> Any:
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}])

    plain = timed(ask, [f"plain question {i}" for i in range(120)], 20)
    start_mb = _rss_mb()
    kernel_ext.session(SESSION, journal=journal_path(workdir))
    per = []
    begun = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter_ns()
        with kernel_ext.step(f"step-{i}") as active:
            for j in range(per_step):
                ask(f"step {i} question {j}: what is {i} plus {j}?")
        per.append(time.perf_counter_ns() - t0)
        assert active.live == per_step, (active.live, active.replayed)
    wall = time.perf_counter() - begun
    # VmHWM, the peak of this program since it started: ru_maxrss keeps the parent's peak across fork and exec.
    peak = _rss_mb("VmHWM")
    session = kernel_ext.current_session()
    sync = session.journal.sync
    closing = time.perf_counter()
    session.release()
    closed, after = time.perf_counter() - closing, _rss_mb("VmHWM")
    tenth = max(1, steps // 10)
    emit({"plain_ms": median_us(plain) / 1e3, "step_ms": median_us(per) / 1e3,
          "early_ms": median_us(per[:tenth]) / 1e3, "late_ms": median_us(per[-tenth:]) / 1e3, "wall_s": wall,
          "peak_mb": peak, "start_mb": start_mb, "sync": sync, "close_s": closed, "close_mb": after - peak,
          "fdatasync_us": median_us(floors.append(store_dir(workdir), 1000, 20, sync=True))})


def _chat(workdir: Path, base_url: str, turns: int) -> None:
    from openai.types.chat import ChatCompletion

    import kernel_ext
    from bench.storage import user_text

    client = _client(base_url)

    def conversation() -> list[float]:
        messages: list[dict[str, str]] = []
        per = []
        for turn in range(turns):
            messages.append({"role": "user", "content": user_text(turn, CHAT_CHARS)})
            t0 = time.perf_counter_ns()
            reply = client.post("/chat/completions", body={"model": MODEL, "messages": messages},
                                cast_to=ChatCompletion)
            per.append((time.perf_counter_ns() - t0) / 1e6)
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        return per

    before = conversation()
    kernel_ext.session(SESSION, journal=journal_path(workdir))
    with kernel_ext.step("chat") as active:
        journaled = conversation()
    assert active.live == turns, (active.live, active.replayed)
    kernel_ext.current_session().release()
    # Plain calls before and after the journaled ones, so that a drift of the machine or a warm-up of the
    # first conversation does not count as the journal's cost (or saving).
    plain = [before, conversation()]
    emit({"plain": plain, "journaled": journaled})


def _window(workdir: Path, base_url: str, calls: int) -> None:
    from openai.types.chat import ChatCompletion

    import kernel_ext
    from bench.storage import user_text

    client = _client(base_url)
    messages: list[dict[str, str]] = []
    sent = new = 0
    kernel_ext.session(SESSION, journal=journal_path(workdir))
    with kernel_ext.step("window") as active:
        for turn in range(calls):
            messages.append({"role": "user", "content": user_text(turn, CHAT_CHARS)})
            body = {"model": MODEL, "messages": messages[-WINDOW:]}
            sent += len(json.dumps(body))
            reply = client.post("/chat/completions", body=body, cast_to=ChatCompletion)
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})
            new += len(messages[-2]["content"]) + len(messages[-1]["content"])
    assert active.live == calls, (active.live, active.replayed)
    kernel_ext.current_session().release()
    emit({"sent": sent / calls, "new": new / calls})


def _history(workdir: Path, session: str, calls: int) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from journal import Journal
    from kernel_ext.history.model import load_history

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kernel_ext")
    start = time.perf_counter()
    view = shell.run_line_magic("durable", f"history {session}")
    data, metadata = shell.display_formatter.format(view)
    view_s = time.perf_counter() - start
    size = len(json.dumps({"data": data, "metadata": metadata}))
    start = time.perf_counter()
    history = load_history(Journal(os.environ["DURABLE_JOURNAL"]), session, read_only=True)
    load_s = time.perf_counter() - start
    assert history.calls == calls, (history.calls, calls)
    emit({"view_s": view_s, "load_s": load_s, "bytes": size, "view": type(view).__name__})


def main(argv: list[str]) -> None:
    kind, workdir = argv[0], Path(argv[1])
    if kind == "steps":
        _steps(workdir, argv[2], int(argv[3]), int(argv[4]))
    elif kind == "chat":
        _chat(workdir, argv[2], int(argv[3]))
    elif kind == "window":
        _window(workdir, argv[2], int(argv[3]))
    elif kind == "history":
        _history(workdir, argv[2], int(argv[3]))
    else:
        raise SystemExit(f"unknown child {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
