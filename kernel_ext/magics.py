"""The IPython front end: `%load_ext kernel_ext`, the `%%durable` cell magic, the `%durable` line magic.

A cell magic is a plain function call and cannot `await`. ipykernel runs a cell with
top-level `await` on its event loop, and on ipykernel >= 7.4 widget messages are handled
while such a cell is suspended. So an input transformer rewrites a `%%durable` cell into one
awaited call, and that call compiles the body with top-level await allowed and runs it in
the user's namespace, inside a durable step.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import json
import re
import sys
from collections import OrderedDict
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from journal import JournalError, digest

from .errors import StepError
from .outputs import OutputRecorder
from .runtime import current_session, session, settle
from .status import render_approvals, render_status, summary_output
from .variables import VariableTracker, describe, restore

_COMMANDS = "session NAME, status, restore, settle CALL_ID --value JSON|--retry, approvals"
_MAGIC = re.compile(r"%%durable(?=\s|$)")
_RUNNER = "__durable_cell__"
_pending: OrderedDict[str, str] = OrderedDict()  # cell bodies by hash, handed from transformer to runner
_state: dict[str, Any] = {"cell_id": None, "number": None}  # of the cell being run


def transform_durable_cell(lines: list[str]) -> list[str]:
    """Rewrite a `%%durable ARGS` cell into `await __durable_cell__(ARGS, KEY)`."""
    if not lines or not _MAGIC.match(lines[0]):
        return lines
    args = lines[0][len("%%durable"):].strip()
    key = _prepare("".join(lines[1:]))
    return [f"await {_RUNNER}({args!r}, {key!r})  # %%durable {args}\n"]


def _prepare(body: str) -> str:
    key = digest(body.encode())[:16]
    _pending[key] = body
    _pending.move_to_end(key)
    while len(_pending) > 64:
        _pending.popitem(last=False)
    return key


@magic_arguments()
@argument("name", nargs="?", help="step name; default: the cell's id")
@argument("--strict", action="store_true", help="fail instead of sending any call live")
@argument("--rerun", action="store_true", help="send every call live again; older records stay in history")
def _cell_arguments(line: str, cell: str) -> None:
    """%%durable [NAME] [--strict] [--rerun]"""


async def run_durable_cell(args: str, key: str) -> Any:
    """Run a transformed `%%durable` cell as a durable step; return its last expression's value."""
    __tracebackhide__ = True
    from IPython import get_ipython

    shell = get_ipython()
    body = _pending.get(key)
    if body is None:
        raise UsageError("this %%durable cell was not prepared by kernel_ext; run the cell again")
    options = parse_argstring(_cell_arguments, args)
    name = options.name or _default_step_name(body)
    main, last = _compile(shell, body)
    tracker = VariableTracker(body, shell.user_ns)
    try:
        scope = current_session().step(name, source=body, strict=options.strict, rerun=options.rerun)
        active = scope.__enter__()
    except (StepError, JournalError) as exc:
        raise UsageError(str(exc)) from None
    value = None
    recorder = OutputRecorder(shell)
    try:
        with recorder:
            result = eval(main, shell.user_global_ns, shell.user_ns)
            if inspect.iscoroutine(result):
                await result
            if last is not None:
                value = eval(last, shell.user_global_ns, shell.user_ns)
                if inspect.iscoroutine(value):
                    value = await value
                if value is not None:
                    recorder.result(value, _cell_number(shell))
    except BaseException as exc:
        active.outputs = recorder.outputs
        scope.__exit__(type(exc), exc, exc.__traceback__)
        raise
    active.outputs = recorder.outputs
    active.variables, unpicklable = tracker.changed()
    scope.__exit__(None, None, None)
    _show_summary(active)
    if unpicklable:
        print(f"durable: %durable restore cannot bring back {describe(unpicklable)} (not picklable); "
              "the step still replays through its calls", file=sys.stderr)
    return value


def _compile(shell: Any, body: str) -> tuple[Any, Any]:
    # A leading newline keeps line numbers equal to the cell's (line 1 is the magic).
    source = "\n" + body
    filename = shell.compile.cache(source, _cell_number(shell))
    tree = ast.parse(source, filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not body.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    flags = shell.compile.flags | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    main = compile(tree, filename, "exec", flags, dont_inherit=True)
    return main, compile(last, filename, "eval", flags, dont_inherit=True) if last else None


def _cell_number(shell: Any) -> int:
    number = _state["number"]
    return shell.execution_count if number is None else number


def _default_step_name(body: str) -> str:
    # Frontends send a stable cell id; without one the name follows the source.
    cell_id = _state["cell_id"]
    return f"cell-{cell_id}" if cell_id else f"cell-{digest(body.encode())[:8]}"


def _show_summary(active: Any) -> None:
    output = summary_output(active)
    if output is not None:
        from IPython.display import display

        display(output["data"], raw=True, metadata=output["metadata"])


def _run_sync(coroutine: Any) -> Any:
    """Drive a coroutine that never suspends; a cell magic has no event loop to wait on."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise UsageError("this %%durable cell awaits, which needs the cell form: start the cell with %%durable")


@magics_class
class DurableMagics(Magics):
    @line_cell_magic
    def durable(self, line: str, cell: str | None = None) -> Any:
        """Durable steps for LLM agents.

        Cell:  %%durable [NAME] [--strict] [--rerun]
            Runs the cell as the durable step NAME: every openai call inside it is journaled
            and, when the cell runs again, replayed from the journal instead of re-sent.
            --strict fails instead of sending any call live; --rerun sends every call live again.
        Line:  %durable session NAME   switch to (or create) the session NAME
               %durable status         the current session's steps and calls
               %durable restore        bring back the variables of the session's completed steps
               %durable approvals      pending and decided approvals of the session
               %durable settle ID --value JSON | --retry
                                       decide an in-doubt tool call (see the InDoubtError message)
        """
        if cell is not None:
            return _run_sync(run_durable_cell(line, _prepare(cell)))
        words = line.split()
        if not words:
            raise UsageError("usage: %durable session NAME | %durable status  (see %durable?)")
        command, rest = words[0], words[1:]
        try:
            if command == "session":
                if len(rest) != 1:
                    raise UsageError("usage: %durable session NAME")
                current = session(rest[0])
                print(f"durable session {current.name!r} in {current.journal.path}")
                return None
            if command == "status":
                if rest:
                    raise UsageError("usage: %durable status")
                print(render_status(current_session()))
                return None
            if command == "restore":
                if rest:
                    raise UsageError("usage: %durable restore")
                return self._restore()
            if command == "settle":
                return self._settle(rest)
            if command == "approvals":
                if rest:
                    raise UsageError("usage: %durable approvals")
                print(render_approvals(current_session()))
                return None
        except (JournalError, StepError) as exc:
            raise UsageError(str(exc)) from None
        raise UsageError(f"unknown %durable command {command!r}; available: {_COMMANDS}")

    def _restore(self) -> None:
        current = current_session()
        with current.journal.open() as store:
            values = store.latest_variables(current.name)
        if not values:
            print(f"session {current.name!r} has no completed step with variables to restore")
            return
        restored, failed = restore(values, self.shell.user_ns)
        steps = sorted({values[name][0] for name in restored})
        print(f"restored {len(restored)} variables from {len(steps)} completed steps of session "
              f"{current.name!r}: {describe(restored)}")
        if failed:
            print(f"could not unpickle: {describe(failed)}", file=sys.stderr)

    def _settle(self, words: list[str]) -> None:
        usage = "usage: %durable settle CALL_ID --value JSON | %durable settle CALL_ID --retry"
        if len(words) < 2 or not words[0].isdigit() or words[1] not in ("--value", "--retry"):
            raise UsageError(usage)
        call_id = int(words[0])
        if words[1] == "--retry":
            if len(words) != 2:
                raise UsageError(usage)
            print(settle(call_id, retry=True))
            return
        text = " ".join(words[2:])
        try:
            value = json.loads(text)
        except ValueError:
            raise UsageError(f"--value takes JSON (for a string, quote it: '\"done\"'); got {text!r}") from None
        print(settle(call_id, value=value))


def _remember_cell(info: Any) -> None:
    from IPython import get_ipython

    # IPython has already counted this cell when pre_run_cell fires.
    count = get_ipython().execution_count
    _state["cell_id"] = getattr(info, "cell_id", None)
    _state["number"] = count - 1 if getattr(info, "store_history", False) else count


def _register_widgets() -> None:
    # The widgets package depends on kernel_ext; it plugs its views in when it is installed.
    try:
        import importlib

        importlib.import_module("widgets.approval").register()
    except ImportError:
        pass


def load(shell: Any) -> None:
    _register_widgets()
    if transform_durable_cell not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(transform_durable_cell)
    setattr(builtins, _RUNNER, run_durable_cell)
    shell.events.register("pre_run_cell", _remember_cell)
    shell.register_magics(DurableMagics)


def unload(shell: Any) -> None:
    if transform_durable_cell in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(transform_durable_cell)
    shell.events.unregister("pre_run_cell", _remember_cell)
    if hasattr(builtins, _RUNNER):
        delattr(builtins, _RUNNER)
