"""The IPython front end: `%load_ext kernel_ext`, the `%%durable` cell magic, the `%durable` line magic.

A cell magic is a plain function call and cannot `await`. ipykernel runs a cell with
top-level `await` on its event loop, and on ipykernel >= 7.4 widget messages are handled
while such a cell is suspended. So an input transformer rewrites a `%%durable` cell into one
awaited call, and that call compiles the body with top-level await allowed and runs it in
the user's namespace, inside a durable step.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import ArgDecorator, argument, kwds, magic_arguments

from journal import JournalError, digest

from .. import config
from ..budgets import make_budget
from ..errors import StepError
from ..runtime import Session, current_session, follow_journal_setting, session, settle, unnamed_session_notice
from ..status import render_approvals, render_status
from .interrupts import CellInterrupts
from .outputs import OutputRecorder
from .progress import ProgressLine
from .variables import VariableTracker, describe, restore

_MAGIC = re.compile(r"%%durable(?=\s|$)")
_EXPORT = re.compile(r"\s*(?:%durable\s+export\b|#|$)")
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


async def run_durable_cell(args: str, key: str) -> Any:
    """Run a transformed `%%durable` cell as a durable step; return its last expression's value."""
    __tracebackhide__ = True
    from IPython import get_ipython

    shell = get_ipython()
    body = _pending.get(key)
    if body is None:
        raise UsageError("this %%durable cell was not prepared by kernel_ext; run the cell again")
    options = _parse(DurableMagics.durable_cell.parser, args)
    if options.strict and options.rerun:
        raise UsageError("%%durable: --strict replays only and --rerun sends every call live; choose one")
    chosen = _settings()
    if options.rerun and chosen.strict:
        raise UsageError(f"%%durable --rerun: strict is on ({chosen.origin('strict')}), so no call may go live; "
                         "drop --rerun, or turn strict off where it is set")
    name = options.name or _default_step_name(body)
    _follow_settings(chosen)
    notice = unnamed_session_notice() if _headless(shell) else None
    if notice:
        print(notice, file=sys.stderr)
    current_session().note_cell("step", name, f"%%durable {args}".rstrip() + "\n" + body)
    _load_configured_prices(chosen, current_session())
    main, last = _compile(shell, body)
    tracker = VariableTracker(body, shell.user_ns)
    try:
        budget = make_budget(f"step {name!r}", f"%%durable {args}".rstrip(), options.budget_tokens,
                             options.budget_usd)
        scope = current_session().step(name, source=body, strict=options.strict, rerun=options.rerun,
                                       budget=budget)
        active = scope.__enter__()
    except (StepError, JournalError) as exc:
        raise UsageError(str(exc)) from None
    value = None
    recorder = OutputRecorder(shell)
    progress = ProgressLine()
    if chosen.progress:  # off, the line appears once, as the step's summary
        active.observer = progress
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
    active.variables, secret = tracker.changed()
    with _journal_errors_in_one_line():
        scope.__exit__(None, None, None)
    progress.finish(active)
    if secret:
        holds = "holds a credential" if len(secret) == 1 else "hold credentials"
        print(f"durable: {describe(secret)} not journaled ({holds}); after %durable restore, "
              "re-run this cell to bring them back", file=sys.stderr)
    return value


@contextlib.contextmanager
def _journal_errors_in_one_line() -> Iterator[None]:
    try:
        yield
    except JournalError as exc:
        raise UsageError(str(exc)) from None


def _headless(shell: Any) -> bool:
    """Whether the kernel runs a notebook with nobody at it (nbclient, and so nbconvert and papermill).

    ipykernel keeps in `_allow_stdin` what the client asked for the cell: nbclient always refuses
    input(), a frontend with a person at it allows it.
    """
    kernel = getattr(shell, "kernel", None)
    return kernel is not None and getattr(kernel, "_allow_stdin", True) is False


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


def _settings() -> config.Settings:
    try:
        return config.settings()
    except config.SettingError as exc:
        raise UsageError(str(exc)) from None


def _follow_settings(chosen: config.Settings) -> None:
    # The journal setting may have changed since the last cell (%env, pyproject.toml, %config).
    moved = follow_journal_setting(chosen)
    if moved:
        print(moved)


def _journal_setting_changed(name: str) -> None:
    if name == "journal":
        _follow_settings(config.settings())


_prices_loaded: dict[Path, tuple[Path, int, int]] = {}  # per journal: the price file as last loaded into it


def _load_configured_prices(chosen: config.Settings, current: Session) -> None:
    """Load the `prices` setting's file into the session's journal when it is new there or has changed."""
    from ..prices import load_prices

    if chosen.prices is None:
        return
    try:
        stat = chosen.prices.stat()
    except OSError as exc:
        raise UsageError(f"cannot read the price file {chosen.prices} (prices setting from "
                         f"{chosen.origin('prices')}): {exc.strerror or exc}") from None
    loaded = (chosen.prices, stat.st_mtime_ns, stat.st_size)
    if _prices_loaded.get(current.journal.path) == loaded:
        return
    try:
        load_prices(current.journal, chosen.prices)
    except (StepError, JournalError) as exc:
        raise UsageError(f"{exc} (prices setting from {chosen.origin('prices')})") from None
    _prices_loaded[current.journal.path] = loaded


def _parse(parser: Any, line: str) -> Any:
    """Parse a magic's arguments; a usage error is one line that shows the valid usage."""
    try:
        return parser.parse_argstring(line)
    except (UsageError, ValueError) as exc:  # ValueError: an unbalanced quote
        raise UsageError(f"%{parser.prog}: {exc}; usage: {_usage(parser)}") from None


def _usage(parser: Any) -> str:
    # IPython's formatter writes usage as an RST block ("::\n\n  %..."); one line reads better in an error.
    return " ".join(parser.format_usage().replace("::", "", 1).split())


# (name, arguments as shown in usage, what it does, how each argument is declared)
_SUBCOMMANDS: tuple[tuple[str, str, str, tuple[tuple[tuple[str, ...], dict[str, Any]], ...]], ...] = (
    ("session", "NAME [--budget-tokens N] [--budget-usd X]",
     "switch to (or create) the session NAME; its steps replay from the journal",
     ((("name",), {"metavar": "NAME", "help": "the session's name (default session: the notebook's name)"}),
      (("--budget-tokens",), {"type": float, "metavar": "N",
                              "help": "no live model call once the session's recorded calls used N tokens"}),
      (("--budget-usd",), {"type": float, "metavar": "X",
                           "help": "the same in US dollars, with the prices of %%durable prices"}))),
    ("status", "", "the current session's steps and calls, with tokens and cost", ()),
    ("history", "[SESSION]", "steps and calls to browse: requests, responses, tokens, cost",
     ((("session",), {"nargs": "?", "metavar": "SESSION", "help": "another session (default: the current one)"}),)),
    ("sql", "QUERY", "query the views sessions, steps, calls, approvals (read-only)",
     ((("query",), {"nargs": "+", "metavar": "QUERY", "help": "SQL: the rest of the line, as typed"}),)),
    ("fork", "NEW [--from STEP]", "copy this session into NEW and switch to it; the original stays as it is",
     ((("new",), {"metavar": "NEW", "help": "the new session's name"}),
      (("--from",), {"dest": "upto", "metavar": "STEP",
                     "help": "copy only the steps first run up to and including STEP (default: all)"}))),
    ("forget", "STEP", "STEP runs live next time; its records stay in history",
     ((("step",), {"metavar": "STEP", "help": "a step of the current session"}),)),
    ("restore", "", "bring back the variables of the session's completed steps", ()),
    ("settle", "CALL_ID --value JSON|--retry", "decide an in-doubt tool call (its InDoubtError names it)",
     ((("call_id",), {"type": int, "metavar": "CALL_ID", "help": "the journal id of the call"}),
      (("--value",), {"metavar": "JSON", "help": "it took effect and returned JSON (the rest of the line; "
                                                 "a string needs quotes: '\"done\"')"}),
      (("--retry",), {"action": "store_true", "help": "it did not take effect: run it again"}))),
    ("approvals", "", "pending and decided approvals of the session", ()),
    ("prices", "[FILE]", "show the price table, or load it from a JSON/TOML file",
     ((("file",), {"nargs": "?", "metavar": "FILE", "help": "{model: {input, output, currency}} per million tokens "
                                                             "(default: the prices setting's file, if set)"}),)),
    ("export", "PATH [--engine dbos]", "write the session as a standalone Python script (or a DBOS app)",
     ((("path",), {"metavar": "PATH", "help": "the script to write"}),
      (("--engine",), {"choices": ("script", "dbos"), "default": "script",
                       "help": "dbos: a DBOS application with the notebook's recording beside it"}))),
)
_COMMANDS = ", ".join(f"{name} {shown}".strip() for name, shown, _, _ in _SUBCOMMANDS)


class _subcommands(ArgDecorator):  # noqa: N801 - a decorator, named like IPython's own
    """Add the `%durable` subcommands to its magic_arguments parser."""

    def add_to_parser(self, parser: Any, group: Any) -> None:
        # The list argparse would print is left out: `_describe_commands` shows each command with its arguments.
        commands = parser.add_subparsers(dest="command", help=argparse.SUPPRESS)
        parser.commands = {}
        for name, shown, does, arguments in _SUBCOMMANDS:
            sub = commands.add_parser(name, help=does, description=does, prog=f"durable {name}",
                                      usage=f"%(prog)s {shown}".rstrip())
            for flags, options in arguments:
                sub.add_argument(*flags, **options)
            parser.commands[name] = sub


def _describe_commands(parser: Any) -> str:
    """Each subcommand's usage and arguments, for `%durable?` (argparse lists only the names)."""
    lines = ["", "Commands:"]
    for name, shown, does, _ in _SUBCOMMANDS:
        lines.append(f"  %durable {name} {shown}".rstrip())
        lines.append(f"      {does}")
        for action in parser.commands[name]._actions:
            if action.help:
                label = action.metavar if not action.option_strings else ", ".join(action.option_strings)
                lines.append(f"      {label}: {action.help}")
    lines.append("")
    from ..config import SETTINGS

    lines.append(f"Settings ({', '.join(SETTINGS)}): %config Durable, and docs/settings.md.")
    return "\n".join(lines) + "\n"


@magics_class
class DurableMagics(Magics):
    @cell_magic("durable")
    @magic_arguments("%durable")
    @kwds(usage="%(prog)s [NAME] [--strict] [--rerun] [--budget-tokens N] [--budget-usd X]")
    @argument("name", nargs="?", metavar="NAME", help="step name; default: the cell's id")
    @argument("--strict", action="store_true",
              help="replay only: a call that would go live is an error (also on for every step when the "
              "strict setting is)")
    @argument("--rerun", action="store_true",
              help="send every call live again; older records stay in history (refused while strict is on)")
    @argument("--budget-tokens", type=float, metavar="N",
              help="no live model call once the step's recorded model calls used N tokens (BudgetExceeded)")
    @argument("--budget-usd", type=float, metavar="X",
              help="the same in US dollars, with the prices of %%durable prices")
    def durable_cell(self, line: str, cell: str) -> Any:
        """Run the cell as the durable step NAME.

        Every model and tool call inside it is journaled and, when the cell runs again (a re-run,
        Run All after a restart), replayed from the journal instead of sent again. The body may use
        top-level `await`. Settings (journal, strict, progress, ...): %config Durable.
        """
        return _run_sync(run_durable_cell(line, _prepare(cell)))

    @line_magic("durable")
    @magic_arguments("durable")
    @kwds(usage="%(prog)s COMMAND [ARGUMENTS]")
    @_subcommands()
    def durable_line(self, line: str) -> Any:
        """The durable session of this notebook: switch it, inspect it, export it."""
        words = line.split(None, 1)
        if not words:
            raise UsageError(f"usage: %durable COMMAND; commands: {_COMMANDS}  (see %durable?)")
        command, rest = words[0], words[1] if len(words) > 1 else ""
        parser = self.durable_line.parser.commands.get(command)
        if parser is None:
            raise UsageError(f"unknown %durable command {command!r}; available: {_COMMANDS}  (see %durable?)")
        _follow_settings(_settings())
        try:
            if command == "sql":  # the query is taken as typed: quotes belong to SQL
                if not rest.strip():
                    raise UsageError(f"%durable sql: QUERY is missing; usage: {_usage(parser)}  "
                                     "(views: sessions, steps, calls, approvals)")
                return self._sql(rest)
            if command == "settle":
                return self._settle(parser, rest)
            options = _parse(parser, rest)
            return getattr(self, f"_{command}")(options)
        except (JournalError, StepError, config.SettingError) as exc:
            raise UsageError(str(exc)) from None

    durable_line.__doc__ += _describe_commands(durable_line.parser)

    def _session(self, options: Any) -> None:
        current = session(options.name)
        flags = [f"--budget-tokens {options.budget_tokens:g}"] if options.budget_tokens is not None else []
        flags += [f"--budget-usd {options.budget_usd:g}"] if options.budget_usd is not None else []
        budget = make_budget(f"session {current.name!r}", " ".join(["%durable session", current.name, *flags]),
                             options.budget_tokens, options.budget_usd)
        if budget is not None:
            current.budget = budget
        budget = f", budget {current.budget.shown()}" if current.budget is not None else ""
        print(f"durable session {current.name!r} in {current.journal.path}{budget}")

    def _status(self, _options: Any) -> None:
        current = current_session()
        if current.journal.path.exists():  # loading prices would create the journal: a look must not
            _load_configured_prices(_settings(), current)
        print(render_status(current))

    def _approvals(self, _options: Any) -> None:
        print(render_approvals(current_session()))

    def _history(self, options: Any) -> Any:
        from ..history import history_view

        current = _with_journal(current_session())
        _load_configured_prices(_settings(), current)
        return history_view(current.journal, options.session or current.name)

    def _sql(self, text: str) -> Any:
        from ..sql import run_query

        current = _with_journal(current_session())
        current.close_journal()  # a process cannot hold the file read-write and read-only at once
        return run_query(current.journal, text)

    def _fork(self, options: Any) -> None:
        current = _with_journal(current_session())
        with current.journal.open() as store:
            copied = store.fork_session(current.name, options.new, options.upto)
        forked = session(options.new, current.journal)
        print(f"forked session {current.name!r} into {forked.name!r} ({len(copied)} steps: "
              f"{', '.join(copied) or 'none'}); now in {forked.name!r}, where those steps replay and later "
              f"steps run live. %durable session {current.name} goes back.")

    def _forget(self, options: Any) -> None:
        current = _with_journal(current_session())
        with current.journal.open() as store:
            store.forget_step(current.name, options.step)
        print(f"step {options.step!r} of session {current.name!r} runs live next time; "
              "its recorded calls stay in history")

    def _prices(self, options: Any) -> None:
        from ..prices import load_prices, render_prices

        current = current_session()
        if options.file:
            print(load_prices(current.journal, options.file))
            return
        if not current.journal.path.exists():
            print(f"no journal at {current.journal.path} yet, so no prices in it: load yours with %durable prices "
                  "FILE (the prices setting's file is loaded at the first %%durable cell)")
            return
        _load_configured_prices(_settings(), current)
        print(render_prices(current.journal))

    def _export(self, options: Any) -> None:
        from ..export import export_from_kernel

        _with_journal(current_session())
        if options.engine == "dbos":
            from ..engines.dbos.export import export_dbos

            current = current_session()
            current.flush_cells()
            print(export_dbos(current.journal, current.name, options.path))
            return
        print(export_from_kernel(current_session(), options.path))

    def _restore(self, _options: Any) -> None:
        current = current_session()
        values: dict[str, Any] = {}
        if current.journal.path.exists():
            with current.journal.open() as store:
                values = store.latest_variables(current.name)
        if not values:
            print(f"session {current.name!r} has no completed step with variables to restore")
            return
        done = restore(values, self.shell.user_ns, current.journal.path)
        steps = sorted({values[name][0] for name in done.restored})
        print(f"restored {len(done.restored)} variables from {len(steps)} completed steps of session "
              f"{current.name!r}: {describe(done.restored)}")
        for why, names_by_step in (("held a credential, never journaled", done.withheld),
                                   ("could not be pickled", done.unpicklable)):
            for step_name in sorted(set(names_by_step.values())):
                names = [name for name, made_by in names_by_step.items() if made_by == step_name]
                print(f"not restored: {describe(names)} ({why}); run the cell of step {step_name!r} again to "
                      f"make {'it' if len(names) == 1 else 'them'}", file=sys.stderr)
        if done.failed:
            print(f"could not unpickle: {describe(done.failed)}", file=sys.stderr)
        if done.untrusted:
            print(f"not restored: {describe(done.untrusted)}: pickles this user did not write or trust (loading "
                  f"runs code); if the journal is yours or you checked where it came from: durable trust "
                  f"{current.journal.path}", file=sys.stderr)

    def _settle(self, parser: Any, rest: str) -> None:
        # JSON is taken as typed (its quotes are its own), so only what precedes --value is parsed.
        head, value_flag, text = rest.partition("--value")
        options = _parse(parser, head + (" --value JSON" if value_flag else ""))
        if bool(value_flag) == options.retry:
            both = "--value and --retry exclude each other" if options.retry else "--value JSON or --retry is missing"
            raise UsageError(f"%durable settle: {both}; usage: {_usage(parser)}")
        _with_journal(current_session())
        if options.retry:
            print(settle(options.call_id, retry=True))
            return
        try:
            value = json.loads(text)
        except ValueError:
            raise UsageError(f"--value takes JSON (for a string, quote it: '\"done\"'); got {text.strip()!r}") from None
        print(settle(options.call_id, value=value))


def _with_journal(current: Session) -> Session:
    """`current`, if its journal exists: a command that reads it must not create it (nor its folder)."""
    if not current.journal.path.exists():
        raise UsageError(f"no journal at {current.journal.path} yet: run a %%durable cell first (or point the "
                         "journal setting at one: %config Durable.journal = PATH)")
    return current


def _remember_cell(info: Any) -> None:
    from IPython import get_ipython

    # IPython has already counted this cell when pre_run_cell fires.
    count = get_ipython().execution_count
    _state["cell_id"] = getattr(info, "cell_id", None)
    _state["number"] = count - 1 if getattr(info, "store_history", False) else count


def _note_setup_cell(result: Any) -> None:
    """Remember a plain cell that ran without error: an exported script runs it as its setup."""
    source = getattr(result.info, "raw_cell", None)
    # A cell that only exports the session writes the script: the script has no use for it.
    exports = all(_EXPORT.match(line) for line in (source or "").splitlines())
    if result.success and source and source.strip() and not _MAGIC.match(source) and not exports:
        with contextlib.suppress(config.SettingError):  # not after every cell: the next durable cell says it
            current_session().note_cell("setup", None, source)


def _note_earlier_cells(shell: Any) -> None:
    # Cells run before the extension was loaded (the last one is the loading cell, which the
    # post_run_cell event reports itself).
    history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", [])
    for source in history[1:-1]:
        if source.strip() and not _MAGIC.match(source):
            with contextlib.suppress(config.SettingError):  # the first durable cell says what is wrong
                current_session().note_cell("setup", None, source)


def _register_widgets(shell: Any) -> None:
    # The widgets package depends on kernel_ext; it plugs its views in when it is installed.
    from .._shadowing import own_package

    with contextlib.suppress(ImportError):  # a user's own `widgets` module: the views fall back to text
        own_package("widgets").register(shell)


def load(shell: Any) -> None:
    config.register(shell)  # first: the session made below already follows c.Durable.* from config files
    with contextlib.suppress(config.SettingError):  # the first durable cell says what is wrong
        follow_journal_setting(config.settings())  # notes where the journal setting points now
    config.on_change(_journal_setting_changed)
    _register_widgets(shell)
    _note_earlier_cells(shell)
    shell.events.register("post_run_cell", _note_setup_cell)
    if transform_durable_cell not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(transform_durable_cell)
    setattr(builtins, _RUNNER, run_durable_cell)
    shell.events.register("pre_run_cell", _remember_cell)
    shell.register_magics(DurableMagics)


def unload(shell: Any) -> None:
    config.unregister(shell)
    if transform_durable_cell in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(transform_durable_cell)
    shell.events.unregister("pre_run_cell", _remember_cell)
    shell.events.unregister("post_run_cell", _note_setup_cell)
    if hasattr(builtins, _RUNNER):
        delattr(builtins, _RUNNER)
