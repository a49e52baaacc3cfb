"""Schema of the journal and its migrations.

Each migration is applied once, in order, inside one transaction, and recorded in
`schema_version`. A journal written by a newer release (a version we do not know) is
refused rather than guessed at.

Only `blobs.hash` carries an index: DuckDB stores every index in blocks of its own, and
the journal must stay small for small sessions. Uniqueness of sessions and steps is kept
by the single writer (DuckDB locks the file for the process that opens it).
"""

from __future__ import annotations

from .errors import SchemaTooNewError

MIGRATIONS: list[tuple[int, str, list[str]]] = [
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

LATEST = MIGRATIONS[-1][0]


def migrate(con) -> int:
    """Bring the schema of an open DuckDB connection to LATEST; return the version found."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, "
        "description VARCHAR, applied_at TIMESTAMP NOT NULL DEFAULT now())"
    )
    (found,) = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    if found > LATEST:
        raise SchemaTooNewError(
            f"journal schema version {found} is newer than this release understands ({LATEST}); "
            "upgrade durable-kernel to open it"
        )
    for version, description, statements in MIGRATIONS:
        if version <= found:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                con.execute(statement)
            con.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)", [version, description]
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return found
