"""Storage benchmark: journal file size after an N-turn growing chat (design target: <= 0.2 MB at 200 turns).

Method (printed again by the script):
- A ScriptedModelServer (a deterministic local stand-in, not a model) answers every chat completion over real
  loopback HTTP with a reply of exactly --message-chars characters (default 500).
- In a fresh temporary directory, `kernel_ext.session("bench", journal=DIR/"j.duckdb")` gets its own journal,
  and ONE `with kernel_ext.step("chat"):` block runs the whole conversation through the real `openai` client.
- Turn t appends one user message of exactly --message-chars characters: English-like words drawn from a fixed
  64-word vocabulary by random.Random(t) (realistic, compressible text, not random bytes). It then sends the
  whole list with `client.chat.completions.create(model=..., messages=messages)` and appends the reply message
  as the SDK returned it (`reply.choices[0].message`, as OpenAI's examples do); with --assistant-dict it appends
  `{"role": "assistant", "content": text}` instead, which is not byte-identical to the response's message.
- The end of the step closes the journal, which checkpoints it. Size = j.duckdb plus any leftover WAL file.
- The same is run with 0 turns (an empty session and step: the baseline), with 200 turns, and with --turns, so
  the per-turn increment can be checked for linearity. Also shown: unique message content (sum of message
  lengths) and what a "store the whole history on every call" design needs (sum over turns of the JSON length
  of the messages sent). MB = 1,000,000 bytes.

Run: python bench/storage.py [--turns 200] [--message-chars 500]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import duckdb
import openai

import kernel_ext
from kernel_ext.scripted_model import ScriptedModelServer

TARGET_TURNS, TARGET_BYTES = 200, 200_000
VOCAB = (
    "the", "agent", "reads", "a", "ticket", "and", "checks", "order", "status", "before", "it", "writes", "reply",
    "to", "customer", "about", "refund", "policy", "shipping", "delay", "invoice", "account", "billing", "address",
    "warehouse", "tracking", "number", "please", "confirm", "we", "will", "update", "you", "soon", "thanks", "for",
    "your", "patience", "our", "team", "has", "reviewed", "request", "details", "found", "that", "package", "left",
    "yesterday", "morning", "is", "on", "its", "way", "today", "with", "new", "label", "sorry", "inconvenience",
    "hello", "again", "next", "week",
)


def user_text(turn: int, chars: int) -> str:
    rng, words, size = random.Random(turn), [], 0
    while size <= chars:
        words.append(rng.choice(VOCAB))
        size += len(words[-1]) + 1
    return " ".join(words)[:chars]


def run(turns: int, chars: int, server: ScriptedModelServer, workdir: Path, as_dict: bool) -> dict:
    path = workdir / f"turns{turns}" / "j.duckdb"
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-bench", max_retries=0)
    messages: list = []
    naive = unique = 0
    with kernel_ext.session(f"bench-{turns}", journal=path).step("chat"):
        for turn in range(turns):
            messages.append({"role": "user", "content": user_text(turn, chars)})
            sent = [m if isinstance(m, dict) else m.model_dump(exclude_unset=True) for m in messages]
            naive += len(json.dumps(sent))  # what storing the whole history on every call costs
            reply = client.chat.completions.create(model="scripted-chat", messages=messages)
            message = reply.choices[0].message
            assert len(message.content) == chars, len(message.content)
            messages.append({"role": "assistant", "content": message.content} if as_dict else message)
            unique += 2 * chars
    files = sorted(path.parent.glob("j.duckdb*"))
    return {"turns": turns, "size": sum(f.stat().st_size for f in files), "files": [f.name for f in files],
            "unique": unique, "naive": naive, "path": path, "requests": server.stats()["requests"]}


def breakdown(path: Path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        n, stored, raw = con.execute(
            "SELECT count(*), coalesce(sum(octet_length(data)), 0), coalesce(sum(size), 0) FROM blobs").fetchone()
        db = con.execute("SELECT block_size, total_blocks, used_blocks, free_blocks FROM pragma_database_size()"
                         ).fetchone()
        lines = [f"  blobs: {n} rows, {stored:,} bytes stored ({raw:,} uncompressed)",
                 f"  blocks: {db[1]} x {db[0]} B (used {db[2]}, free {db[3]})"]
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        per = {}
        for table in tables:
            (per[table],) = con.execute(
                f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0"
            ).fetchone()
        lines.append("  data blocks per table (pragma_storage_info): " + ", ".join(f"{t}={b}" for t, b in per.items())
                     + f"; other used blocks (blobs.hash index, metadata): {db[2] - sum(per.values())}")
        return lines
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=TARGET_TURNS, help="turns of the long run (default 200)")
    parser.add_argument("--message-chars", type=int, default=500, help="characters per message (default 500)")
    parser.add_argument("--assistant-dict", action="store_true",
                        help='append {"role": "assistant", "content": text} instead of the reply message object')
    args = parser.parse_args(argv)
    chars = args.message_chars
    print(__doc__.split("Run:")[0].strip(), end="\n\n")
    results = {}
    with ScriptedModelServer(reply_chars=chars) as server, tempfile.TemporaryDirectory() as tmp:
        for turns in sorted({0, TARGET_TURNS, args.turns}):
            server.reset()
            results[turns] = r = run(turns, chars, server, Path(tmp), args.assistant_dict)
            assert r["requests"] == turns, r
            print(f"{turns:>5} turns: {r['size']:>10,} bytes = {r['size'] / 1e6:.3f} MB   files {r['files']}")
            print(f"             unique message content {r['unique']:>12,} bytes; "
                  f"whole-history-per-call design {r['naive']:>14,} bytes = {r['naive'] / 1e6:.2f} MB")
            if turns:
                print("\n".join(breakdown(r["path"])))
    base = results[0]["size"]
    print(f"\nbaseline (empty session + step): {base:,} bytes")
    previous = (0, base)
    for turns in sorted(t for t in results if t):
        size = results[turns]["size"]
        per_turn = (size - base) / turns
        step = (size - previous[1]) / (turns - previous[0])
        print(f"{turns:>5} turns: {per_turn:,.0f} bytes/turn over baseline; {step:,.0f} bytes/turn since "
              f"{previous[0]} turns (2 messages x {chars} chars = {2 * chars} raw bytes/turn)")
        previous = (turns, size)
    size = results[TARGET_TURNS]["size"]
    verdict = "PASS" if size <= TARGET_BYTES else "MISS"
    print(f"\n{verdict}: {size / 1e6:.3f} MB at {TARGET_TURNS} turns of {chars}-char messages "
          f"(target <= {TARGET_BYTES / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
