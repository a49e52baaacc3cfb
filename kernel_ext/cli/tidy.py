"""`durable gc` and `durable forget`: what a journal leaves beside itself, and whole sessions, removed."""

from __future__ import annotations

import sys

from journal import Journal, Removed, SessionHeldError, collect_garbage, forget_session

from ..exit_codes import EXIT_COMPLETED, EXIT_FAILED


def collect(journal: Journal) -> int:
    removed = collect_garbage(journal)
    held = (f"; kept {removed.held} lock file{'s' if removed.held != 1 else ''} of sessions a live process drives"
            if removed.held else "")
    print(f"durable gc: removed {_files(removed)}{_blobs(removed)}{held}")
    return EXIT_COMPLETED


def forget(journal: Journal, session: str) -> int:
    try:
        removed = forget_session(journal, session)
    except SessionHeldError as exc:
        print(f"durable forget: session {session!r} is being driven by {exc.holder}; stop that process first, "
              "then run it again", file=sys.stderr)
        return EXIT_FAILED
    records = f"{removed.records} record{'s' if removed.records != 1 else ''}"
    print(f"durable forget: removed session {session!r}: {records} from the journal, {_files(removed)}"
          f"{_blobs(removed)}")
    return EXIT_COMPLETED


def _files(removed: Removed) -> str:
    return f"{removed.files()} ({removed.file_bytes:,} bytes)"


def _blobs(removed: Removed) -> str:
    if removed.blobs_kept:
        return (f"; {removed.blobs_kept} blob{'s' if removed.blobs_kept != 1 else ''} no record refers to stay while "
                "a process drives a session (run durable gc when none does)")
    if removed.blobs:
        return (f", and {removed.blobs} blob{'s' if removed.blobs != 1 else ''} no record refers to "
                f"({removed.blob_bytes:,} bytes of the journal file)")
    return ""
