"""The DBOS engine: a session's steps run inside one DBOS workflow, each journaled call as a DBOS step.

The runtime is the same as in a notebook: every model call, `@tool` call, approval and
now/uuid/random value goes through `ActiveStep.claim`, the one replay rule. Two things differ:

- What a step replays. The notebook's recording (packed beside the app, read-only: many workers
  cannot share one DuckDB file; only for the session of the notebook's own name) plus the calls
  this workflow already made in an earlier attempt, read from DBOS's `operation_outputs` when the
  workflow (re)starts. Both become the step's recorded calls, so a call paid for in the notebook
  or before a worker died is not sent again.
- Where a live call is journaled. Its row (what the journal's log would hold: outcome, blobs,
  meta) becomes the output of a DBOS step (`DBOS.run_step`), checkpointed in Postgres before the
  program sees the result. A tool that is not idempotent writes a start step first, so a worker
  that dies inside it leaves the call in doubt, as in the notebook.

Ordering: a DBOS step is identified by its position in the workflow (function id), which must be
the same on recovery. Calls replayed from the notebook's recording take no position (they are the
same on every run). A call recorded by DBOS keeps the positions it was written at (its rows carry
them); before each DBOS operation of ours (a new row, an approval's wait) the workflow's position
is moved past every DBOS-recorded call replayed so far. Live calls happen only past the last
recorded one, so their new positions never collide; a collision (code that is not deterministic)
is an error, never a silent replay of another call's result.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import pickle
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from journal import Journal, RecordedCall, Split, StepRun, join_document, now, write_file
from journal._blobs import chain_run

from ...errors import StepError
from ...runtime import ActiveStep, entered_step, interrupted_by
from ...secrets import redact_text
from ...tool_results import ToolLedger

ROW = "durable."  # the prefix of the DBOS step names this engine writes (durable.llm, durable.tool, ...)
APPROVAL_TOPIC = "durable.approval:"  # + key: the DBOS message topic that decides an approval
PACK_FORMAT = 1
_FAR = timedelta(days=3650).total_seconds()  # an approval without a timeout waits this long


@dataclass
class Recording:
    """The notebook's recorded calls of one session, packed to travel with the exported app."""

    session: str
    steps: dict[str, dict[str, Any]]  # step -> {"epoch": int, "calls": [call fields]}
    blobs: dict[str, bytes]
    path: Path | None = None

    @classmethod
    def from_journal(cls, journal: Journal, session: str, steps: list[str]) -> Recording:
        """Pack the current recording of `steps` (their latest epoch) from the journal."""
        packed: dict[str, dict[str, Any]] = {}
        blobs: dict[str, bytes] = {}
        with journal.open() as store:
            epochs = {s["name"]: s["epoch"] for s in store.steps_of(session)}
            for step in steps:
                if step not in epochs:
                    continue
                calls = []
                # The same loader a notebook step uses when it begins, without opening a run.
                for call in store.recorded(session, step, epochs[step]):
                    if call.status not in ("completed", "failed") and call.kind != "tool":
                        continue  # a model call in flight, an approval undecided: the app makes them anew
                    # A tool started and never finished stays in doubt on DBOS too (see ActiveStep.claim).
                    calls.append(_fields(call))
                    if call.response is not None:
                        blobs.update(_reachable(call, store.fetch))
                packed[step] = {"epoch": epochs[step], "calls": calls}
        return cls(session, packed, blobs)

    def save(self, path: Path) -> None:
        data = {"format": PACK_FORMAT, "session": self.session, "steps": self.steps, "blobs": self.blobs}
        write_file(path, zlib.compress(pickle.dumps(data, protocol=4), 6))  # the journal's calls: owner-only

    @classmethod
    def load(cls, path: Path) -> Recording:
        try:
            data = pickle.loads(zlib.decompress(path.read_bytes()))  # noqa: S301 - our own file, beside the app
        except FileNotFoundError:
            raise StepError(f"the notebook's recording {path} is missing: export the app again") from None
        if data.get("format") != PACK_FORMAT:
            raise StepError(f"{path} was packed by another release of durable-kernel: export the app again")
        return cls(data["session"], data["steps"], data["blobs"], path)

    def calls(self, step: str) -> tuple[int, list[RecordedCall]]:
        packed = self.steps.get(step)
        if packed is None:
            return 1, []
        return packed["epoch"], [_call(fields, self.blobs) for fields in packed["calls"]]

    def count(self) -> int:
        return sum(len(s["calls"]) for s in self.steps.values())


def _fields(call: RecordedCall) -> dict[str, Any]:
    return {"id": call.id, "fingerprint": call.fingerprint, "ordinal": call.ordinal, "seq": call.seq,
            "kind": call.kind, "name": call.name, "status": call.status, "request": call.request,
            "response": call.response, "meta": call.meta, "tokens": call.tokens,
            "ended_at": call.ended_at.isoformat() if call.ended_at else None}


def _call(fields: dict[str, Any], blobs: dict[str, bytes]) -> RecordedCall:
    ended = fields.get("ended_at")
    call = RecordedCall(fields["id"], fields["fingerprint"], fields["ordinal"], fields["seq"], fields["kind"],
                        fields["name"], fields["status"], fields.get("request"), fields.get("response"),
                        dict(fields.get("meta") or {}), datetime.fromisoformat(ended) if ended else None,
                        fields.get("tokens") or 0)
    call.data = blobs.get(call.response) if call.response else None
    return call


def _reachable(call: RecordedCall, fetch: Any) -> dict[str, bytes]:
    """The blobs a replay of `call` reads: its response, and for a JSON body every part of it."""
    found: dict[str, bytes] = {}

    def keep(key: str) -> bytes:
        if key not in found:
            found[key] = call.data if key == call.response and call.data is not None else fetch(key)
        return found[key]

    keep(call.response)
    if call.meta.get("body") == "json":
        join_document(call.response, keep)
    return found


def _split_blobs(*splits: Split | None) -> dict[str, bytes]:
    """Every blob of the splits, chain nodes and items too: a DBOS row must replay on its own."""
    blobs: dict[str, bytes] = {}
    for split in splits:
        if split is None:
            continue
        blobs.update(split.blobs)
        for links in split.chains:
            key, data = chain_run(links, len(links), lambda _: False)  # the whole conversation, in one blob
            blobs[key] = data
    return blobs


class WorkflowSession:
    """A session running as one DBOS workflow: the runtime's `Session`, as its open steps use it."""

    def __init__(self, workflow_id: str, recording: Recording) -> None:
        self.name = workflow_id
        # The notebook's calls are this session's own history only: another session (other inputs,
        # other idempotency keys) replaying them would skip a booking it never made.
        self.recording = recording if workflow_id == recording.session else Recording(workflow_id, {}, {})
        # Approvals name the journal in their messages; here the recording stands in for it.
        self.journal = SimpleNamespace(path=recording.path or Path("recording"))
        self.notebook = None
        self.exits_when_suspended = False
        self.blobs = dict(recording.blobs)
        self.calls: dict[int, dict[str, Any]] = {}  # id (minus the function id) -> the row of a DBOS call
        self.earlier: dict[str, list[RecordedCall]] = {}  # step -> calls an earlier attempt recorded
        self.ended: dict[str, int] = {}  # step -> function id of its end row, from an earlier attempt
        self.position = 0  # past every DBOS-recorded call replayed so far (see module docstring)
        self.thread: int | None = None  # the workflow's thread: DBOS numbers its steps in one order
        # What a step asks of its session beside the journal (see runtime.Session): the same here.
        self.tool_ledger = ToolLedger()
        self.vendor_state: dict[str, tuple[str, int]] = {}
        self.budget = None
        self._store = _WorkflowStore(self)
        self._load_earlier()

    def __repr__(self) -> str:
        return f"WorkflowSession({self.name!r})"

    def _load_earlier(self) -> None:
        from dbos import DBOS

        # Listed outside the workflow's context: inside it, the listing would itself be a step whose
        # recorded (stale) answer a recovery gets back.
        steps = contextvars.Context().run(DBOS.list_workflow_steps, self.name)
        for info in sorted(steps, key=lambda s: s["function_id"]):
            row, fid = info["output"], info["function_id"]
            if not info["function_name"].startswith(ROW) or not isinstance(row, dict):
                continue
            self.blobs.update(row.get("blobs") or {})
            if "end" in row:
                self.ended[row["end"]] = fid
            elif "finish" in row:
                start = self.calls.pop(-row["finish"])
                start.update({k: v for k, v in row.items() if k not in ("finish", "meta", "blobs")})
                start["meta"] = {**start.get("meta", {}), **row.get("meta", {})}
                self.remember(start, fid)
            else:
                self.remember(dict(row), fid)
        for fields in self.calls.values():
            self.earlier.setdefault(fields["step"], []).append(_call(fields, self.blobs))

    def remember(self, row: dict[str, Any], fid: int) -> None:
        row["id"] = -fid  # a DBOS call's id tells its last position; journal ids are positive
        self.calls[-fid] = row

    @contextmanager
    def journal_store(self, *, linger: bool = True) -> Iterator[_WorkflowStore]:
        yield self._store

    @contextmanager
    def step(self, name: str, *, source: str | None = None, strict: bool = False,
             rerun: bool = False) -> Iterator[ActiveStep]:
        """Run a block as the durable step `name` of this workflow (the engine's `Session.step`)."""
        __tracebackhide__ = True
        epoch, recorded = self.recording.calls(name)
        run = StepRun(self.name, name, epoch, 0, [], recorded + self.earlier.get(name, []), {})
        writer = _DbosWriter(self, run)
        active = ActiveStep(self, run, writer, strict)  # type: ignore[arg-type] - a Session to the step
        writer.active = active
        self.thread = threading.get_ident()
        status, error = "failed", None
        with entered_step(active):
            try:
                yield active
                active.pass_gates(ending=True)
                status = "completed"
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"
                if interrupted_by(exc):
                    status = "interrupted"
                raise
            finally:
                writer.end_step(status, live=active.live, replayed=active.replayed, error=error)

    # -- positions ---------------------------------------------------------------------

    def advance(self, active: ActiveStep | None, past: int = 0) -> None:
        """Move the workflow's position past every DBOS-recorded call replayed so far (and `past`)."""
        from dbos._context import get_local_dbos_context

        if threading.get_ident() != self.thread:
            raise StepError(f"session {self.name!r}: a call from a thread the step started cannot be a DBOS step "
                            "(their order would differ on recovery); make it in the step itself, or export a script")
        if active is not None:
            self.position = max([self.position, *(-i for i in active.replayed_calls if i < 0)])
        self.position = max(self.position, past)
        context = get_local_dbos_context()
        if context is None or not context.is_workflow():
            raise StepError("a DBOS session's steps run inside its workflow only")
        # DBOS numbers its operations with this counter; it counts ours as they were first written.
        context.function_id = max(context.function_id, self.position)

    def write(self, active: ActiveStep | None, row: dict[str, Any]) -> int:
        """Checkpoint a row as a new DBOS step; returns its function id."""
        from dbos import DBOS
        from dbos._context import get_local_dbos_context

        self.advance(active)
        kind = row.get("kind") or ("end" if "end" in row else "finish")
        returned = DBOS.run_step({"name": f"{ROW}{kind}"}, lambda: row)
        fid = get_local_dbos_context().function_id
        if returned != row:  # DBOS had another output at this position: this run took another path
            raise StepError(f"session {self.name!r}: DBOS step {fid} holds another call than this run makes "
                            "there; check that the steps are deterministic (same calls in the same order)")
        self.position = fid
        self.blobs.update(row.get("blobs") or {})
        return fid


class _DbosWriter:
    """The journal as a step on DBOS sees it: each record is a DBOS step's output (see StepWriter)."""

    def __init__(self, session: WorkflowSession, run: StepRun) -> None:
        self.session, self.run = session, run
        self.active: ActiveStep | None = None

    def _row(self, **fields: Any) -> dict[str, Any]:
        return {"step": self.run.step, **fields}

    def record_call(self, *, seq: int, fingerprint: str, ordinal: int, kind: str, name: str,
                    request: Split | None, response: Split | None, response_key: str | None,
                    meta: dict[str, Any], started_at: datetime, status: str = "completed",
                    model: str | None = None, usage: tuple[int | None, int | None] = (None, None),
                    attempts: int = 1) -> int:
        row = self._row(seq=seq, fingerprint=fingerprint, ordinal=ordinal, kind=kind, name=name, status=status,
                        response=response_key, meta=meta, model=model, attempts=attempts,
                        tokens=sum(n or 0 for n in usage), started_at=started_at.isoformat(),
                        ended_at=now().isoformat(), blobs=_split_blobs(response))
        fid = self.session.write(self.active, row)
        self.session.remember(row, fid)
        return -fid

    def start_call(self, *, seq: int, fingerprint: str, ordinal: int, kind: str, name: str, request: Split,
                   meta: dict[str, Any], effect: bool = False) -> int:
        row = self._row(seq=seq, fingerprint=fingerprint, ordinal=ordinal, kind=kind, name=name,
                        status="started", response=None, meta=meta, started_at=now().isoformat(), blobs={})
        fid = self.session.write(self.active, row)
        self.session.remember(row, fid)
        return -fid

    def finish_call(self, call_id: int, *, status: str, response: Split | None, response_key: str | None,
                    meta: dict[str, Any], attempts: int) -> None:
        if call_id > 0:  # a call the notebook left in doubt, run again here: its whole record, in one row
            recorded = next(c for c in self.run.recorded if c.id == call_id)
            row = self._row(seq=recorded.seq, fingerprint=recorded.fingerprint, ordinal=recorded.ordinal,
                            kind=recorded.kind, name=recorded.name, status=status, response=response_key,
                            meta={**recorded.meta, **meta}, attempts=attempts, ended_at=now().isoformat(),
                            blobs=_split_blobs(response))
            self.session.remember(row, self.session.write(self.active, row))
            return
        start = self.session.calls[call_id]
        self.session.advance(self.active, -call_id)  # a call in doubt, run again, finishes past its start
        row = {"finish": -call_id, "status": status, "response": response_key, "meta": meta, "attempts": attempts,
               "ended_at": now().isoformat(), "blobs": _split_blobs(response), "kind": start["kind"]}
        fid = self.session.write(self.active, row)
        start.update(status=status, response=response_key, meta={**start["meta"], **meta})
        self.session.calls[-fid] = start

    def note_call(self, call_id: int, meta: dict[str, Any]) -> None:
        """Why a call is in doubt (interrupted): not kept on DBOS; its start row alone keeps it in doubt."""

    def mark_known(self, split: Split) -> None:
        """Blobs known to be stored: nothing to remember, a DBOS row carries its own."""

    def end_step(self, status: str, *, live: int, replayed: int, error: str | None = None, **_: Any) -> None:
        """A step's end, for `durable show`; an earlier attempt's end row is not written twice."""
        step = self.run.step
        if step in self.session.ended:
            self.session.advance(self.active, self.session.ended[step])
            return
        with contextlib.suppress(Exception) if status != "completed" else contextlib.nullcontext():
            self.session.write(self.active, {"end": step, "status": status, "live": live, "replayed": replayed,
                                             "error": redact_text(error) if error else None})


class _WorkflowStore:
    """What a step asks of the journal while it runs (a blob, a call's state, an approval's decision)."""

    def __init__(self, session: WorkflowSession) -> None:
        self.session = session

    def fetch(self, key: str) -> bytes:
        try:
            return self.session.blobs[key]
        except KeyError:
            raise StepError(f"blob {key} of session {self.session.name!r} is neither in the notebook's "
                            "recording nor in DBOS: export the app again") from None

    def get_json(self, key: str) -> Any:
        data = self.session.blobs.get(key)
        return json.loads(data) if data is not None else None

    def call(self, call_id: int) -> dict[str, Any] | None:
        """A call's state. For a pending approval, asking waits for its decision: a DBOS message.

        `approve()` asks the journal whether someone decided; on DBOS the decision arrives as a
        message (`durable approve` sends it), so the question waits in `DBOS.recv`, which sleeps on
        Postgres notifications: no worker polls, and after a crash any worker waits again.
        """
        row = self.session.calls.get(call_id)
        if row is None:
            return None
        if row["kind"] == "approval" and row["status"] == "started":
            decision = self._wait(call_id, row)
            if decision is not None:
                self.decide(call_id, decision)
        return {"id": call_id, "session": self.session.name, "step": row["step"], "kind": row["kind"],
                "name": row["name"], "status": row["status"], "request": None, "response": row.get("response"),
                "meta": json.dumps(row.get("meta") or {})}

    def _wait(self, call_id: int, row: dict[str, Any]) -> dict[str, Any] | None:
        from dbos import DBOS

        deadline = row["meta"].get("deadline")
        seconds = _FAR
        if deadline:
            seconds = max(0.0, (datetime.fromisoformat(deadline) - datetime.now(timezone.utc)).total_seconds())
        self.session.advance(None, -call_id)  # the wait comes right after the approval's start row
        message = DBOS.recv(APPROVAL_TOPIC + row["meta"]["key"], timeout_seconds=seconds)
        return message if isinstance(message, dict) else None

    def decide(self, call_id: int, decision: dict[str, Any]) -> bool:
        """Record an approval's decision as the DBOS step that finishes its call."""
        row = self.session.calls[call_id]
        if row["status"] != "started":
            return False
        split = Split()
        key = split.add(json.dumps(decision, sort_keys=True).encode())
        gist = {k: decision.get(k) for k in ("approved", "by", "comment", "timed_out")}
        writer = _DbosWriter(self.session, SimpleNamespace(step=row["step"]))  # type: ignore[arg-type]
        writer.finish_call(call_id, status="completed", response=split, response_key=key,
                           meta={"body": "decision", "decision": gist}, attempts=1)
        return True


def run_session(recording: Recording, steps: list[tuple[str | None, Any]], namespace: dict[str, Any],
                inputs: dict[str, Any]) -> dict[str, Any]:
    """The body of a session's DBOS workflow: its steps in order, in a namespace of its own.

    `steps` holds (name, compiled code); a None name is a plain cell the notebook ran between steps.
    `namespace` is the app's setup (module globals); `inputs` override names in it, as the notebook's
    inputs. Returns the plain values (JSON types) the last durable step assigned: its answer.
    """
    from dbos import DBOS

    session = WorkflowSession(DBOS.workflow_id, recording)
    names = {**namespace, **inputs}
    last: set[str] = set()
    for name, code in steps:
        if name is None:
            exec(code, names)  # noqa: S102 - a notebook cell, compiled by the exported app
            continue
        before = dict(names)
        with session.step(name):
            exec(code, names)  # noqa: S102
        last = {k for k, v in names.items() if k not in before or before[k] is not v}
    return {k: names[k] for k in sorted(last) if not k.startswith("_") and _plain(names[k])}


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
