"""durable-kernel: durable execution for LLM agents in Jupyter.

`%load_ext kernel_ext` in a notebook; `from kernel_ext import step, session` in a script.
The runtime imports no IPython: the notebook front end is loaded only by the extension.
"""

from __future__ import annotations

from typing import Any

from ._shadowing import import_own_packages

# Before any of our modules imports `journal`: a folder of that name beside the notebook must not win.
import_own_packages()

from .approvals import Decision, PendingApproval, StepSuspended, approve  # noqa: E402
from .budgets import BudgetExceeded  # noqa: E402
from .deferred import aapprove_deferred, approve_deferred  # noqa: E402
from .errors import (  # noqa: E402
    DurableError,
    InDoubtError,
    RecordedToolError,
    StepError,
    StrictReplayError,
    ToolRejected,
    ToolTimeoutError,
    UnreadRejectionError,
)
from .runtime import Session, current_session, session, settle, step  # noqa: E402
from .script import run_async, script_session  # noqa: E402
from .tools import Tool, arun_tool_calls, run_tool_calls, tool  # noqa: E402
from .values import now, random, uuid  # noqa: E402
from .waits import SleepSuspended, sleep, sleep_until  # noqa: E402

__all__ = [
    "BudgetExceeded",
    "Decision",
    "DurableError",
    "PendingApproval",
    "SleepSuspended",
    "StepSuspended",
    "approve",
    "approve_deferred",
    "aapprove_deferred",
    "InDoubtError",
    "RecordedToolError",
    "Session",
    "StepError",
    "StrictReplayError",
    "Tool",
    "ToolRejected",
    "ToolTimeoutError",
    "UnreadRejectionError",
    "arun_tool_calls",
    "current_session",
    "load_ipython_extension",
    "now",
    "random",
    "run_async",
    "run_tool_calls",
    "script_session",
    "session",
    "settle",
    "sleep",
    "sleep_until",
    "step",
    "tool",
    "unload_ipython_extension",
    "uuid",
]


def _enable_journaling() -> None:
    # SDKs are wrapped once something else has imported them (importing openai alone costs more
    # than the whole extension may take to load); threads carry the open step from now on.
    from . import integrations, threads

    threads.install()
    integrations.enable()


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext kernel_ext`: the `%%durable` and `%durable` magics, `%config Durable`, and the SDK integrations."""
    from .notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext kernel_ext`: `%config Durable` and the cell hooks go (SDKs stay patched, inert outside a step)."""
    from .notebook.magics import unload

    unload(ipython)


_enable_journaling()
