"""Errors raised by the journal.

    JournalError
    ├── JournalBusyError     another process holds the journal file open (DuckDB locks it per process)
    ├── JournalDamagedError  DuckDB cannot read part of the file (cut short, overwritten, failing its checksums)
    ├── JournalFullError     the disk is full: what was being written is not in the journal
    ├── JournalIsFolderError the journal path names a folder, not a file
    ├── SchemaTooNewError    the journal was written by a newer release
    └── SessionHeldError     another live process is driving the same session
"""

from __future__ import annotations

import os
import shlex


class JournalError(RuntimeError):
    """Base class of the journal's errors."""


class JournalBusyError(JournalError):
    """The journal file stayed locked by another process for longer than we were willing to wait."""

    def __init__(self, path: str, holder: str, waited: float) -> None:
        self.path, self.holder, self.waited = path, holder, waited
        super().__init__(
            f"journal {path} is in use by {holder} (waited {waited:g} s); "
            "wait until that process is idle or finished, or point DURABLE_JOURNAL at another file"
        )


class JournalDamagedError(JournalError):
    """Part of the journal file cannot be read; nothing more is written to it (see `durable recover`)."""

    def __init__(self, path: str, reason: str, *, before_writing: bool = True) -> None:
        path = os.path.abspath(path)  # the command it suggests must work from any folder
        self.path, self.reason = path, reason
        written = "nothing was written to it" if before_writing else "nothing more was written to it"
        super().__init__(
            f"journal {path} is damaged (DuckDB: {reason}); {written}. Salvage what is readable with "
            f"`durable recover {shlex.quote(path)} -o NEW.duckdb`, then point DURABLE_JOURNAL at NEW"
        )


class JournalFullError(JournalError):
    """The disk holding the journal is full: what was being written is not in the journal, and says so."""

    def __init__(self, what: str, then: str = "free space, then run it again") -> None:
        self.what = what
        super().__init__(f"the disk is full: {what}; {then}")


class JournalIsFolderError(JournalError):
    """The journal path is a folder; a journal is one file (DuckDB's), with its logs beside it."""

    def __init__(self, path: str) -> None:
        path = os.path.abspath(path)
        self.path = path
        super().__init__(
            f"journal path {path} is a folder, not a journal file; point DURABLE_JOURNAL (or --journal, or the "
            f"journal setting) at a file, e.g. {os.path.join(path, 'journal.duckdb')}"
        )


class SchemaTooNewError(JournalError):
    """The journal's schema version is newer than this release understands."""

    def __init__(self, path: str | os.PathLike[str] | None, found: int, known: int) -> None:
        self.path, self.found, self.known = os.path.abspath(path) if path else None, found, known
        which = f"journal {self.path}" if self.path else "the journal"
        super().__init__(
            f"{which} has schema version {found}, newer than this durable-kernel understands ({known}); "
            "it is left as it is: upgrade durable-kernel (pip install -U durable-kernel) to use it"
        )


class SessionHeldError(JournalError):
    """Another live process drives the session; two writers would interleave its steps."""

    def __init__(self, session: str, holder: str) -> None:
        self.session, self.holder = session, holder
        super().__init__(
            f"session {session!r} is being driven by {holder}; stop that kernel, "
            f"or choose another session name (%durable session NAME)"
        )
