"""Finding one's way in a long history: a step's calls grouped into turns, which steps open at first,
the filters by kind and by status, and what a search reads of a call.

A turn is a model call and the calls that follow it (tools, approvals, recorded values) until the next
model call: what the model asked for and what came of it. The widget and the HTML draw from this; neither
decides it on its own, so both show the same turns and open the same steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .detail import CallDetail
from .model import CallView, StepView

# The filters people pick, by the words they read, to the journal's kinds of call.
KINDS: dict[str, str] = {"model": "llm", "tool": "tool", "approval": "approval", "value": "value"}
# What the step's last run did with a call, as the status filter names it; the legend's words where it has them.
STANDINGS: dict[str, str] = {"live": "live", "replayed": "replayed", "failed": "failed / in doubt",
                             "undecided": "undecided", "earlier": "earlier record"}
MIN_QUERY = 2  # characters: one letter would match nearly every call


def standing(call: CallView) -> str:
    """One key of STANDINGS: an approval is live or replayed once decided, like any call."""
    if call.shade == "earlier":
        return "earlier"
    if call.kind == "approval" and call.status != "completed":
        return "undecided"
    if call.status == "failed" or call.in_doubt:
        return "failed"
    return "replayed" if call.use == "replayed" else "live"


@dataclass(frozen=True)
class Place:
    """Where a call stands in its step's turns."""

    turn: int  # its turn, counting the model calls the last run used; 0 before the step's first model call
    leads: bool = False  # the model call that opens the turn
    earlier: bool = False  # the turn's model call is an earlier record, not one of the last run's turns
    turned: bool = False  # the step has turns at all (a step of tools alone is drawn as a plain list)

    @property
    def mark(self) -> str:
        """What the leading row carries: its turn's number, or that it is an earlier record."""
        if not self.leads:
            return ""
        return "earlier" if self.earlier else f"turn {self.turn}"

    @property
    def under(self) -> bool:
        """Drawn indented under the model call of its turn."""
        return not self.leads and (self.turn > 0 or self.earlier)


def places(calls: list[CallView]) -> dict[int, Place]:
    """Each call's place in the turns of its step, by journal id; `calls` in their step's order (StepView.calls)."""
    turned = any(c.kind == "llm" for c in calls)
    found: dict[int, Place] = {}
    turn, earlier = 0, False
    for call in calls:
        if call.kind == "llm":
            earlier = call.shade == "earlier"
            turn += 0 if earlier else 1
            found[call.id] = Place(turn, leads=True, earlier=earlier, turned=turned)
        else:
            found[call.id] = Place(turn, earlier=earlier, turned=turned)
    return found


def starts_open(step: StepView) -> bool:
    """A step a person will want to see: it did not finish, or it holds a call that waits or is in doubt."""
    return step.status != "completed" or any(
        c.in_doubt or (c.kind == "approval" and c.status == "started") for c in step.calls)


def opened(steps: list[StepView], *, whole: int | None = None, budget: int | None = None,
           rows: int | None = None, latest: bool = True) -> list[bool]:
    """Which of `steps` (oldest first) open at first.

    Those `starts_open` picks, and the last of them if it is the session's `latest`; every step when they
    hold `whole` calls or fewer (a short history reads best whole). `budget`: rows drawn at most over the
    open steps, the latest first (the session's latest opens whatever it holds); `rows`: rows a step draws
    at most.
    """
    last = len(steps) - 1 if latest else -1
    if whole is not None and sum(len(s.calls) for s in steps) <= whole:
        wanted = [True] * len(steps)
    else:
        wanted = [i == last or starts_open(s) for i, s in enumerate(steps)]
    result = [False] * len(steps)
    left = budget
    for i in reversed(range(len(steps))):
        if not wanted[i]:
            continue
        drawn = len(steps[i].calls) if rows is None else min(len(steps[i].calls), rows)
        if left is None or drawn <= left or i == last:
            result[i] = True
            if left is not None:
                left = max(0, left - drawn)
    return result


@dataclass(frozen=True)
class Filter:
    """What a person asked to see: a kind of call, a status, the calls a search found."""

    kind: str = "all"  # "all" or a key of KINDS
    status: str = "all"  # "all" or a key of STANDINGS
    found: frozenset[int] | None = None  # journal ids a search found; None: no search

    @property
    def active(self) -> bool:
        return self.kind != "all" or self.status != "all" or self.found is not None

    def matches(self, call: CallView) -> bool:
        return ((self.kind == "all" or KINDS.get(self.kind) == call.kind)
                and (self.status == "all" or standing(call) == self.status)
                and (self.found is None or call.id in self.found))

    def of(self, calls: Iterable[CallView]) -> list[CallView]:
        return [c for c in calls if self.matches(c)]


def words(call: CallView, detail: CallDetail | None) -> str:
    """What a search reads of a call: its name and what its detail shows (the messages sent and the
    reply, a tool's arguments and result, an approval's question and decision), lower-cased."""
    parts = [call.name]
    if detail is not None:
        for message in detail.conversation:
            parts.append(message.text)
            parts += [f"{name} {arguments}" for name, arguments in message.tool_calls]
        parts += [text for _, text in detail.sections]
    return "\n".join(parts).lower()
