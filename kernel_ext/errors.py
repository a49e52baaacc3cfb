"""Errors raised by the durable runtime.

    DurableError
    ├── StepError              a step was used wrongly (nested steps, no step where one is needed)
    └── StrictReplayError      --strict: a call would have gone live; names step, call and difference

Journal errors (`journal.JournalBusyError`, `journal.SessionHeldError`, ...) pass through unchanged.
"""

from __future__ import annotations


class DurableError(RuntimeError):
    """Base class of the runtime's errors."""


class StepError(DurableError):
    """A step was entered or used in a way the durable model does not allow."""


class StrictReplayError(DurableError):
    """In strict mode a call found no recording with the same request."""

    def __init__(self, step: str, call: str, difference: str) -> None:
        self.step, self.call, self.difference = step, call, difference
        super().__init__(
            f"strict replay: step {step!r}, {call} would go live: {difference}. "
            "Re-record it without --strict, or undo the change."
        )
