"""Errors raised by the durable runtime.

    DurableError
    ├── StepError              a step was used wrongly (nested steps, no step where one is needed)
    ├── StrictReplayError      --strict: a call would have gone live; names step, call and difference
    ├── UnjournaledToolError   --strict: a request carries tool results from functions that are not journaled
    ├── InDoubtError           a non-idempotent tool started but its process died before it finished
    ├── UnreadRejectionError   a step went on past a rejected approval without reading the decision
    ├── ToolTimeoutError       a tool ran longer than its timeout (also a TimeoutError)
    ├── RecordedToolError      a failed tool call replayed whose exception type cannot be rebuilt
    ├── VendorStateLost        a live call names state (a response id) that a replayed call made and the vendor lost
    ├── UntrustedPickleError   a pickle in the journal that this user did not write or trust: not loaded
    └── RecordedValueError     a recorded value names a class that is not imported in this process

ToolRejected (an Exception, not a DurableError): a person rejected a tool call that required approval;
run_tool_calls reports it to the model like any tool error.

Journal errors (`journal.JournalBusyError`, `journal.SessionHeldError`, ...) pass through unchanged.

In IPython a DurableError is shown as its one line ("StrictReplayError: ..."), like a UsageError.
"""

from __future__ import annotations


class DurableError(RuntimeError):
    """Base class of the runtime's errors.

    Each message says what happened and what to do, for the user: IPython shows it as one line
    (`_render_traceback_`), without the frames of the SDK or of the runtime that raised it.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


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


class UnjournaledToolError(DurableError):
    """In strict mode a model request carried tool results that no journaled tool produced."""

    def __init__(self, step: str, call: str, tools: list[str]) -> None:
        self.step, self.call, self.tools = step, call, tools
        super().__init__(
            f"strict: step {step!r}, {call} sends the model results of {', '.join(tools)}, functions that are "
            "not journaled (they run again on every replay); decorate them with @tool"
        )


class InDoubtError(DurableError):
    """A tool call started and never finished (its process died or was interrupted inside it), and it is
    not idempotent."""

    def __init__(self, step: str, call: str, call_id: int, session: str = "SESSION", *,
                 interrupted: bool = False) -> None:
        self.step, self.call, self.call_id = step, call, call_id
        why = "it was interrupted inside it" if interrupted else "the process died inside it"
        super().__init__(
            f"step {step!r}: {call} started but never finished ({why}), and the tool is "
            f"not idempotent, so it is not run again blindly. Check whether it took effect, then settle it: "
            f"`%durable settle {call_id} --value JSON` if it did (JSON is its result), "
            f"`%durable settle {call_id} --retry` if it did not (from a terminal: "
            f"`durable settle {session} {call_id} --value JSON|--retry`)."
        )


class VendorStateLost(DurableError):  # noqa: N818 - the name says what happened
    """A live model call refers to state the vendor kept for a call that was replayed, and the vendor lost it."""

    def __init__(self, step: str, call: str, reference: str, made_by: tuple[str, int]) -> None:
        self.step, self.call, self.reference = step, call, reference
        maker, seq = made_by
        super().__init__(
            f"step {step!r}, {call}: the model's server no longer has {reference}, which step {maker!r} call {seq} "
            f"replayed from the journal (the vendor keeps that state, and lost it); run step {maker!r} live again "
            f"(`%%durable {maker} --rerun`, or `%durable forget {maker}`), then this step"
        )


class ToolTimeoutError(DurableError, TimeoutError):
    """A tool did not finish within its timeout."""


class RecordedToolError(DurableError):
    """Replay of a tool call that failed, where the original exception type could not be rebuilt."""


class UntrustedPickleError(DurableError):
    """A pickle in the journal that this user did not write and did not trust (`durable trust`): not loaded."""


class RecordedValueError(DurableError):
    """A value recorded as data names a class this process has not imported (loading never imports one)."""


class ToolRejected(Exception):  # noqa: N818 - the name says what happened
    """A tool call that required approval was rejected."""

    def __init__(self, tool: str, decision: object) -> None:
        self.tool, self.decision = tool, decision
        by = getattr(decision, "by", "someone")
        comment = getattr(decision, "comment", None)
        super().__init__(f"{tool} was rejected by {by}" + (f": {comment}" if comment else ""))


class UnreadRejectionError(DurableError):
    """A step went on to another call after an approval was rejected, without reading the decision."""

    def __init__(self, step: str, key: str, by: str) -> None:
        self.step, self.key = step, key
        super().__init__(
            f"approval {key!r} was rejected (by {by}), and step {step!r} went on without reading the decision; "
            "nothing after it ran. Check `decision.approved` before acting on an approval."
        )
