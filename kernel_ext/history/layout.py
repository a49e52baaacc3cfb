"""Where a step's calls sit on its timeline: bars placed by start time and sized by duration.

Each step has its own time axis, from its first call's start: steps of one session may run days apart
(a restart, an approval), and a shared axis would shrink every call to a sliver. For the same reason a
long idle gap inside a step (a kernel restart between two runs, a night) is shortened to a small
break that the picture marks with the time left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from journal import now

from .model import CallView

MIN_WIDTH = 0.012  # of the track: the shortest call is still a visible bar
_GAP_FLOOR = 10.0  # seconds: shorter idle gaps are drawn as they were
_GAP_SHOWN = 0.04  # of the step's busy time: how wide a shortened gap is drawn


@dataclass
class Bar:
    left: float  # fraction of the track
    width: float


@dataclass
class Track:
    bars: dict[int, Bar] = field(default_factory=dict)  # by the call's journal id
    breaks: list[tuple[float, float]] = field(default_factory=list)  # (where on the track, seconds left out)
    seconds: float = 0.0  # the time the track spans, gaps left out


def step_track(calls: list[CallView], at: datetime | None = None) -> Track:
    at = at or now()
    # An approval asked again by a later run sits where that run asked: its wait began there (CallView.since).
    timed = [(c.since, c.seconds(at), c.id) for c in calls if c.since is not None]
    if not timed:
        return Track({c.id: Bar(0.0, MIN_WIDTH) for c in calls})
    timed.sort()
    origin = timed[0][0]
    spans = [((start - origin).total_seconds(), seconds, call_id) for start, seconds, call_id in timed]
    busy = _busy(spans)
    limit, shown = max(_GAP_FLOOR, busy), max(busy * _GAP_SHOWN, 1e-3)
    placed: dict[int, tuple[float, float]] = {}
    track = Track()
    cursor, removed = 0.0, 0.0
    for start, seconds, call_id in spans:
        gap = start - cursor
        if gap > limit:
            track.breaks.append((cursor - removed + shown / 2, gap))
            removed += gap - shown
        placed[call_id] = (start - removed, seconds)
        cursor = max(cursor, start + seconds)
    track.seconds = total = cursor - removed
    for call_id, (start, seconds) in placed.items():
        left = start / total if total > 0 else 0.0
        width = max(seconds / total if total > 0 else 0.0, MIN_WIDTH)
        track.bars[call_id] = Bar(max(0.0, min(left, 1.0 - width)), min(width, 1.0))
    track.breaks = [(where / total, gap) for where, gap in track.breaks] if total > 0 else []
    for c in calls:  # a call with no start recorded: at the start, as a sliver
        track.bars.setdefault(c.id, Bar(0.0, MIN_WIDTH))
    return track


def _busy(spans: list[tuple[float, float, int]]) -> float:
    """Seconds in which at least one call ran (overlapping calls counted once)."""
    total, end = 0.0, None
    for start, seconds, _ in spans:
        finish = start + seconds
        if end is None or start > end:
            total += seconds
            end = finish
        elif finish > end:
            total += finish - end
            end = finish
    return total
