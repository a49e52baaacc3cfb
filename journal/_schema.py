"""Schema of the journal and its migrations.

Each migration is applied once, in order, inside one transaction, and recorded in
`schema_version`. A journal written by a newer release (a version we do not know) is
refused rather than guessed at. Since version 7 `schema_version` holds one row, the version
and when it was applied: a table whose every column holds one value takes no block of the file,
and releases before 7 still read the version there (and refuse a newer journal).

No table carries an index: DuckDB stores every index in blocks of its own, and the journal
must stay small for small sessions. Uniqueness of sessions, steps and blobs is kept by the
single writer (DuckDB locks the file for the process that opens it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from . import _blobstore
from .errors import SchemaTooNewError

# A migration step is a statement, or a function of the connection for what SQL alone cannot do.
MIGRATIONS: list[tuple[int, str, list[str | Callable[[Any], None]]]] = [
    (
        1,
        "sessions, steps, step runs, calls and content-addressed blobs",
        [
            """CREATE TABLE blobs (
                hash VARCHAR PRIMARY KEY,
                codec UTINYINT NOT NULL,      -- 0 raw, 1 zlib, 2 zlib with preset dictionary v1
                size INTEGER NOT NULL,        -- uncompressed bytes
                data BLOB NOT NULL
            )""",
            """CREATE TABLE sessions (
                name VARCHAR NOT NULL,
                notebook VARCHAR,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL,
                holder VARCHAR                -- JSON: pid, host, started, label of the driving process
            )""",
            """CREATE TABLE steps (
                session VARCHAR NOT NULL,
                name VARCHAR NOT NULL,
                epoch INTEGER NOT NULL,       -- bumped by --rerun: older calls stay as history
                status VARCHAR NOT NULL,      -- running, completed, failed, suspended
                source VARCHAR,               -- blob hash of the cell source
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
            "CREATE SEQUENCE run_ids START 1",
            """CREATE TABLE step_runs (
                id BIGINT NOT NULL,
                session VARCHAR NOT NULL,
                step VARCHAR NOT NULL,
                epoch INTEGER NOT NULL,
                started_at TIMESTAMP NOT NULL,
                ended_at TIMESTAMP,
                status VARCHAR NOT NULL,       -- running, completed, failed, interrupted (its process died)
                calls_live INTEGER NOT NULL DEFAULT 0,
                calls_replayed INTEGER NOT NULL DEFAULT 0,
                outputs VARCHAR,              -- blob hash: JSON list of nbformat outputs
                error VARCHAR
            )""",
            "CREATE SEQUENCE call_ids START 1",
            """CREATE TABLE calls (
                id BIGINT NOT NULL,
                session VARCHAR NOT NULL,
                step VARCHAR NOT NULL,
                epoch INTEGER NOT NULL,
                run_id BIGINT NOT NULL,
                seq INTEGER NOT NULL,         -- position of the call within the run that recorded it
                fingerprint VARCHAR NOT NULL,
                ordinal INTEGER NOT NULL,     -- among identical requests of the same step run
                kind VARCHAR NOT NULL,        -- llm, tool, approval, value
                name VARCHAR NOT NULL,        -- e.g. chat.completions, or a tool's name
                model VARCHAR,
                status VARCHAR NOT NULL,      -- started, completed, failed
                request VARCHAR,              -- blob hash
                response VARCHAR,             -- blob hash
                meta VARCHAR,                 -- JSON: HTTP status, safe headers, stream flag
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                attempts INTEGER NOT NULL DEFAULT 1,
                started_at TIMESTAMP NOT NULL,
                ended_at TIMESTAMP,
                latency_ms DOUBLE
            )""",
        ],
    ),
]

MIGRATIONS.append(
    (
        2,
        "variables recorded by completed step runs",
        ["ALTER TABLE step_runs ADD COLUMN variables VARCHAR  -- blob hash: JSON {name: blob hash of its pickle}"],
    )
)

# The documented names (`sessions`, `steps`, `calls`, `approvals`) become views for people and SQL;
# the rows they read move to `*_records` tables whose layout may change between releases.
_VIEWS = [
    """CREATE VIEW calls AS
       SELECT c.id, c.session, c.step, c.epoch, c.epoch = s.epoch AS current, c.run_id, c.seq, c.kind,
              c.name, c.model, c.status, c.attempts, c.prompt_tokens, c.completion_tokens,
              round(coalesce(c.prompt_tokens, 0) * p.input_per_million / 1e6
                    + coalesce(c.completion_tokens, 0) * p.output_per_million / 1e6, 6) AS cost,
              p.currency, c.latency_ms, c.started_at, c.ended_at
       FROM call_records c
       LEFT JOIN step_records s ON s.session = c.session AND s.name = c.step
       LEFT JOIN prices p ON p.model = c.model""",
    """CREATE VIEW steps AS
       SELECT s.session, s.name, s.epoch, s.status, s.created_at, s.updated_at,
              (SELECT count(*) FROM step_runs r WHERE r.session = s.session AND r.step = s.name) AS runs,
              (SELECT count(*) FROM calls c WHERE c.session = s.session AND c.step = s.name
                  AND c.current AND c.status = 'completed') AS calls,
              (SELECT sum(coalesce(c.prompt_tokens, 0) + coalesce(c.completion_tokens, 0))
                  FROM calls c WHERE c.session = s.session AND c.step = s.name AND c.current) AS tokens,
              (SELECT sum(c.cost) FROM calls c WHERE c.session = s.session AND c.step = s.name
                  AND c.current) AS cost,
              last.calls_live AS last_run_live, last.calls_replayed AS last_run_replayed,
              date_diff('millisecond', last.started_at, last.ended_at) / 1000.0 AS last_run_seconds
       FROM step_records s
       LEFT JOIN (SELECT *, row_number() OVER (PARTITION BY session, step ORDER BY id DESC) AS n
                  FROM step_runs) last ON last.session = s.session AND last.step = s.name AND last.n = 1""",
    """CREATE VIEW sessions AS
       SELECT s.name, s.notebook, s.created_at, s.updated_at,
              json_extract_string(s.holder, '$.label') AS held_by,
              (SELECT count(*) FROM step_records t WHERE t.session = s.name) AS steps,
              (SELECT count(*) FROM calls c WHERE c.session = s.name AND c.current
                  AND c.status = 'completed') AS calls,
              (SELECT sum(coalesce(c.prompt_tokens, 0) + coalesce(c.completion_tokens, 0))
                  FROM calls c WHERE c.session = s.name AND c.current) AS tokens,
              (SELECT sum(c.cost) FROM calls c WHERE c.session = s.name AND c.current) AS cost
       FROM session_records s""",
    """CREATE VIEW approvals AS
       SELECT c.id, c.session, c.step, json_extract_string(c.meta, '$.key') AS key,
              json_extract_string(c.meta, '$.prompt') AS prompt,
              CASE WHEN c.status = 'started' THEN 'pending'
                   WHEN json_extract(c.meta, '$.decision.timed_out')::BOOLEAN THEN 'timed_out'
                   WHEN json_extract(c.meta, '$.decision.approved')::BOOLEAN THEN 'approved'
                   WHEN json_extract(c.meta, '$.decision.approved') IS NOT NULL THEN 'rejected'
                   ELSE 'decided' END AS status,
              json_extract_string(c.meta, '$.decision.by') AS decided_by,
              json_extract_string(c.meta, '$.decision.comment') AS comment,
              c.started_at AS requested_at, c.ended_at AS decided_at,
              json_extract_string(c.meta, '$.deadline') AS deadline
       FROM call_records c WHERE c.kind = 'approval' AND c.status IN ('started', 'completed')""",
]

MIGRATIONS.append(
    (
        3,
        "documented views over *_records tables; prices; the cells each kernel ran",
        [
            "ALTER TABLE sessions RENAME TO session_records",
            "ALTER TABLE steps RENAME TO step_records",
            "ALTER TABLE calls RENAME TO call_records",
            """CREATE TABLE prices (
                model VARCHAR NOT NULL,
                input_per_million DOUBLE NOT NULL,   -- price of one million prompt tokens
                output_per_million DOUBLE NOT NULL,  -- price of one million completion tokens
                currency VARCHAR NOT NULL,
                source VARCHAR,                      -- the file the user loaded them from
                set_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE cells (
                session VARCHAR NOT NULL,
                kernel VARCHAR NOT NULL,      -- the kernel process that ran them (host:pid:start)
                position INTEGER NOT NULL,    -- order of execution within that kernel
                kind VARCHAR NOT NULL,        -- setup (a plain cell) or step (a durable cell)
                step VARCHAR,
                source VARCHAR NOT NULL,      -- blob hash of the cell source
                ran_at TIMESTAMP NOT NULL
            )""",
            *_VIEWS,
        ],
    )
)

# DuckDB pays for every column a row is appended to: a call row of 21 columns cost about three times
# one of 5. So a call is stored as (id, session, step, epoch, doc) with the rest in a JSON document,
# `call_rows` reads it back as columns, and the documented views read `call_rows`. Blobs lose their
# primary key: checking it made every insert slower, and its index was a third of a small journal.
_CALL_FIELDS = [
    ("run_id", "BIGINT"), ("seq", "INTEGER"), ("fingerprint", "VARCHAR"), ("ordinal", "INTEGER"),
    ("kind", "VARCHAR"), ("name", "VARCHAR"), ("model", "VARCHAR"), ("status", "VARCHAR"),
    ("request", "VARCHAR"), ("response", "VARCHAR"), ("prompt_tokens", "INTEGER"),
    ("completion_tokens", "INTEGER"), ("attempts", "INTEGER"), ("started_at", "TIMESTAMP"),
    ("ended_at", "TIMESTAMP"),
]
_CALL_ROWS = (
    "CREATE VIEW call_rows AS SELECT id, session, step, epoch, "
    + ", ".join(f"(doc->>'{name}')::{kind} AS {name}" for name, kind in _CALL_FIELDS)
    + ", coalesce((doc->'meta')::VARCHAR, '{}') AS meta, "
    "date_diff('microsecond', started_at, ended_at) / 1000.0 AS latency_ms FROM call_records"
)
_TO_DOCUMENT = (
    "json_object("
    + ", ".join(f"'{name}', " + (f"strftime({name}, '%Y-%m-%d %H:%M:%S.%f')" if kind == "TIMESTAMP" else name)
                for name, kind in _CALL_FIELDS)
    + ", 'meta', json(coalesce(meta, '{}')))::VARCHAR"
)

MIGRATIONS.append(
    (
        4,
        "calls as (id, session, step, epoch, JSON document); blobs without a primary key",
        [
            *(f"DROP VIEW {view}" for view in ("approvals", "sessions", "steps", "calls")),
            f"CREATE TABLE call_documents AS SELECT id, session, step, epoch, {_TO_DOCUMENT} AS doc "
            "FROM call_records ORDER BY id",
            "DROP TABLE call_records",
            "ALTER TABLE call_documents RENAME TO call_records",
            "CREATE TABLE blob_rows AS SELECT * FROM blobs",
            "DROP TABLE blobs",
            "ALTER TABLE blob_rows RENAME TO blobs",
            _CALL_ROWS,
            *(view.replace("call_records", "call_rows") for view in _VIEWS),
        ],
    )
)

MIGRATIONS.append(
    (
        5,
        "which recorded calls each step run replayed",
        ["ALTER TABLE step_runs ADD COLUMN replayed_calls VARCHAR  -- JSON list of the call ids it replayed"],
    )
)

MIGRATIONS.append(
    (
        6,
        "call ids reserved in blocks; how far each process's append log is absorbed",
        [
            # One small table for both (every non-empty DuckDB table costs a block of its own):
            # 'next call id' -> the next id to reserve; 'log FILE' -> bytes of FILE absorbed.
            "CREATE TABLE journal_state (name VARCHAR NOT NULL, value BIGINT NOT NULL)",
            # Past every id the sequence handed out: rows of an older release keep theirs.
            "INSERT INTO journal_state SELECT 'next call id', greatest(coalesce((SELECT max(id) FROM call_records), "
            "0) + 1, nextval('call_ids'))",
        ],
    )
)

# The same columns and values as before from one json_transform of meta instead of 9 JSON extractions.
_APPROVALS_V7 = """CREATE OR REPLACE VIEW approvals AS
    SELECT id, session, step, m.key, m.prompt,
           CASE WHEN status = 'started' THEN 'pending' WHEN m.decision.timed_out THEN 'timed_out'
                WHEN m.decision.approved THEN 'approved' WHEN m.decision.approved IS NOT NULL THEN 'rejected'
                ELSE 'decided' END AS status,
           m.decision.by AS decided_by, m.decision.comment AS comment, started_at AS requested_at,
           ended_at AS decided_at, m.deadline
    FROM (SELECT *, json_transform(meta, '{"key":"VARCHAR","prompt":"VARCHAR","deadline":"VARCHAR","decision":
          {"timed_out":"BOOLEAN","approved":"BOOLEAN","by":"VARCHAR","comment":"VARCHAR"}}') AS m
          FROM call_rows WHERE kind = 'approval' AND status IN ('started', 'completed'))"""
_APPROVALS_V7 = " ".join(_APPROVALS_V7.split())  # a view keeps its text too
_ONE_VERSION = "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT now())"
_CALL_ROWS_V7 = (
    "CREATE VIEW call_rows AS SELECT *, date_diff('microsecond', started_at, ended_at) / 1000.0 AS latency_ms "
    "FROM (SELECT id, session, step, epoch, unnest(json_transform(doc, '"
    + json.dumps(dict(_CALL_FIELDS), separators=(",", ":"))
    + "')), coalesce((doc->'meta')::VARCHAR, '{}') AS meta FROM call_records)"
)

MIGRATIONS.append(
    (
        7,
        "blobs compressed together in packs, keyed by their binary digest; call documents compressed together; "
        "call_rows from one json_transform",
        [
            _blobstore.repack,
            # DuckDB compresses a column of JSON documents one string at a time unless told to use zstd,
            # which compresses many together: the documents of 1,000 calls take 2 blocks instead of 13.
            "CREATE TABLE call_documents (id BIGINT NOT NULL, session VARCHAR NOT NULL, step VARCHAR NOT NULL, "
            "epoch INTEGER NOT NULL, doc VARCHAR NOT NULL USING COMPRESSION zstd)",
            "INSERT INTO call_documents SELECT * FROM call_records ORDER BY id",
            "DROP TABLE call_records",
            "ALTER TABLE call_documents RENAME TO call_records",
            # The same columns from one json_transform each: DuckDB keeps a view as its parsed tree, and the
            # casts and extractions of these two took a fifth of a small journal's metadata (one 16 KB block).
            _CALL_ROWS_V7.replace("CREATE VIEW", "CREATE OR REPLACE VIEW"),
            _APPROVALS_V7,
            *(" ".join(view.replace("call_records", "call_rows").replace("CREATE VIEW", "CREATE OR REPLACE VIEW")
                       .split()) for view in _VIEWS[:3]),  # calls, steps, sessions: the same, without the indents
            "DROP SEQUENCE call_ids",  # unused since call ids are reserved in journal_state (migration 6)
            # One row and no text: a block of its own saved (see the module's docstring).
            "DROP TABLE schema_version",
            _ONE_VERSION,
        ],
    )
)

# Every non-empty DuckDB table takes blocks of its own (16 KB each), and the small tables' rows fit in
# a fraction of one: calls, sessions, steps, runs, the journal's state and the cells kernels ran now
# share one table, `records`, each row a JSON document with the columns every reader filters on.
# The old tables' names stay as views with their columns, for the documented views and for SQL.
RECORDS = """CREATE TABLE records (
    kind VARCHAR NOT NULL,   -- call, session, step, run, state, cell
    id BIGINT,               -- a call's or a run's id; a state's value
    session VARCHAR,         -- the session's name (of a session: its own)
    step VARCHAR,            -- the step's name (of a step: its own)
    epoch INTEGER,
    doc VARCHAR NOT NULL USING COMPRESSION zstd
)"""


def _fields(spec: str) -> str:
    return "unnest(json_transform(doc, '" + spec.replace(" ", "") + "'))"


RECORD_VIEWS = [
    "CREATE VIEW call_records AS SELECT id, session, step, epoch, doc FROM records WHERE kind = 'call'",
    "CREATE VIEW session_records AS SELECT session AS name, "
    + _fields('{"notebook": "VARCHAR", "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP", "holder": "VARCHAR"}')
    + " FROM records WHERE kind = 'session'",
    "CREATE VIEW step_records AS SELECT session, step AS name, epoch, "
    + _fields('{"status": "VARCHAR", "source": "VARCHAR", "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}')
    + " FROM records WHERE kind = 'step'",
    "CREATE VIEW step_runs AS SELECT id, session, step, epoch, started_at, ended_at, status, "
    "coalesce(calls_live, 0) AS calls_live, coalesce(calls_replayed, 0) AS calls_replayed, outputs, error, "
    "variables, replayed_calls FROM (SELECT id, session, step, epoch, "
    + _fields('{"started_at": "TIMESTAMP", "ended_at": "TIMESTAMP", "status": "VARCHAR", "calls_live": "INTEGER", '
              '"calls_replayed": "INTEGER", "outputs": "VARCHAR", "error": "VARCHAR", "variables": "VARCHAR", '
              '"replayed_calls": "VARCHAR"}')
    + " FROM records WHERE kind = 'run')",
    "CREATE VIEW journal_state AS SELECT doc->>'name' AS name, id AS value FROM records WHERE kind = 'state'",
    "CREATE VIEW cells AS SELECT session, kernel, position, kind, step, source, ran_at FROM (SELECT session, step, "
    + _fields('{"kernel": "VARCHAR", "position": "INTEGER", "kind": "VARCHAR", "source": "VARCHAR", '
              '"ran_at": "TIMESTAMP"}')
    + " FROM records WHERE kind = 'cell')",
]


def _stamp(column: str) -> str:
    return f"strftime({column}, '%Y-%m-%d %H:%M:%S.%f')"


MIGRATIONS.append(
    (
        8,
        "calls, sessions, steps, runs, the journal's state and cells in one table, `records`; the old names as views",
        [
            RECORDS,
            "INSERT INTO records SELECT 'call', id, session, step, epoch, doc FROM call_records ORDER BY id",
            "INSERT INTO records SELECT 'session', NULL, name, NULL, NULL, json_object('notebook', notebook, "
            f"'created_at', {_stamp('created_at')}, 'updated_at', {_stamp('updated_at')}, 'holder', json(holder))"
            "::VARCHAR FROM session_records ORDER BY created_at",
            "INSERT INTO records SELECT 'step', NULL, session, name, epoch, json_object('status', status, 'source', "
            f"source, 'created_at', {_stamp('created_at')}, 'updated_at', {_stamp('updated_at')})::VARCHAR "
            "FROM step_records ORDER BY created_at",
            "INSERT INTO records SELECT 'run', id, session, step, epoch, json_object('started_at', "
            f"{_stamp('started_at')}, 'ended_at', {_stamp('ended_at')}, 'status', status, 'calls_live', calls_live, "
            "'calls_replayed', calls_replayed, 'outputs', outputs, 'error', error, 'variables', variables, "
            "'replayed_calls', json(replayed_calls))::VARCHAR FROM step_runs ORDER BY id",
            "INSERT INTO records SELECT 'state', value, NULL, NULL, NULL, json_object('name', name)::VARCHAR "
            "FROM journal_state",
            "INSERT INTO records SELECT 'cell', NULL, session, step, NULL, json_object('kernel', kernel, 'position', "
            f"position, 'kind', kind, 'source', source, 'ran_at', {_stamp('ran_at')})::VARCHAR FROM cells "
            "ORDER BY ran_at, position",
            *(f"DROP TABLE {table}" for table in
              ("call_records", "session_records", "step_records", "step_runs", "journal_state", "cells")),
            *RECORD_VIEWS,
        ],
    )
)

LATEST = MIGRATIONS[-1][0]


def migrate(con, upto: int = LATEST) -> int:
    """Bring the schema of an open DuckDB connection to `upto` (LATEST); return the version found."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, "
        "description VARCHAR, applied_at TIMESTAMP NOT NULL DEFAULT now())"
    )
    (found,) = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    if found > LATEST:
        raise SchemaTooNewError(getattr(con, "path", None), found, LATEST)
    for version, description, statements in MIGRATIONS:
        if version <= found or version > upto:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                if callable(statement):
                    statement(con)
                else:
                    con.execute(statement)
            if version < 7:
                con.execute(
                    "INSERT INTO schema_version (version, description) VALUES (?, ?)", [version, description]
                )
            else:
                con.execute("DELETE FROM schema_version")
                con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return found
