"""The `durable` command line."""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..exit_codes import EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE
from .demo import DEFAULT_TURNS

if TYPE_CHECKING:
    from journal import Journal

MODEL_PORT = 8765
_DISTRIBUTION = "durable-kernel"
_JOURNAL_HELP = ("journal file (default: $DURABLE_JOURNAL, else `journal` in [tool.durable] of the nearest "
                 "pyproject.toml, else .durable/journal.duckdb here)")
# Commands that read no settings: they work whatever the settings say.
_NO_JOURNAL = ("model", "recover", "trust", "key")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message alone says what to change (and exit code 2)."""

    commands: tuple[str, ...] = ()  # the top-level parser's command names, for "did you mean"

    def error(self, message: str) -> NoReturn:
        unknown = _UNKNOWN_COMMAND.match(message) if self.commands else None
        if unknown:
            word = unknown.group(1)
            close = difflib.get_close_matches(word, self.commands, n=3, cutoff=0.5)
            hint = (f"did you mean {' or '.join(f'`{c}`' for c in close)}?" if close
                    else f"commands: {', '.join(self.commands)}")
            message = f"unknown command {word!r}; {hint} (see {self.prog} --help)"
        # Our number checks say "takes ..." and read best after the option itself: "--port takes ...".
        elif message.startswith("argument ") and ": takes " in message:
            message = message[len("argument "):].replace(": takes ", " takes ", 1)
        else:
            message += f" (see {self.prog} --help)"
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


# argparse's words for a command that is not one of the choices (the same since Python 3.2).
_UNKNOWN_COMMAND = re.compile(r"argument COMMAND: invalid choice: '([^']*)'")


class _Version(argparse.Action):
    """--version: the installed package's version, looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = f"{_DISTRIBUTION} {version(_DISTRIBUTION)}"
        except PackageNotFoundError:
            text = f"{_DISTRIBUTION} (version unknown: run from a source folder, not installed)"
        print(text)
        parser.exit(EXIT_COMPLETED)


def _number(kind: Callable[[str], float], wanted: str, fits: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type for a finite number that `fits`; its error says what is `wanted`."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not fits(value):
            raise argparse.ArgumentTypeError(f"takes {wanted}, got {text}")
        return value

    return convert


_COUNT = _number(int, "a whole number >= 1", lambda n: n >= 1)
_AMOUNT = _number(int, "a whole number >= 0", lambda n: n >= 0)


def _reads_journal(command: argparse.ArgumentParser, *, json: bool = False) -> None:
    command.add_argument("--journal", type=Path, help=_JOURNAL_HELP)
    if json:
        command.add_argument("--json", action="store_true", help="JSON for machines")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="durable", description="Durable execution for LLM agents in Jupyter notebooks.",
        epilog="Exit codes: 0 done; 1 failed, also when there is no journal at the path or the journal is "
        "damaged (then see `durable recover`); 2 usage error; `durable run` also 3 (suspended).",
    )
    parser.add_argument("--version", action=_Version, help="show the version of durable-kernel and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="kill the example agent notebook mid-run, resume it, and show what was saved",
        description="Runs notebooks/agent_demo.ipynb headless against the scripted model server, "
        "SIGKILLs its kernel during a model call, runs it again, and reports replayed and live calls.",
    )
    demo.add_argument("--dir", type=Path, help="working directory (default: a new temporary one)")
    demo.add_argument("--turns", type=_COUNT, default=DEFAULT_TURNS,
                      help=f"agent turns (model calls) before the summary (default {DEFAULT_TURNS})")
    demo.add_argument("--kill-at", type=_COUNT, default=7,
                      help="kill the kernel while this call is in flight (1 to TURNS + 1; default 7)")
    demo.add_argument("--latency", type=_number(float, "a number of seconds >= 0", lambda x: x >= 0), default=0.3,
                      help="seconds the scripted model takes per answer (default 0.3)")
    model = commands.add_parser(
        "model", help="serve the scripted stand-in model (not a model) on loopback, until Ctrl-C",
        description="Serves deterministic answers over the OpenAI, Anthropic and Gemini HTTP APIs on "
        "127.0.0.1, so notebooks and the README's examples run offline. It is NOT a model. First prints "
        "the environment lines that point the SDKs at it.",
    )
    model.add_argument("--port", type=_number(int, "0 to 65535", lambda n: 0 <= n <= 65535), default=MODEL_PORT,
                       help=f"port (default {MODEL_PORT}; 0 picks a free one)")
    model.add_argument("--reply-chars", type=_AMOUNT, default=0, metavar="N",
                       help="pad text answers to exactly N characters (default 0: as they are)")
    model.add_argument("--tool-rounds", type=_AMOUNT, default=1, metavar="N",
                       help="tool calls the model asks for after each user message before it answers in text")
    model.add_argument("--latency", type=_number(float, "a number of seconds >= 0", lambda x: x >= 0), default=0.0,
                       metavar="S", help="seconds each answer takes, so that a kernel can be killed mid-call "
                       "(default 0)")
    run = commands.add_parser("run", help="execute a notebook headless as a durable session",
                              description="Exit codes: 0 completed, 3 suspended (waiting for an approval, in a "
                              "long sleep, or over its budget), 1 failed, 2 usage error.")
    run.add_argument("notebook", type=Path, help="the .ipynb file; its kernel runs in the notebook's folder")
    run.add_argument("--session", help="session name (default: the notebook's name)")
    _reads_journal(run)
    run.add_argument("--strict", action="store_true",
                     help="replay only: any call that would go live fails the run (CI mode)")
    run.add_argument("-o", "--output", type=Path, help="write the executed notebook here")
    run.add_argument("--timeout", type=_number(float, "a positive number of seconds", lambda x: x > 0), default=600,
                     help="seconds a cell may run (default 600)")
    run.add_argument("--max-wait", type=_number(float, "a number of seconds >= 0", lambda x: x >= 0), default=60,
                     help="a sleep longer than this suspends the run (exit 3) until its wake-up time (default 60)")
    run.add_argument("--budget-tokens", type=_number(float, "a number of tokens > 0", lambda x: x > 0),
                     help="the session's token budget: no live model call once its recorded calls used this many")
    run.add_argument("--budget-usd", type=_number(float, "a number of US dollars > 0", lambda x: x > 0),
                     help="the session's budget in US dollars, with the prices set by `durable prices`")
    approve = commands.add_parser("approve", help="decide a pending approval",
                                  description="Records the decision; the session's next run goes on from it.")
    approve.add_argument("session", help="the session that waits, as `durable run` or `durable ls` prints it")
    approve.add_argument("key", help="the approval's key, as `durable run` or %%durable approvals prints it")
    approve.add_argument("--reject", action="store_true", help="reject instead of approving")
    approve.add_argument("--comment", help="why")
    _reads_dbos(approve)
    _reads_journal(approve)
    ls = commands.add_parser("ls", help="sessions of a journal with status, steps, calls, tokens",
                             description="Sessions of a journal: status, steps, calls, tokens, cost, pending "
                             "approvals, last activity.")
    _reads_dbos(ls)
    _reads_journal(ls, json=True)
    show = commands.add_parser("show", help="a session's steps and calls",
                               description="A session's steps in order, each with its calls.")
    show.add_argument("session", help="the session's name (see `durable ls`)")
    show.add_argument("--step", action="append", metavar="NAME", help="only this step (repeat for more)")
    show.add_argument("--last", type=_COUNT, metavar="N", help="only the last N steps")
    _reads_dbos(show)
    _reads_journal(show, json=True)
    settle = commands.add_parser("settle", help="decide an in-doubt tool call (see its InDoubtError)",
                                 description="--value JSON: it took effect and returned JSON; "
                                 "--retry: it did not, run it again.")
    settle.add_argument("session", help="the session of the call")
    settle.add_argument("call_id", type=_COUNT, metavar="CALL_ID",
                        help="the journal id of the call, as its InDoubtError names it")
    outcome = settle.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--value", help="the call's result, as JSON (a string needs quotes: '\"done\"')")
    outcome.add_argument("--retry", action="store_true", help="let the call run again on the next run")
    _reads_journal(settle)
    export = commands.add_parser("export", help="write a session as a standalone Python script",
                                 description="The script runs with plain `python` and is durable the same way: "
                                 "pointed at a journal it resumes from it.")
    export.add_argument("session", help="the session to export (see `durable ls`)")
    export.add_argument("-o", "--output", type=Path, required=True, help="the script to write")
    export.add_argument("--engine", choices=("script", "dbos"), default="script",
                        help="script: a standalone script on a journal (default); dbos: a DBOS application "
                        "(workflow per session, workers, queue) with the notebook's recording beside it")
    _reads_journal(export)
    sql = commands.add_parser("sql", help="query the journal (read-only)",
                              description="Views: sessions, steps, calls, approvals (see docs/inspecting.md).")
    sql.add_argument("query", help="SQL, quoted as one argument: \"SELECT * FROM calls\"")
    _reads_journal(sql, json=True)
    prices = commands.add_parser("prices", help="show the price table, or load it from a file",
                                 description="FILE is JSON or TOML: {model: {input: X, output: Y, currency: "
                                 "EUR}} with prices per million prompt (input) and completion (output) tokens.")
    prices.add_argument("file", nargs="?", type=Path,
                        help="a JSON or TOML price file to load (default: the `prices` setting's file if set; "
                        "without either, the table is shown)")
    _reads_journal(prices)
    gc = commands.add_parser(
        "gc", help="remove what nothing needs beside a journal: free lock files, stale packs, finished logs",
        description="Removes lock files of sessions no live process drives, replay packs no run can begin from, "
        "logs of dead processes once absorbed, files of processes killed while writing them, and blobs no "
        "record refers to (those only while no process drives a session). Prints one line of what it removed.")
    _reads_journal(gc)
    forget = commands.add_parser(
        "forget", help="remove a session: its records, replay packs and lock file",
        description="Removes every record of SESSION from the journal, its replay packs and its lock file, and "
        "the blobs no other session uses. Refused while a live process drives the session.")
    forget.add_argument("session", help="the session to remove (see `durable ls`)")
    _reads_journal(forget)
    recover = commands.add_parser("recover", help="copy what is readable of a damaged journal into a new one",
                                  description="Copies every session, step, step run, call and blob DuckDB can "
                                  "still read into NEW, and reports what could not be read. Exit codes: 0 "
                                  "everything was copied, 1 something was lost (see the report), 2 usage error "
                                  "(no journal at JOURNAL, or NEW exists).")
    recover.add_argument("damaged", metavar="JOURNAL", type=Path, help="the damaged journal (it is only read)")
    recover.add_argument("-o", "--output", type=Path, required=True, metavar="NEW",
                         help="the journal to write; must not exist")
    trust = commands.add_parser(
        "trust", help="let this user load the pickles of a journal from elsewhere (check its origin first)",
        description="A journal's pickles (tool results with no data form, restored variables) load only if "
        "this user wrote them. Trusting a journal records its pickles as this user's, beside this user's key "
        "(the journal is not changed); do it only for a journal whose origin you checked: loading a pickle "
        "runs code.")
    trust.add_argument("trusted", metavar="JOURNAL", type=Path, help="the journal to trust (it is only read)")
    key = commands.add_parser(
        "key", help="make a key file for an encrypted journal (DURABLE_KEY=FILE)",
        description="`durable key new FILE` writes a new random key to FILE (mode 0600; FILE must not exist). "
        "Point DURABLE_KEY (or %config Durable.key, or key in [tool.durable]) at FILE and what the agent saw "
        "and made is encrypted before it is written. Keep FILE out of version control, and keep a copy: "
        "without it the journal's content cannot be read.")
    key.add_argument("action", choices=["new"], help="new: make a key file")
    key.add_argument("file", metavar="FILE", type=Path, help="where to write the key")
    parser.commands = tuple(commands.choices)
    return parser


def _reads_dbos(command: argparse.ArgumentParser) -> None:
    command.add_argument("--dbos", nargs="?", const="", metavar="URL",
                         help="sessions that ran on DBOS: its system database (postgresql://... or sqlite:///...; "
                         "alone: $DBOS_SYSTEM_DATABASE_URL) instead of the journal")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_COMPLETED
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command not in _NO_JOURNAL:
        from ..config import SettingError, settings

        try:
            args.settings = settings(journal=getattr(args, "journal", None))
        except SettingError as exc:
            return _usage(args.command, str(exc))
        args.journal = args.settings.journal
    if args.command == "demo":
        if args.kill_at > args.turns + 1:
            return _usage("demo", f"--kill-at takes 1 to {args.turns + 1} (with --turns {args.turns} the notebook "
                          f"makes {args.turns + 1} calls), got {args.kill_at}")
        from .demo import run_demo

        return run_demo(args.dir, args.turns, args.kill_at, args.latency)
    if args.command == "model":
        return _model(args.port, args.reply_chars, args.tool_rounds, args.latency)
    if args.command == "run":
        from .run import run

        return run(args.notebook, session=args.session, journal=args.journal, output=args.output,
                   timeout=args.timeout, strict=args.strict, max_wait=args.max_wait,
                   budget_tokens=args.budget_tokens, budget_usd=args.budget_usd)
    if args.command == "recover":
        return _recover(args.damaged, args.output)
    if args.command == "trust":
        return _trust(args.trusted)
    if args.command == "key":
        return _new_key(args.file)
    return _journal_command(args)


def _usage(command: str, message: str) -> int:
    # One line, not argparse's usage block: the message alone says what to change.
    print(f"durable {command}: {message}", file=sys.stderr)
    return EXIT_USAGE


def _model(port: int, reply_chars: int, tool_rounds: int, latency: float = 0.0) -> int:
    from ..scripted.server import ScriptedModelServer, serve

    server = ScriptedModelServer("127.0.0.1", port, reply_chars=reply_chars, tool_rounds=tool_rounds)
    try:
        server.start()
        server.configure(delay=latency)
    except OSError as exc:
        print(f"durable model: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
              f"pass --port N (another port, or 0 for a free one)", file=sys.stderr)
        return EXIT_FAILED
    # The environment lines come first so that they can be copied, or read by a script, before the rest.
    return serve(server, [
        f"export OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY=unused",
        f"export ANTHROPIC_BASE_URL={server.url} ANTHROPIC_API_KEY=unused "
        f"GOOGLE_GEMINI_BASE_URL={server.url} GEMINI_API_KEY=unused",
        f"# durable model: the scripted stand-in server on {server.url} (deterministic answers, NOT a model).",
        "# Run the export lines in the shell that starts Jupyter (or your script). Ctrl-C stops the server.",
    ])


def _recover(damaged: Path, output: Path) -> int:
    from journal import JournalError, RecoverUsageError, recover

    try:
        report = recover(damaged, output)
    except JournalError as exc:
        print(f"durable recover: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, RecoverUsageError) else EXIT_FAILED
    print("\n".join(report.lines()))
    return EXIT_COMPLETED if report.complete else EXIT_FAILED


def _new_key(path: Path) -> int:
    import base64
    import os
    import secrets

    from journal import open_file

    try:
        fd = open_file(path, os.O_WRONLY, new=True)
        with os.fdopen(fd, "wb") as file:
            file.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=") + b"\n")
    except FileExistsError:
        return _usage("key", f"{path} exists; a key file is never overwritten (its journals need it)")
    except OSError as exc:
        print(f"durable key: cannot write {path} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote a new key to {path} (mode 0600); use it with: export DURABLE_KEY={os.path.abspath(path)}")
    return EXIT_COMPLETED


def _trust(path: Path) -> int:
    from journal import Journal, JournalError

    from .. import trust

    try:
        with Journal(path, create=False).open(read_only=True) as store:
            pickles = store.pickles()
    except JournalError as exc:
        print(f"durable trust: {exc}", file=sys.stderr)
        return EXIT_FAILED
    added = trust.trust(blob for _, blob in pickles)
    print(f"trusted {path}: {len(pickles)} pickles ({added} new to the trusted list in {trust.home()}); "
          "this user now loads them on replay and restore")
    return EXIT_COMPLETED


def _journal_command(args: argparse.Namespace) -> int:
    """The commands that read or edit a journal; a journal error is one line and exit code 1."""
    from journal import Journal, JournalError

    from ..errors import StepError

    journal = Journal(args.journal, create=False)  # a mistyped --journal must not leave a new journal behind
    try:
        if getattr(args, "dbos", None) is not None:
            return _dbos_command(args)
        if args.command == "approve":
            from ..approvals import decide_from_cli

            print(decide_from_cli(journal, args.session, args.key, not args.reject, args.comment))
            return EXIT_COMPLETED
        if args.command in ("ls", "show"):
            from .show import list_sessions, show_session

            if args.command == "ls":
                return _behind(args.command, journal, list_sessions(journal, args.json))
            return _behind(args.command, journal, show_session(journal, args.session, args.json, steps=args.step,
                                                                   last=args.last))
        if args.command in ("gc", "forget"):
            from . import tidy

            return tidy.collect(journal) if args.command == "gc" else tidy.forget(journal, args.session)
        if args.command == "settle":
            import json

            from ..runtime import session, settle

            session(args.session, journal)
            if args.retry:
                print(settle(args.call_id, retry=True))
            else:
                try:
                    value = json.loads(args.value)
                except ValueError:
                    raise StepError(f"--value takes JSON (a string needs quotes: '\"done\"'); "
                                    f"got {args.value!r}") from None
                print(settle(args.call_id, value=value))
            return EXIT_COMPLETED
        if args.command == "export" and args.engine == "dbos":
            from ..engines.dbos.export import export_dbos

            print(export_dbos(journal, args.session, args.output))
            return EXIT_COMPLETED
        if args.command == "export":
            from ..export import export_from_journal

            print(export_from_journal(journal, args.session, args.output))
            return EXIT_COMPLETED
        if args.command == "sql":
            from ..sql import print_query

            return _behind(args.command, journal, print_query(journal, args.query, args.json))
        if args.command == "prices":
            from ..prices import load_prices, render_prices

            source = args.file or args.settings.prices
            if source is not None:
                print(load_prices(journal, source))
            if args.file is None:
                print(render_prices(journal))
            return EXIT_COMPLETED
    except (StepError, JournalError) as exc:
        print(f"durable {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_USAGE


def _behind(command: str, journal: Journal, code: int) -> int:
    """A read that could not take the logs in (a full disk) answered from DuckDB alone: say what it left out."""
    if journal.behind:
        print(f"durable {command}: {journal.behind}", file=sys.stderr)
    return code


def _dbos_command(args: argparse.Namespace) -> int:
    """ls, show and approve on sessions that ran on DBOS (see engines/dbos/history.py)."""
    from ..engines.dbos import history as dbos_history

    url = dbos_history.resolve_url(args.dbos)
    if args.command == "ls":
        return dbos_history.list_dbos_sessions(url, args.json)
    if args.command == "show":
        return dbos_history.show_dbos_session(url, args.session, args.json)
    print(dbos_history.decide_dbos(url, args.session, args.key, not args.reject, args.comment))
    return EXIT_COMPLETED


if __name__ == "__main__":
    sys.exit(main())
