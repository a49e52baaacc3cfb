"""The `durable` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, EXIT_SUSPENDED = 0, 1, 2, 3


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
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
