"""Content-addressed blobs and the splitting of JSON documents into them.

An agent resends its whole conversation on every model call. Stored naively, a session of
n turns costs O(n^2) bytes. Here a conversation list (`messages`, or `input` of the
Responses API) is stored as a hash chain: each node names its parent node and one item,
every item is a blob of its own, and both are keyed by their content. A request that
repeats the previous conversation plus two new messages adds two items and two nodes, so
the journal grows with the unique content only. Assistant messages inside a response
(`choices[].message`) are items too, which is what makes them coincide with the same
message when it comes back in the next request.

A stored document keeps its shape; split-off parts are replaced by references:
`{"$durable": "chain", "h": NODE}` and `{"$durable": "item", "h": HASH}`.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any

RAW, ZLIB = 0, 1
CHAIN_KEYS = frozenset({"messages", "input"})
ITEM_KEYS = frozenset({"message"})
_REF = "$durable"
# Below this size compression rarely pays for its header; above it we keep the result
# only when it saves at least a tenth.
_COMPRESS_FROM = 96


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode(data: bytes) -> tuple[int, bytes]:
    if len(data) >= _COMPRESS_FROM:
        packed = zlib.compress(data, 6)
        if len(packed) <= len(data) * 0.9:
            return ZLIB, packed
    return RAW, data


def decode(codec: int, data: bytes) -> bytes:
    if codec == ZLIB:
        return zlib.decompress(data)
    if codec == RAW:
        return bytes(data)
    raise ValueError(f"unknown blob codec {codec}")


Link = tuple[str, bytes, str, bytes]  # node hash, node, item hash, item


class Split:
    """The blobs one document needs, in the order they must exist."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        # Chain links from the tail back to the root, so a writer can stop at the first node
        # it already has: every node and item behind a stored node is stored as well.
        self.chains: list[list[Link]] = []

    def add(self, data: bytes) -> str:
        key = digest(data)
        self.blobs.setdefault(key, data)
        return key


def split_document(value: Any, split: Split) -> str:
    """Store `value` as blobs in `split`; return the hash of its skeleton (its identity)."""
    return split.add(canonical_json(_skeleton(value, split, None)))


def _skeleton(value: Any, split: Split, key: str | None) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if k in ITEM_KEYS and isinstance(v, Mapping):
                out[k] = {_REF: "item", "h": split.add(canonical_json(_skeleton(v, split, k)))}
            else:
                out[k] = _skeleton(v, split, k)
        return out
    if isinstance(value, list):
        if key in CHAIN_KEYS and value:
            return {_REF: "chain", "h": _chain(value, split)}
        return [_skeleton(v, split, None) for v in value]
    return value


def _chain(items: list[Any], split: Split) -> str:
    parent: str | None = None
    links: list[Link] = []
    for value in items:
        item = canonical_json(_skeleton(value, split, None))
        item_hash = digest(item)
        node = canonical_json({"i": item_hash, "p": parent})
        parent = digest(node)
        links.append((parent, node, item_hash, item))
    links.reverse()
    split.chains.append(links)
    return parent  # type: ignore[return-value]


Fetch = Callable[[str], bytes]
_ITEM_REF = re.compile(rb'\{"\$durable":"item","h":"([0-9a-f]{32})"\}')


def item_references(stored: bytes) -> list[str]:
    """Hashes of the items a stored skeleton refers to (canonical JSON makes them greppable)."""
    return [m.decode() for m in _ITEM_REF.findall(stored)]


def join_document(key: str, fetch: Fetch) -> Any:
    """Rebuild a document stored by `split_document`."""
    return _resolve(json.loads(fetch(key)), fetch)


def _resolve(value: Any, fetch: Fetch) -> Any:
    if isinstance(value, dict):
        ref = value.get(_REF)
        if ref == "item":
            return _resolve(json.loads(fetch(value["h"])), fetch)
        if ref == "chain":
            items = []
            node: str | None = value["h"]
            while node is not None:
                entry = json.loads(fetch(node))
                items.append(_resolve(json.loads(fetch(entry["i"])), fetch))
                node = entry["p"]
            items.reverse()
            return items
        return {k: _resolve(v, fetch) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, fetch) for v in value]
    return value
