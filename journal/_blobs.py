"""Content-addressed blobs and the splitting of JSON documents into them.

An agent resends its whole conversation on every model call. Stored naively, a session of
n turns costs O(n^2) bytes. Here a conversation list (`messages`, or `input` of the
Responses API) is identified by a hash chain: the link of each message hashes its parent
link and the message. What is stored is a run of links: the messages a request adds to a
conversation the journal holds already, in one blob keyed by the last link, naming the link
they extend. A request that repeats the previous conversation plus two new messages adds one
run of two messages, so the journal grows with the unique content only. Assistant messages
inside a response (`choices[].message`) are items, blobs of their own, and a run refers to
such an item instead of repeating it when the same message comes back in the next request.
(Releases before schema 8 stored one node blob per link, `{"i": item, "p": parent}`, and every
message as an item: both forms are read.)

A stored document keeps its shape; split-off parts are replaced by references:
`{"$durable": "chain", "h": NODE}` and `{"$durable": "item", "h": HASH}`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import threading
import zlib
from collections.abc import Callable, Container, Mapping
from typing import Any

RAW, ZLIB, ZLIB_DICT, ZSTD_DICT = 0, 1, 2, 3  # 3: zstd with the same preset dictionary
# Most blobs are a few hundred bytes of JSON: too short for zlib to learn their vocabulary.
# A preset dictionary of what recurs in stored requests, responses, messages and chain nodes
# saves about a quarter. Codec 2 means exactly this dictionary: never edit it, add a codec.
_ZDICT_V1 = (
    b' the and to of a in is you that it for on with as are this be at have from or by we an will your'
    b'{"content":"","role":"user"}","role":"assistant"}","role":"system"}","role":"tool","tool_call_id":"call_'
    b'"tool_calls":[{"function":{"arguments":"{\\"","name":""},"id":"call_","type":"function"}]'
    b'{"i":"","p":"{"$durable":"chain","h":"{"$durable":"item","h":"'
    b'{"body":{"messages":,"model":","tools":[{"function":{"description":"","name":"","parameters":'
    b'{"properties":{"type":"object"},"required":["type":"string"},"type":"integer"},"type":"function"}]'
    b'"method":"POST","path":"chat/completions","query":[]}responses","embeddings'
    b'{"choices":[{"finish_reason":"stop","tool_calls","index":0,"logprobs":null,"message":'
    b'"created":,"id":"chatcmpl-","model":"gpt-4o-mini","object":"chat.completion","system_fingerprint":"fp_'
    b'"usage":{"completion_tokens":,"prompt_tokens":,"total_tokens":},"prompt_tokens_details":{"cached_tokens":0'
    b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0'
)
CHAIN_KEYS = frozenset({"messages", "input"})
ITEM_KEYS = frozenset({"message"})
_REF = "$durable"
# Below this size compression rarely pays; above it we keep the result
# only when it saves at least a tenth.
_COMPRESS_FROM = 96


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode(data: bytes) -> tuple[int, bytes]:
    if len(data) >= _COMPRESS_FROM:
        packer = zlib.compressobj(6, zdict=_ZDICT_V1)
        packed = packer.compress(data) + packer.flush()
        if len(packed) <= len(data) * 0.9:
            return ZLIB_DICT, packed
    return RAW, data


def decode(codec: int, data: bytes) -> bytes:
    if codec == ZLIB_DICT:
        unpacker = zlib.decompressobj(zdict=_ZDICT_V1)
        return unpacker.decompress(data) + unpacker.flush()
    if codec == ZLIB:
        return zlib.decompress(data)
    if codec == RAW:
        return bytes(data)
    raise ValueError(f"unknown blob codec {codec}; this journal was written by a newer durable-kernel")


_zstd = threading.local()  # a (de)compressor is not safe to share between threads: one pair per thread
_ZSTD_LEVEL = 12


def _zstd_pair() -> tuple[Any, Any]:
    if not hasattr(_zstd, "pair"):
        import zstandard

        preset = zstandard.ZstdCompressionDict(_ZDICT_V1, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        _zstd.pair = (zstandard.ZstdCompressor(level=_ZSTD_LEVEL, dict_data=preset),
                      zstandard.ZstdDecompressor(dict_data=preset))
    return _zstd.pair


def compress(data: bytes) -> tuple[int, bytes]:
    """(codec, bytes): zstd with the preset dictionary where it makes `data` smaller, else raw."""
    if len(data) < 64:
        return RAW, data
    packed = _zstd_pair()[0].compress(data)
    return (ZSTD_DICT, packed) if len(packed) < len(data) else (RAW, data)


def decompress(codec: int, data: bytes) -> bytes:
    if codec == ZSTD_DICT:
        return _zstd_pair()[1].decompress(data)
    if codec == RAW:
        return bytes(data)
    raise ValueError(f"unknown pack codec {codec}; this journal was written by a newer durable-kernel")


def unpack_inline(entry: list[Any]) -> bytes:
    """A blob kept inside a call's JSON row by releases before the append log: [codec, base64]."""
    codec, packed = entry
    return decode(codec, base64.b64decode(packed))


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
        if _REF in value:  # a user's own "$durable" key must not read back as a reference
            return {_REF: "escaped", "v": {k: _skeleton(v, split, k) for k, v in value.items()}}
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
    """Link `items` into the chain; the links of a prefix this process linked lately are reused.

    An agent sends its conversation again on every call with a message or two added: hashing only
    what is new keeps a call's cost flat as the conversation grows, instead of O(context).
    """
    links, nested = _known_prefix(items)
    for blobs in nested:  # a reused message's own split-off parts, for a writer that lacks them
        split.blobs.update(blobs)
    parent = links[-1][0] if links else None
    cacheable = True
    for value in items[len(links):]:
        inner = Split()
        item = canonical_json(_skeleton(value, inner, None))
        split.blobs.update(inner.blobs)
        if inner.chains:  # a conversation inside a message: linked as before, not remembered
            split.chains.extend(inner.chains)
            cacheable = False
        item_hash = digest(item)
        node = canonical_json({"i": item_hash, "p": parent})
        parent = digest(node)
        links.append((parent, node, item_hash, item))
        nested.append(inner.blobs)
    split.chains.append(links[::-1])
    if cacheable:
        _remember(items, links, nested)
    return parent  # type: ignore[return-value]


# The conversations linked last: (a private copy of the messages, their links root first, the blobs
# each message split off, the positions of messages that hold a number or a boolean). A copy, because
# a caller may edit a message in place and send it again.
_RECENT = 4
_recent: list[tuple[list[Any], list[Link], list[dict[str, bytes]], list[int]]] = []
_recent_lock = threading.Lock()


def _known_prefix(items: list[Any]) -> tuple[list[Link], list[dict[str, bytes]]]:
    best: tuple[int, list[Link], list[dict[str, bytes]]] = (0, [], [])
    with _recent_lock:
        recent = list(_recent)
    for messages, links, nested, numeric in recent:
        n = min(len(messages), len(items))
        if items[:n] != messages[:n]:  # one comparison in C in the common case, an extension
            n = next(i for i in range(n) if items[i] != messages[i])
        # `==` holds 1 == 1.0 == True, which JSON spells apart: where the known message has a number
        # or a boolean, its bytes decide. (Equal to a message of text only, a value is that text.)
        for i in numeric:
            if i >= n:
                break
            if canonical_json(_skeleton(items[i], Split(), None)) != links[i][3]:
                n = i
                break
        if n > best[0]:
            best = (n, links, nested)
    n, links, nested = best
    return links[:n], nested[:n]


def _text_only(value: Any) -> bool:
    kind = type(value)
    if kind is str or value is None:
        return True
    if kind is dict:
        return all(_text_only(v) for v in value.values())
    if kind is list:
        return all(_text_only(v) for v in value)
    return False


def _remember(items: list[Any], links: list[Link], nested: list[dict[str, bytes]]) -> None:
    with _recent_lock:
        for n, (messages, known, _, numeric) in enumerate(_recent):
            if len(messages) <= len(items) and links[len(messages) - 1:len(messages)] == known[-1:]:
                # This conversation extends one remembered: the new entry takes its copies over.
                copies, numeric = messages[:], numeric[:]
                del _recent[n]
                break
        else:
            copies, numeric = [], []
        for i in range(len(copies), len(items)):
            copies.append(copy.deepcopy(items[i]))
            if not _text_only(items[i]):
                numeric.append(i)
        _recent.insert(0, (copies, links, nested, numeric))
        del _recent[_RECENT:]


def new_links(links: list[Link], known: Container[str]) -> int:
    """How many of a conversation's links (tail first) come before the first one in `known`."""
    fresh = 0
    while fresh < len(links) and links[fresh][0] not in known:
        fresh += 1
    return fresh


def chain_run(links: list[Link], fresh: int, held: Callable[[str], bool]) -> tuple[str, bytes, dict[str, bytes]]:
    """The blob of a conversation's first `fresh` links (tail first), which the journal does not hold yet,
    and the messages it stores as items of their own.

    Keyed by the tail's link, it holds the messages those links add, oldest first (by reference where
    `held` says the journal has the message as an item already), and the link they extend. The key is
    the conversation's identity, not the digest of the bytes: two runs written for the same
    conversation from different starting points hold the same messages.

    A run from the conversation's first message (a new conversation, or one whose start changed, as a
    sliding window of the last N messages does on every call) keeps its larger messages as items: the
    next window that sends them again refers to them instead of storing them again.
    """
    parent = links[fresh][0] if fresh < len(links) else None
    items: dict[str, bytes] = {}
    messages = []
    for _, _, item, data in reversed(links[:fresh]):
        if not held(item) and parent is None and fresh > 1 and len(data) >= _ANCHORED:
            items[item] = data
        messages.append(b'{"$durable":"item","h":"' + item.encode() + b'"}' if held(item) or item in items else data)
    return links[0][0], b'{"m":[' + b",".join(messages) + b'],"p":' + json.dumps(parent).encode() + b"}", items


_ANCHORED = 256  # bytes: a message this large in a run from a conversation's start is an item of its own


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
        if ref == "escaped":
            return {k: _resolve(v, fetch) for k, v in value["v"].items()}
        if ref == "item":
            return _resolve(json.loads(fetch(value["h"])), fetch)
        if ref == "chain":
            runs = []
            node: str | None = value["h"]
            while node is not None:
                entry = json.loads(fetch(node))
                if "m" in entry:
                    runs.append([_resolve(message, fetch) for message in entry["m"]])
                else:  # a node of a release before schema 8: one message, an item of its own
                    runs.append([_resolve(json.loads(fetch(entry["i"])), fetch)])
                node = entry["p"]
            return [message for run in reversed(runs) for message in run]
        return {k: _resolve(v, fetch) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, fetch) for v in value]
    return value
