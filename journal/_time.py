"""Timestamps of the journal."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    """Naive UTC: DuckDB's TIMESTAMPTZ would make every read import pytz."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def stamp(moment: datetime) -> str:
    """A timestamp as the journal's JSON documents hold it."""
    return moment.isoformat(sep=" ")
