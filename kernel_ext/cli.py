"""The `durable` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_codes import EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE

_JOURNAL_HELP = "journal file (default: $DURABLE_JOURNAL, else .durable/journal.duckdb here)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durable", description="Durable execution for LLM agents in Jupyter notebooks."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="kill the example agent notebook mid-run, resume it, and show what was saved",
        description="Runs notebooks/agent_demo.ipynb headless against the scripted model server, "
        "SIGKILLs its kernel during a model call, runs it again, and reports replayed and live calls.",
    )
    demo.add_argument("--dir", type=Path, help="working directory (default: a new temporary one)")
    demo.add_argument("--turns", type=int, default=12, help="agent turns (model calls) before the summary")
    demo.add_argument("--kill-at", type=int, default=7, help="kill the kernel while this call is in flight")
    demo.add_argument("--latency", type=float, default=0.3, help="seconds the scripted model takes per answer")
    run = commands.add_parser("run", help="execute a notebook headless as a durable session",
                              description="Exit codes: 0 completed, 3 suspended (waiting for an approval), "
                              "1 failed, 2 usage error.")
    run.add_argument("notebook", type=Path)
    run.add_argument("--session", help="session name (default: the notebook's name)")
    run.add_argument("--journal", type=Path, help=_JOURNAL_HELP)
    run.add_argument("--strict", action="store_true",
                     help="replay only: any call that would go live fails the run (CI mode)")
    run.add_argument("-o", "--output", type=Path, help="write the executed notebook here")
    run.add_argument("--timeout", type=float, default=600, help="seconds a cell may run (default 600)")
    approve = commands.add_parser("approve", help="decide a pending approval",
                                  description="Records the decision; the session's next run goes on from it.")
    approve.add_argument("session")
    approve.add_argument("key", help="the approval's key, as `durable run` or %%durable approvals prints it")
    approve.add_argument("--reject", action="store_true", help="reject instead of approving")
    approve.add_argument("--comment", help="why")
    approve.add_argument("--journal", type=Path, help=_JOURNAL_HELP)
    ls = commands.add_parser("ls", help="sessions of a journal with status, steps, calls, tokens")
    ls.add_argument("--journal", type=Path, help=_JOURNAL_HELP)
    ls.add_argument("--json", action="store_true", help="JSON for machines")
    show = commands.add_parser("show", help="a session's steps and calls")
    show.add_argument("session")
    show.add_argument("--journal", type=Path, help=_JOURNAL_HELP)
    show.add_argument("--json", action="store_true", help="JSON for machines")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_COMPLETED
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.dir, args.turns, args.kill_at, args.latency)
    if args.command == "run":
        from .headless import run

        return run(args.notebook, session=args.session, journal=args.journal, output=args.output,
                   timeout=args.timeout, strict=args.strict)
    if args.command == "approve":
        from journal import Journal, JournalError

        from .approvals import decide_from_cli
        from .errors import StepError

        try:
            print(decide_from_cli(Journal(args.journal), args.session, args.key, not args.reject, args.comment))
        except (StepError, JournalError) as exc:
            print(f"durable approve: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_COMPLETED
    if args.command in ("ls", "show"):
        from journal import Journal, JournalError

        from .inspect_cli import list_sessions, show_session

        try:
            if args.command == "ls":
                return list_sessions(Journal(args.journal), args.json)
            return show_session(Journal(args.journal), args.session, args.json)
        except JournalError as exc:
            print(f"durable {args.command}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
