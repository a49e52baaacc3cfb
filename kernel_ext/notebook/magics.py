"""The IPython front end: `%load_ext kernel_ext`, the `%%durable` cell magic, the `%durable` line magic.

A cell magic is a plain function call and cannot `await`. ipykernel runs a cell with
top-level `await` on its event loop, and on ipykernel >= 7.4 widget messages are handled
while such a cell is suspended. So an input transformer rewrites a `%%durable` cell into one
awaited call, and that call compiles the body with top-level await allowed and runs it in
the user's namespace, inside a durable step.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import inspect
import json
import re
import sys
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from journal import JournalError, digest

from ..errors import StepError
from ..runtime import current_session, session, settle
from ..status import render_approvals, render_status
from .interrupts import CellInterrupts
from .outputs import OutputRecorder
from .progress import ProgressLine
from .variables import VariableTracker, describe, restore

_COMMANDS = ("session NAME, status, history [SESSION], sql QUERY, fork NEW [--from STEP], forget STEP, "
             "restore, settle CALL_ID --value JSON|--retry, approvals, prices [FILE], export PATH")
_MAGIC = re.compile(r"%%durable(?=\s|$)")
_RUNNER = "__durable_cell__"
_LINE_COMMANDS = ("history", "sql", "fork", "forget", "prices", "export")  # handled by `_COMMAND(rest, text)`
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
    if options.strict and options.rerun:
        raise UsageError("%%durable: --strict replays only and --rerun sends every call live; choose one")
    name = options.name or _default_step_name(body)
    current_session().note_cell("step", name, f"%%durable {args}".rstrip() + "\n" + body)
    main, last = _compile(shell, body)
    tracker = VariableTracker(body, shell.user_ns)
    try:
        scope = current_session().step(name, source=body, strict=options.strict, rerun=options.rerun)
        active = scope.__enter__()
    except (StepError, JournalError) as exc:
        raise UsageError(str(exc)) from None
    value = None
    recorder = OutputRecorder(shell)
    progress = active.observer = ProgressLine()
    interrupts = CellInterrupts(run_durable_cell.__code__)
    try:
        with recorder, interrupts:
            result = eval(main, shell.user_global_ns, shell.user_ns)
            if inspect.iscoroutine(result):
                await result
            if last is not None:
                value = eval(last, shell.user_global_ns, shell.user_ns)
                if inspect.iscoroutine(value):
                    value = await value
                if value is not None:
                    recorder.result(value, _cell_number(shell))
        active.pass_gates(ending=True)  # an approval left undecided suspends the step, it does not complete
    except BaseException as exc:
        # Our interrupt cancelled the awaiting cell: to the user it is a KeyboardInterrupt, as in a plain cell.
        shown = KeyboardInterrupt() if isinstance(exc, asyncio.CancelledError) and interrupts.cancelled else exc
        if isinstance(shown, JournalError):  # a journal found damaged mid-step: one line, as at its start
            shown = UsageError(str(shown))
        active.outputs = recorder.outputs
        with _journal_errors_in_one_line():
            scope.__exit__(type(shown), shown, shown.__traceback__)
        progress.finish(active, shown)
        if shown is exc:
            raise
        raise shown from None
    active.outputs = recorder.outputs
    active.variables, unpicklable, secret = tracker.changed()
    with _journal_errors_in_one_line():
        scope.__exit__(None, None, None)
    progress.finish(active)
    if secret:
        holds = "holds a credential" if len(secret) == 1 else "hold credentials"
        print(f"durable: {describe(secret)} not journaled ({holds}); after %durable restore, "
              "re-run this cell to bring them back", file=sys.stderr)
    if unpicklable:
        print(f"durable: %durable restore cannot bring back {describe(unpicklable)} (not picklable); "
              "the step still replays through its calls", file=sys.stderr)
    return value


@contextlib.contextmanager
def _journal_errors_in_one_line() -> Iterator[None]:
    try:
        yield
    except JournalError as exc:
        raise UsageError(str(exc)) from None


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
               %durable history [SESSION]
                                       steps and calls to browse: requests, responses, tokens, cost
               %durable sql QUERY      query the views sessions, steps, calls, approvals (read-only)
               %durable fork NEW [--from STEP]
                                       copy this session (up to and including STEP) into NEW and switch
                                       to it; the original stays as it is
               %durable forget STEP    STEP runs live next time; its records stay in history
               %durable prices [FILE]  show the price table, or load it from a JSON/TOML file
               %durable export PATH    write the session as a standalone Python script
               %durable restore        bring back the variables of the session's completed steps
               %durable approvals      pending and decided approvals of the session
               %durable settle ID --value JSON | --retry
                                       decide an in-doubt tool call (see the InDoubtError message)
        """
        if cell is not None:
            return _run_sync(run_durable_cell(line, _prepare(cell)))
        words = line.split()
        if not words:
            raise UsageError(f"usage: %durable COMMAND; commands: {_COMMANDS}  (see %durable?)")
        command, rest = words[0], words[1:]
        try:
            handler = getattr(self, f"_{command}", None)
            if command in _LINE_COMMANDS and handler is not None:
                return handler(rest, line.split(None, 1)[1] if rest else "")
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

    def _history(self, rest: list[str], _text: str) -> Any:
        from ..history import history_view

        if len(rest) > 1:
            raise UsageError("usage: %durable history [SESSION]")
        current = current_session()
        return history_view(current.journal, rest[0] if rest else current.name)

    def _sql(self, _rest: list[str], text: str) -> Any:
        from ..sql import run_query

        if not text.strip():
            raise UsageError("usage: %durable sql QUERY  (views: sessions, steps, calls, approvals)")
        current = current_session()
        current.close_journal()  # a process cannot hold the file read-write and read-only at once
        return run_query(current.journal, text)

    def _fork(self, rest: list[str], _text: str) -> None:
        upto = None
        if len(rest) == 3 and rest[1] == "--from":
            upto = rest[2]
        elif len(rest) != 1:
            raise UsageError("usage: %durable fork NEW [--from STEP]")
        current = current_session()
        with current.journal.open() as store:
            copied = store.fork_session(current.name, rest[0], upto)
        forked = session(rest[0], current.journal)
        print(f"forked session {current.name!r} into {forked.name!r} ({len(copied)} steps: "
              f"{', '.join(copied) or 'none'}); now in {forked.name!r}, where those steps replay and later "
              f"steps run live. %durable session {current.name} goes back.")

    def _forget(self, rest: list[str], _text: str) -> None:
        if len(rest) != 1:
            raise UsageError("usage: %durable forget STEP")
        current = current_session()
        with current.journal.open() as store:
            store.forget_step(current.name, rest[0])
        print(f"step {rest[0]!r} of session {current.name!r} runs live next time; "
              "its recorded calls stay in history")

    def _prices(self, rest: list[str], _text: str) -> None:
        from ..prices import load_prices, render_prices

        if len(rest) > 1:
            raise UsageError("usage: %durable prices [FILE]  (JSON or TOML: {model: {input, output, currency}})")
        journal = current_session().journal
        print(load_prices(journal, rest[0]) if rest else render_prices(journal))

    def _export(self, rest: list[str], _text: str) -> None:
        from ..export import export_from_kernel

        if len(rest) != 1:
            raise UsageError("usage: %durable export PATH")
        print(export_from_kernel(current_session(), rest[0]))

    def _restore(self) -> None:
        current = current_session()
        with current.journal.open() as store:
            values = store.latest_variables(current.name)
        if not values:
            print(f"session {current.name!r} has no completed step with variables to restore")
            return
        restored, failed, withheld = restore(values, self.shell.user_ns)
        steps = sorted({values[name][0] for name in restored})
        print(f"restored {len(restored)} variables from {len(steps)} completed steps of session "
              f"{current.name!r}: {describe(restored)}")
        for step_name in sorted(set(withheld.values())):
            names = [name for name, made_by in withheld.items() if made_by == step_name]
            print(f"not restored: {describe(names)} (held a credential, never journaled); "
                  f"run the cell of step {step_name!r} again to make {'it' if len(names) == 1 else 'them'}",
                  file=sys.stderr)
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


def _note_setup_cell(result: Any) -> None:
    """Remember a plain cell that ran without error: an exported script runs it as its setup."""
    source = getattr(result.info, "raw_cell", None)
    if result.success and source and source.strip() and not _MAGIC.match(source):
        current_session().note_cell("setup", None, source)


def _note_earlier_cells(shell: Any) -> None:
    # Cells run before the extension was loaded (the last one is the loading cell, which the
    # post_run_cell event reports itself).
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", [])
    for source in history[1:-1]:
        if source.strip() and not _MAGIC.match(source):
            current_session().note_cell("setup", None, source)


def _register_widgets(shell: Any) -> None:
    # The widgets package depends on kernel_ext; it plugs its views in when it is installed.
    from .._shadowing import own_package

    with contextlib.suppress(ImportError):  # a user's own `widgets` module: the views fall back to text
        own_package("widgets").register(shell)


def load(shell: Any) -> None:
    _register_widgets(shell)
    _note_earlier_cells(shell)
    shell.events.register("post_run_cell", _note_setup_cell)
    if transform_durable_cell not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(transform_durable_cell)
    setattr(builtins, _RUNNER, run_durable_cell)
    shell.events.register("pre_run_cell", _remember_cell)
    shell.register_magics(DurableMagics)


def unload(shell: Any) -> None:
    if transform_durable_cell in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(transform_durable_cell)
    shell.events.unregister("pre_run_cell", _remember_cell)
    shell.events.unregister("post_run_cell", _note_setup_cell)
    if hasattr(builtins, _RUNNER):
        delattr(builtins, _RUNNER)
