"""The durable journal: a DuckDB file of sessions, steps, calls and content-addressed blobs.

Importable without IPython, ipywidgets or openai.
"""

from ._blobs import Split, canonical_json, digest, join_document, split_document
from ._claim import hold as hold_session
from ._claim import let_go as let_go_of_session
from ._files import make_dirs, open_file, write_file
from ._holder import Holder
from ._ids import reserve as reserve_call_ids
from ._schema import LATEST as SCHEMA_VERSION
from ._seal import JournalKeyError
from ._seal import use as use_key
from ._store import Journal, RecordedCall, StepRun, Store, default_path
from ._time import now
from ._writer import StepWriter
from .errors import (
    JournalBusyError,
    JournalDamagedError,
    JournalError,
    JournalFullError,
    JournalIsFolderError,
    SchemaTooNewError,
    SessionHeldError,
)

# What only a command uses (recovery, garbage collection) is imported on first use: a kernel that loads
# the extension does not pay for it.
_LAZY = {
    "RecoverUsageError": ("._recover", "RecoverUsageError"), "Recovery": ("._recover", "Recovery"),
    "recover": ("._recover", "recover"), "Removed": ("._gc", "Removed"),
    "collect_garbage": ("._gc", "collect"), "forget_session": ("._gc", "forget"),
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module, __name__), attribute)
    globals()[name] = value
    return value


__all__ = [
    "SCHEMA_VERSION",
    "Holder",
    "Journal",
    "JournalBusyError",
    "JournalDamagedError",
    "JournalError",
    "JournalFullError",
    "JournalIsFolderError",
    "JournalKeyError",
    "RecordedCall",
    "RecoverUsageError",
    "Recovery",
    "Removed",
    "SchemaTooNewError",
    "SessionHeldError",
    "Split",
    "StepRun",
    "StepWriter",
    "Store",
    "canonical_json",
    "collect_garbage",
    "default_path",
    "digest",
    "forget_session",
    "hold_session",
    "join_document",
    "let_go_of_session",
    "make_dirs",
    "now",
    "open_file",
    "recover",
    "reserve_call_ids",
    "split_document",
    "use_key",
    "write_file",
]
