"""What a running step writes: each call as one append to this process's log (see `_log`).

Nothing here touches DuckDB. Call ids come from a block reserved when the step began (more are
reserved through the caller when a long step uses them up), so a started call can be finished
by its id before DuckDB has seen either record.

On a full disk an append is taken back whole (see `_log`) and the step stops with one line naming
what was not journaled (`JournalFullError`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _blobs, _log, _seal, _space
from ._time import now, stamp
from .errors import JournalFullError

if TYPE_CHECKING:
    from ._store import Journal, StepRun



class StepWriter:
    """The journal as a running step sees it: appends only."""

    def __init__(self, journal: Journal, run: StepRun, reserve: Callable[[int], list[int]]) -> None:
        self.journal = journal
        self.run = run
        self.log = journal.writer()
        self._known = journal._known
        self._reserve = reserve
        self._ids = run.call_ids  # the run's own pool: every writer of the run takes from it
        self._used = 0
        # Shared by every step writing through this journal object, as the blobs known are.
        self._lock = self.log.records
        self._started: dict[int, str] = {}  # call id -> the call as messages name it, until its outcome
        self.failed = False  # an append of this step failed on a full disk, and the step was told

    def _next_id(self) -> int:
        with self._lock:
            if not self._ids:
                self._ids.extend(self._reserve(max(64, self._used * 2)))
            self._used += 1
            return self._ids.pop(0)

    def _unknown(self, splits: list[_blobs.Split]) -> Iterator[tuple[str, bytes]]:
        """The blobs of `splits` this process has not stored or written yet, marked known as they go.

        Called under the lock, with the append that carries them: a record naming a blob is never
        in the log before the blob itself.
        """
        for split in splits:
            for key, data in split.blobs.items():
                if key not in self._known:
                    self._known.add(key)
                    yield key, data
            for links in split.chains:
                fresh = _blobs.new_links(links, self._known)  # up to what this process stored or matched
                if fresh:
                    key, data, items = _blobs.chain_run(links, fresh, self._known.__contains__)
                    for item, message in items.items():  # before the run that refers to them
                        self._known.add(item)
                        yield item, message
                    self._known.add(key)
                    yield key, data

    def _append(self, splits: list[_blobs.Split], *events: dict[str, Any], lost: str, effect: bool = False) -> None:
        """Append `events` with the blobs they need; `lost` says what is not journaled if the disk is full."""
        with self._lock:
            blobs = dict(self._unknown(splits))
            frames = [_log.blob_frame(key, data) for key, data in blobs.items()]
            try:
                self.log.append(b"".join([*frames, *map(_log.event_frame, events)]), effect=effect)
            except OSError as exc:
                self._known.difference_update(blobs)  # taken back with the append: not stored
                if not _space.disk_full(exc):
                    raise
                self.failed = True
                raise JournalFullError(lost, "free space, then run the step again") from None

    def _what(self, seq: int, kind: str, name: str) -> str:
        return f"call {seq} of step {self.run.step!r} ({kind} {name})"

    def mark_known(self, split: _blobs.Split) -> None:
        """Remember that every blob of `split` is stored (it matched a recorded call)."""
        with self._lock:
            for _ in self._unknown([split]):
                pass

    def _call(self, splits: list[_blobs.Split], doc: dict[str, Any], *, lost: str, effect: bool = False) -> int:
        call_id = self._next_id()
        run = self.run
        event = {"e": "call", "id": call_id, "session": run.session, "step": run.step, "epoch": run.epoch,
                 "doc": {"run_id": run.run_id, **doc, "meta": _seal.seal_meta(doc["meta"])}}
        self._append(splits, event, lost=lost, effect=effect)
        return call_id

    def _patch(self, call_id: int, patch: dict[str, Any], splits: list[_blobs.Split] = (), *, lost: str) -> None:
        if "meta" in patch:
            patch = {**patch, "meta": _seal.seal_meta(patch["meta"])}
        self._append(list(splits), {"e": "patch", "id": call_id, "patch": patch}, lost=lost)

    def begin_run(self, source: _blobs.Split | None, source_key: str | None, *,
                  claim: dict[str, Any] | None = None, new: bool = False) -> None:
        """Journal that the run begins, for a run begun from a pack or a `new` step's (DuckDB has no row of it
        yet).

        `claim` (holder, notebook): this process took the session over without DuckDB; said first.
        """
        run = self.run
        events = [{"e": "claim", "session": run.session, "at": stamp(now()), **claim}] if claim else []
        events.append({"e": "begin", "run_id": run.run_id, "session": run.session, "step": run.step,
                       "epoch": run.epoch, "source": source_key, "started_at": stamp(now()),
                       **({"new": True} if new else {})})
        self._append([source] if source is not None else [], *events,
                     lost=f"step {run.step!r} did not begin (nothing of it was journaled)")

    def record_call(
        self, *, seq: int, fingerprint: str, ordinal: int, kind: str, name: str,
        request: _blobs.Split | None, response: _blobs.Split | None, response_key: str | None,
        meta: dict[str, Any], started_at: datetime, status: str = "completed", model: str | None = None,
        usage: tuple[int | None, int | None] = (None, None), attempts: int = 1,
    ) -> int:
        """Journal a finished call (its blobs and its row) in one append."""
        splits = [split for split in (request, response) if split is not None]
        return self._call(splits, {
            "seq": seq, "fingerprint": fingerprint, "ordinal": ordinal, "kind": kind, "name": name,
            "model": model, "status": status, "request": fingerprint if request is not None else None,
            "response": response_key, "meta": meta, "prompt_tokens": usage[0], "completion_tokens": usage[1],
            "attempts": attempts, "started_at": stamp(started_at), "ended_at": stamp(now()),
        }, lost=f"{self._what(seq, kind, name)} was not journaled (it runs live again next time)")

    def start_call(self, *, seq: int, fingerprint: str, ordinal: int, kind: str, name: str,
                   request: _blobs.Split, meta: dict[str, Any], effect: bool = False) -> int:
        """Journal that a call is about to run; `effect` if running it twice would repeat an effect."""
        what = self._what(seq, kind, name)
        call_id = self._call([request], {
            "seq": seq, "fingerprint": fingerprint, "ordinal": ordinal, "kind": kind, "name": name,
            "status": "started", "request": fingerprint, "meta": meta, "attempts": 0, "started_at": stamp(now()),
        }, lost=f"{what} was not journaled and did not run", effect=effect)
        with self._lock:
            self._started[call_id] = what
        return call_id

    def finish_call(self, call_id: int, *, status: str, response: _blobs.Split | None, response_key: str | None,
                    meta: dict[str, Any], attempts: int) -> None:
        """Journal the outcome of a started call; `meta` is merged into the start's meta."""
        with self._lock:
            what = self._started.pop(call_id, None) or f"the call with journal id {call_id} of step {self.run.step!r}"
        self._patch(call_id, {"status": status, "response": response_key, "meta": meta, "attempts": attempts,
                              "ended_at": stamp(now())}, [response] if response is not None else [],
                    lost=f"{what} ran but its outcome was not journaled: it is in doubt, and its next "
                         "run asks you to settle it")

    def note_call(self, call_id: int, meta: dict[str, Any]) -> None:
        """Merge `meta` into a call's record without touching its status (say, why it is in doubt)."""
        # A note only explains a call's state; what stops the step is what caused the note.
        with contextlib.suppress(JournalFullError):
            self._patch(call_id, {"meta": meta}, lost="a note on a call")

    def end_step(self, status: str, *, live: int, replayed: int, outputs: list[dict[str, Any]] | None = None,
                 error: str | None = None, variables: dict[str, bytes] | None = None,
                 replayed_calls: list[int] | None = None, budget: str | None = None) -> None:
        """Close the step run; `variables` maps names to pickled values (stored once per content).

        `budget`: what the step's budgets allowed and what was left when it ended, as its summary said.
        """
        split = _blobs.Split()
        outputs_key = split.add(_blobs.canonical_json(outputs)) if outputs is not None else None
        variables_key = None
        if variables is not None:
            names = {name: split.add(data) for name, data in variables.items()}
            variables_key = split.add(_blobs.canonical_json(names))
        run = self.run
        event = {"e": "end", "run_id": run.run_id, "session": run.session, "step": run.step, "epoch": run.epoch,
                 "status": status, "live": live, "replayed": replayed, "outputs": outputs_key,
                 "error": _seal.seal_value(error),
                 "variables": variables_key, "replayed_calls": replayed_calls, "ended_at": stamp(now()),
                 **({"budget": budget} if budget is not None else {})}
        told = self.failed
        try:
            self._append([split], event, lost=f"the end of step {run.step!r} was not journaled (its calls were)")
        except JournalFullError:
            # The step stops with the error that told of the full disk; one line for it is enough. Its run
            # then reads as cut off, as a run whose process died.
            if not told:
                raise
