"""Where blobs live in DuckDB: the blobs written together are compressed together, in packs.

Compressed one by one, a 500-character message shrinks to half at best; compressed with the rest
of its conversation, to a fifth. So the blobs of one write (an absorb takes in a whole step's
calls at once) are concatenated into packs of about `PACK_BYTES` and each pack is compressed as
one zstd frame. A blob stays content-addressed and written once: its key leads to its pack and
its place in it. Reading one blob unpacks its whole pack, so a `Packs` cache keeps the packs read
through one connection, with the keys each holds.

Packs and keys share one table, `blobs`, because every non-empty DuckDB table costs a block of
its own: a pack's row has no hash and holds the compressed bytes; a blob's row has its hash
(the 16 bytes of the digest as a HUGEINT, half the size of the hex text) and where it lies.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import _blobs, _log, _seal
from ._blobs import compress, decompress  # a pack is compressed as a sealed blob is

TABLE = """CREATE TABLE blobs (
    hash HUGEINT,            -- a blob's digest; NULL on its pack's own row
    pack INTEGER NOT NULL,
    pos INTEGER,             -- where the blob starts in its unpacked pack
    size INTEGER NOT NULL,   -- bytes of the blob; on a pack's row, of the unpacked pack
    codec UTINYINT,          -- on a pack's row: 0 raw, 3 zstd with the preset dictionary v1
    data BLOB                -- on a pack's row: the pack's bytes
)"""
# Bigger packs compress a little better and cost more to unpack for one blob.
PACK_BYTES = 128 * 1024
_CACHE_BYTES = 32 * 1024 * 1024


def to_int(key: str) -> int:
    return int.from_bytes(bytes.fromhex(key), "big", signed=True)


def to_hex(value: int) -> str:
    return value.to_bytes(16, "big", signed=True).hex()


def _ints(keys: Iterable[str]) -> list[int]:
    return [to_int(key) for key in keys]


def write(con: Any, blobs: dict[str, bytes], table: str = "blobs") -> None:
    """Store `blobs` (none of them stored yet) as new packs, in the order given."""
    if not blobs:
        return
    (pack,) = con.execute(f"SELECT coalesce(max(pack), 0) FROM {table}").fetchone()
    keys: list[int] = []
    index: list[list[int]] = [[], [], []]  # pack, at, size of each blob
    packs: list[list[Any]] = []
    chunk: list[bytes] = []
    at = 0
    items = list(blobs.items())
    for n, (key, data) in enumerate(items):
        data = _seal.seal_blob(data)
        if not chunk:
            pack += 1
        keys.append(to_int(key))
        for column, value in zip(index, (pack, at, len(data)), strict=True):
            column.append(value)
        chunk.append(data)
        at += len(data)
        if at >= PACK_BYTES or n == len(items) - 1:
            codec, packed = compress(b"".join(chunk))
            packs.append([pack, at, codec, packed])
            chunk, at = [], 0
    con.execute(f"INSERT INTO {table} SELECT unnest(?::HUGEINT[]), unnest(?::INTEGER[]), unnest(?::INTEGER[]), "
                "unnest(?::INTEGER[]), NULL, NULL", [keys, *index])
    con.execute(f"INSERT INTO {table} VALUES " + ",".join(["(NULL, ?, NULL, ?, ?, ?)"] * len(packs)),
                [value for row in packs for value in row])


def stored(con: Any, keys: list[str]) -> set[str]:
    """Which of `keys` the journal holds."""
    if len(keys) == 1:  # the common case, and a point lookup is several times cheaper than IN
        rows = con.execute("SELECT hash FROM blobs WHERE hash = ?", _ints(keys)).fetchall()
    else:
        rows = con.execute("SELECT hash FROM blobs WHERE hash IN (SELECT unnest(?::HUGEINT[]))",
                           [_ints(keys)]).fetchall()
    return {to_hex(value) for (value,) in rows}


class Packs:
    """The packs read through one connection, unpacked, with where each of their blobs lies.

    Packs are never changed once committed; the owner clears the cache when a transaction that may
    have written one rolls back (its pack number is then given to the next pack written).
    """

    def __init__(self) -> None:
        self._data: OrderedDict[int, bytes] = OrderedDict()
        self._where: dict[str, tuple[int, int, int]] = {}  # key -> pack, at, size
        self._bytes = 0

    def clear(self) -> None:
        self._data.clear()
        self._where.clear()
        self._bytes = 0

    def get(self, con: Any, keys: Iterable[str]) -> dict[str, bytes]:
        """The blobs of `keys` that the journal holds, reading every pack not cached in one query."""
        wanted = list(dict.fromkeys(keys))
        missing = [key for key in wanted if key not in self._where]
        if missing:
            self._load(con, missing)
        out = {}
        for key in wanted:
            where = self._where.get(key)
            if where is not None:
                pack, at, size = where
                out[key] = self._data[pack][at:at + size]
        return out

    def _load(self, con: Any, keys: list[str]) -> None:
        rows = con.execute(
            """SELECT p.pack, any_value(p.codec), any_value(p.data), list(i.hash), list(i.pos), list(i.size)
               FROM blobs p JOIN blobs i ON i.pack = p.pack AND i.hash IS NOT NULL
               WHERE p.hash IS NULL AND p.pack IN (SELECT pack FROM blobs WHERE hash IN (SELECT unnest(?::HUGEINT[])))
               GROUP BY p.pack""",
            [_ints(keys)],
        ).fetchall()
        for pack, codec, data, hashes, starts, sizes in rows:
            unpacked = decompress(codec, data)
            self._data[pack] = unpacked
            self._bytes += len(unpacked)
            for value, at, size in zip(hashes, starts, sizes, strict=True):
                self._where[to_hex(value)] = (pack, at, size)
        while self._bytes > _CACHE_BYTES and len(self._data) > len(rows):
            old, unpacked = self._data.popitem(last=False)
            self._bytes -= len(unpacked)
            self._where = {key: where for key, where in self._where.items() if where[0] != old}


def repack(con: Any) -> None:
    """Migration 7: the blobs of the old layout (one compressed row each, hex keys) go into packs."""
    con.execute(TABLE.replace("CREATE TABLE blobs", "CREATE TABLE blob_packs"))
    (top,) = con.execute("SELECT coalesce(max(rowid), -1) + 1 FROM blobs").fetchone()
    # Written in batches of many packs, in the order the blobs were stored; read a page at a time.
    seen: set[str] = set()
    batch: dict[str, bytes] = {}
    size = 0
    for start in range(0, top, 1000):
        for key, codec, data in con.execute("SELECT hash, codec, data FROM blobs WHERE rowid >= ? AND rowid < ? "
                                            "ORDER BY rowid", [start, start + 1000]).fetchall():
            if key in seen:  # no key was enforced: a blob may have been stored twice
                continue
            seen.add(key)
            batch[key] = _blobs.decode(codec, data)
            size += len(batch[key])
            if size >= 16 * PACK_BYTES:
                write(con, batch, "blob_packs")
                batch, size = {}, 0
    write(con, batch, "blob_packs")
    con.execute("DROP TABLE blobs")
    con.execute("ALTER TABLE blob_packs RENAME TO blobs")



def keys(con: Any) -> set[str]:
    """Every blob's key."""
    return {to_hex(value) for (value,) in con.execute("SELECT DISTINCT hash FROM blobs WHERE hash IS NOT NULL"
                                                      ).fetchall()}


def remove(con: Any, dead: set[str]) -> tuple[int, int]:
    """Delete the blobs `dead`: (how many, bytes of packs freed).

    A pack is never changed once written (readers cache it by its number), so a pack that holds a
    dead blob is deleted whole and the blobs it holds that stay are written again in new packs.
    """
    rows = con.execute("SELECT hash, pack FROM blobs WHERE hash IS NOT NULL").fetchall()
    doomed = {to_int(key) for key in dead}
    touched = sorted({pack for value, pack in rows if value in doomed})
    if not touched:
        return 0, 0
    elsewhere = {value for value, pack in rows if pack not in touched}
    staying = {to_hex(value) for value, pack in rows
               if pack in touched and value not in doomed and value not in elsewhere}
    kept = Packs().get(con, staying)
    (before,) = con.execute("SELECT coalesce(sum(octet_length(data)), 0) FROM blobs").fetchone()
    con.execute("DELETE FROM blobs WHERE list_contains(?, pack)", [touched])
    write(con, kept)
    (after,) = con.execute("SELECT coalesce(sum(octet_length(data)), 0) FROM blobs").fetchone()
    return len({value for value, _ in rows if value in doomed}), before - after


def swept_marker(journal: Path) -> Path:
    """A file rewritten before blobs are deleted: a process that sees it change forgets the blobs it knew."""
    return _log.logs_dir(journal) / "blobs-swept"


def packed_keys(con: Any) -> set[str]:
    """The keys whose pack is in the journal (`durable recover` may have lost a pack's row)."""
    rows = con.execute("SELECT hash FROM blobs WHERE hash IS NOT NULL AND pack IN "
                       "(SELECT pack FROM blobs WHERE hash IS NULL)").fetchall()
    return {to_hex(value) for (value,) in rows}
