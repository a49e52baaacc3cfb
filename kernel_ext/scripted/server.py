"""A scripted stand-in for the OpenAI, Anthropic and Gemini HTTP APIs. It is NOT a model.

``ScriptedModelServer`` speaks enough of these HTTP APIs over real loopback HTTP for the real clients
to use them, and labels every text it makes up with "[scripted]":

- OpenAI: ``/v1/chat/completions``, ``/v1/responses``, ``/v1/embeddings``, ``GET /v1/models``
  (``openai.OpenAI(base_url=server.base_url)``; the OpenAI Agents SDK and Pydantic AI go through it);
- Anthropic Messages: ``/v1/messages`` (``anthropic.Anthropic(base_url=server.url)``), see
  ``kernel_ext.scripted.anthropic``;
- Gemini: ``/{v1,v1beta,v1alpha}/models/{model}:generateContent`` and ``:streamGenerateContent``
  (``google.genai.Client(http_options={"base_url": server.url})``), see ``kernel_ext.scripted.gemini``.

Every answer is a deterministic function of the request: identical requests get byte-identical
bodies, whether streamed or not (``stream`` changes framing, never content). Chat completions,
responses, messages and Gemini all script tool calls the same way: while the request offers a
function tool and fewer tool results follow the latest user prompt than ``tool_rounds`` (the
server's, or the request's ``metadata.tool_rounds``), the answer calls the first offered tool with
arguments made up from its JSON schema; then it answers with text. Each API module documents what
counts as a tool result there. Like the vendor, the server keeps the responses it answered (unless
``store`` is false) for ``previous_response_id``; one it does not keep (``forget_responses()``, or
another server) gets 400 "Previous response with id '...' not found.", as the API answers.

It counts and logs requests and injects faults on demand (error statuses, delays, hangs, and a
"hold" that parks call k so a test can SIGKILL the client while that call is in flight). A test in
another process drives a server started with ``python -m kernel_ext.scripted.server`` through
``/_control/`` (stats, requests, reset, configure, release, held). Control requests are not counted.
Faults apply to every counted request (anything outside ``/_control/``) of every API, decided in
arrival order; errors come in the shape of the API the path belongs to. Standard library only, on
purpose: the stand-in must not share code with the clients it tests.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, final
from urllib.parse import parse_qs, urlsplit

from . import anthropic as scripted_anthropic
from . import gemini as scripted_gemini
from . import responses as scripted_responses
from .common import (
    DEFAULT_MODEL,
    BadRequest,
    chunks,
    created,
    pieces,
    reply_text,
    request_hash,
    schema_args,
    text_of,
    tool_rounds_for,
    words,
)

_FINGERPRINT = "fp_scripted"
_ERRORS = {  # status -> (type, code), mirroring what OpenAI sends
    400: ("invalid_request_error", None), 404: ("invalid_request_error", "unknown_url"),
    408: ("timeout", None), 429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None),
    503: ("server_error", "service_unavailable"), 529: ("overloaded_error", "overloaded"),
}
_MODELS = (DEFAULT_MODEL, "scripted-embed")
_ROUTES = frozenset({("POST", "/v1/chat/completions"), ("POST", "/v1/responses"), ("POST", "/v1/embeddings"),
                     ("GET", "/v1/models"), ("POST", "/v1/messages")})
# Where each SDK puts its key: openai and anthropic 2.x a bearer token (older anthropic x-api-key),
# google-genai x-goog-api-key.
_KEY_HEADERS = ("Authorization", "x-api-key", "x-goog-api-key")


def _ints(value: Any) -> list[int]:
    return [int(v) for v in value]


_FAULTS: dict[str, Callable[[Any], Any]] = {  # configure() option -> coercion; ranges checked there
    "delay": float, "fail_next": _ints, "fail_rate": float, "fail_statuses": _ints, "seed": int,
    "retry_after": float, "hold_request": lambda v: None if v is None else int(v), "hang_next": int,
    "reply_chars": int, "tool_rounds": int,
}


def _api_of(path: str) -> str:
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    return "gemini" if scripted_gemini.owns(path) else "openai"


def _tool_call(tool: dict[str, Any], h: str) -> dict[str, Any]:
    fn = tool["function"]
    return {"id": f"call_{h[:12]}", "type": "function",
            "function": {"name": fn.get("name", ""), "arguments": json.dumps(schema_args(fn.get("parameters"), h))}}


def _pick_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or choice == "none":
        return None
    fns = [t for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        fns = [t for t in fns if t["function"].get("name") == choice["function"].get("name")] or fns
    return fns[0] if fns else None


def _chat_completion(body: dict[str, Any], tool_rounds: int, reply_chars: int) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a list of message objects")
    h = request_hash(body)
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    tool_results = sum(m.get("role") == "tool" for m in messages[last_user + 1:])
    tool = _pick_tool(body)
    if tool is not None and tool_results < tool_rounds_for(body, tool_rounds):
        call = _tool_call(tool, h)
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None,
                                   "tool_calls": [call]}
        finish, produced = "tool_calls", call["function"]["arguments"]
    else:
        snippet = next((text_of(m.get("content")) for m in reversed(messages)
                        if m.get("role") in ("user", "tool")), "")
        produced = reply_text(h, snippet, reply_chars)
        message, finish = {"role": "assistant", "content": produced, "refusal": None}, "stop"
    prompt, completion = words(*(text_of(m.get("content")) for m in messages)), words(produced)
    return {"id": f"chatcmpl-{h[:24]}", "object": "chat.completion", "created": created(h),
            "model": body.get("model") or _MODELS[0], "system_fingerprint": _FINGERPRINT,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


def _chat_chunks(done: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = {"id": done["id"], "object": "chat.completion.chunk", "created": done["created"],
               "model": done["model"], "system_fingerprint": _FINGERPRINT,
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return {**out, "usage": None} if include_usage else out

    choice = done["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    yield chunk({"role": "assistant", "content": None if calls else "", "refusal": None})
    for i, call in enumerate(calls):
        fn = call["function"]
        yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": fn["name"], "arguments": ""}}]})
        for part in chunks(fn["arguments"]):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
    for piece in [] if calls else pieces(choice["message"]["content"]):
        yield chunk({"content": piece})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield {**chunk({}), "choices": [], "usage": done["usage"]}


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("input")
    if isinstance(given, str) or (isinstance(given, list) and given and isinstance(given[0], int)):
        given = [given]  # one string, or one pre-tokenised input
    if not isinstance(given, list) or not given:
        raise BadRequest("'input' must be a non-empty string or list")
    model, data, tokens = body.get("model") or _MODELS[1], [], 0
    for index, one in enumerate(given):
        digest = hashlib.sha256(json.dumps([model, one]).encode()).digest()
        # k/32768 is exact in float32, so base64 and float encodings decode to identical values.
        vector = [v / 32768 for v in struct.unpack("<8h", digest[:16])]
        wire: Any = vector
        if body.get("encoding_format") == "base64":
            wire = base64.b64encode(struct.pack("<8f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": wire})
        tokens += len(one) if isinstance(one, list) else words(str(one))
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@dataclass
class _Plan:
    """What admission decided for one model request; decided under the lock, acted on outside it."""

    entry: dict[str, Any]
    status: int | None
    wait: bool
    gate: threading.Event
    delay: float
    retry_after: float
    reply_chars: int
    tool_rounds: int


@final  # typing.Self is 3.11+; being final lets __enter__/start() name the class instead
class ScriptedModelServer:
    """Deterministic OpenAI-compatible stand-in served from a daemon thread. Not a model."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, reply_chars: int = 0,
                 tool_rounds: int = 1) -> None:
        self.host, self.port = host, port
        self._defaults = {"reply_chars": reply_chars, "tool_rounds": tool_rounds}
        self._lock = threading.Condition()  # guards all mutable state; notified when _held changes
        self._stopping = threading.Event()
        self._gate = threading.Event()  # held/hung requests wait on it; release() swaps in a fresh one
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Responses the server keeps, as the vendor does (store=true): `previous_response_id` must name one.
        self._stored: set[str] = set()
        self.reset()

    def start(self) -> ScriptedModelServer:
        with self._lock:
            self._stopping.clear()
            self._gate = threading.Event()
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        # A short poll interval because shutdown() waits up to one interval; tests stop servers a lot.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="scripted-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._gate.set()
            self._lock.notify_all()
            connections = list(self._connections)
        if self._httpd is not None:
            self._httpd.shutdown()
            # Idle keep-alive connections would otherwise keep their handler threads blocked on read.
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server is not running; call start() first")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self._count, "by_path": dict(self._by_path),
                    "faults_injected": self._faults_injected, "max_in_flight": self._max_in_flight}

    def _in_flight(self, change: int) -> None:
        """Count requests being answered; the most at once since the last reset is in stats()."""
        with self._lock:
            self._now_in_flight += change
            self._max_in_flight = max(self._max_in_flight, self._now_in_flight)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._log)

    def forget_responses(self) -> None:
        """Lose every stored response, as a vendor does when its retention ends: a request naming one gets 400."""
        with self._lock:
            self._stored.clear()

    def keeps(self, response_id: str) -> bool:
        with self._lock:
            return response_id in self._stored

    def store(self, response_id: str) -> None:
        with self._lock:
            self._stored.add(response_id)

    def reset(self) -> None:
        """Zero counters, clear the log and all faults; also frees anything still held or hung."""
        with self._lock:
            self._count, self._faults_injected = 0, 0
            self._now_in_flight = getattr(self, "_now_in_flight", 0)  # requests being answered stay counted
            self._max_in_flight = self._now_in_flight
            self._by_path: dict[str, int] = {}
            self._log: list[dict[str, Any]] = []
            self._held: set[int] = set()
            self._faults: dict[str, Any] = {
                "delay": 0.0, "fail_next": [], "fail_rate": 0.0, "fail_statuses": [429, 500, 503, 529],
                "seed": 0, "retry_after": 0.0, "hold_request": None, "hang_next": 0, **self._defaults}
            self._rng = random.Random(0)
        self.release()

    def configure(self, **faults: Any) -> None:
        """Merge faults (see module docs); unknown keys raise TypeError, bad values ValueError."""
        unknown = set(faults) - set(_FAULTS)
        if unknown:
            raise TypeError(f"unknown fault option(s): {sorted(unknown)}")
        clean = {key: _FAULTS[key](value) for key, value in faults.items()}
        statuses = [*clean.get("fail_next", []), *clean.get("fail_statuses", [500])]
        if clean.get("fail_statuses") == [] or not all(400 <= code <= 599 for code in statuses):
            raise ValueError("fault statuses must be a non-empty list of HTTP error codes (400-599)")
        if not 0 <= clean.get("fail_rate", 0) <= 1 or any(
                isinstance(v, (int, float)) and v < 0 for k, v in clean.items() if k != "seed"):
            raise ValueError(f"fail_rate must be within [0, 1] and counts/durations >= 0: {faults}")
        with self._lock:
            self._faults.update(clean)
            if "seed" in clean or "fail_rate" in clean:  # a fresh, reproducible failure sequence
                self._rng = random.Random(self._faults["seed"])

    def wait_for_held(self, timeout: float = 30) -> int:
        """Block until a hold_request request is parked; return its n (TimeoutError if none)."""
        with self._lock:
            self._lock.wait_for(lambda: self._held or self._stopping.is_set(), timeout)
            if self._held:
                return min(self._held)
        if self._stopping.is_set():
            raise RuntimeError("server stopped while waiting for a held request")
        raise TimeoutError(f"no request was held within {timeout}s")

    def release(self) -> None:
        """Let every held or hung request continue; later holds/hangs block again."""
        with self._lock:
            gate, self._gate = self._gate, threading.Event()
            self._held.clear()
        gate.set()

    def _admit(self, path: str, body: Any, authorized: bool) -> _Plan:
        with self._lock:
            self._count += 1
            n, f = self._count, self._faults
            # Only presence is recorded: the key's value must never reach logs or test output.
            entry = {"n": n, "path": path, "body": body, "status": None, "authorized": authorized}
            self._log.append(entry)
            self._by_path[path] = self._by_path.get(path, 0) + 1
            status = None
            if f["fail_next"]:
                status = f["fail_next"].pop(0)
            elif f["fail_rate"] > 0 and self._rng.random() < f["fail_rate"]:
                status = self._rng.choice(f["fail_statuses"])
            hold, hang = f["hold_request"] == n, f["hang_next"] > 0
            if hang:
                f["hang_next"] -= 1
            self._faults_injected += (status is not None) + hold + hang
            if hold:
                self._held.add(n)
                self._lock.notify_all()
            return _Plan(entry, status, hold or hang, self._gate, f["delay"], f["retry_after"],
                         f["reply_chars"], f["tool_rounds"])

    def _set_status(self, entry: dict[str, Any] | None, status: int) -> None:
        if entry is not None:
            with self._lock:
                entry["status"] = status

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops bursts of concurrent clients

    def __init__(self, address: tuple[str, int], owner: ScriptedModelServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients vanishing is routine here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ScriptedModel/1.0"
    # Headers and body go out in separate writes; with Nagle's algorithm and the client's
    # delayed ACK every response would wait ~40 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # stdout carries only the CLI's URL line; per-request noise would drown test output

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        try:
            self._route()
        except OSError:  # the client died (often on purpose) or stop() shut the socket
            self.close_connection = True

    do_POST = do_PUT = do_DELETE = do_GET

    def _route(self) -> None:
        owner, url = self.server.owner, urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if url.path.startswith("/_control/"):
            return self._control(url.path.removeprefix("/_control/"), parse_qs(url.query), raw)
        owner._in_flight(+1)
        try:
            self._answer(owner, url, raw)
        finally:
            owner._in_flight(-1)

    def _answer(self, owner: ScriptedModelServer, url: Any, raw: bytes) -> None:
        body, bad_json = None, False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        plan = owner._admit(url.path, body, any(key in self.headers for key in _KEY_HEADERS))
        if plan.wait:
            plan.gate.wait()
        if (plan.delay > 0 and owner._stopping.wait(plan.delay)) or owner._stopping.is_set():
            self.close_connection = True  # stopping: drop the request unanswered, like a dead upstream
            return
        api = _api_of(url.path)
        if plan.status is not None:
            return self._error(plan.entry, plan.status, "Scripted fault injected.", plan.retry_after, api)
        gemini = scripted_gemini.PATH.fullmatch(url.path)
        if (self.command, url.path) not in _ROUTES and not (
                self.command == "POST" and gemini and gemini["method"] in scripted_gemini.METHODS):
            return self._error(plan.entry, 404, f"Invalid URL ({self.command} {url.path})", api=api)
        if bad_json or (self.command == "POST" and not isinstance(body, dict)):
            return self._error(plan.entry, 400, "We could not parse the JSON body of your request.", api=api)
        try:
            if gemini:
                self._gemini(gemini["model"], gemini["method"], parse_qs(url.query), body or {}, plan)
            else:
                self._model(url.path, body or {}, plan)
        except BadRequest as exc:
            self._error(plan.entry, 400, str(exc), api=api)

    def _model(self, path: str, body: dict[str, Any], plan: _Plan) -> None:
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "scripted"}
                    for m in _MODELS]
            return self._json(plan.entry, 200, {"object": "list", "data": data})
        if path == "/v1/embeddings":
            return self._json(plan.entry, 200, _embeddings(body))
        if path in ("/v1/responses", "/v1/messages"):
            if path == "/v1/responses":
                owner, previous = self.server.owner, body.get("previous_response_id")
                if previous is not None and not owner.keeps(previous):
                    raise BadRequest(f"Previous response with id '{previous}' not found.")
                done = scripted_responses.response(body, plan.tool_rounds, plan.reply_chars)
                events = scripted_responses.response_events(done)
                if body.get("store", True) is not False:
                    owner.store(done["id"])
            else:
                done = scripted_anthropic.message(body, plan.tool_rounds, plan.reply_chars)
                events = scripted_anthropic.message_events(done)
            if not body.get("stream"):
                return self._json(plan.entry, 200, done)
            return self._sse(plan.entry, (f"event: {kind}\ndata: {json.dumps(event)}\n\n" for kind, event in events))
        done = _chat_completion(body, plan.tool_rounds, plan.reply_chars)
        if not body.get("stream"):
            return self._json(plan.entry, 200, done)
        options = body.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = [f"data: {json.dumps(c)}\n\n" for c in _chat_chunks(done, usage)]
        self._sse(plan.entry, [*events, "data: [DONE]\n\n"])

    def _gemini(self, model: str, method: str, query: dict[str, list[str]], body: dict[str, Any],
                plan: _Plan) -> None:
        done = scripted_gemini.generate(model, body, plan.tool_rounds, plan.reply_chars)
        if method == "generateContent":
            return self._json(plan.entry, 200, done)
        parts = scripted_gemini.stream_chunks(done)
        if query.get("alt") != ["sse"]:  # without alt=sse Google streams one JSON array instead
            return self._json(plan.entry, 200, parts)
        # Google ends its SSE events with CRLF pairs; the SDK must cope with those, so send them.
        self._sse(plan.entry, (f"data: {json.dumps(part)}\r\n\r\n" for part in parts))

    def _control(self, name: str, query: dict[str, list[str]], raw: bytes) -> None:
        owner, verb = self.server.owner, (self.command, name)
        try:
            payload = json.loads(raw) if raw else {}
            if verb == ("GET", "stats"):
                return self._json(None, 200, owner.stats())
            if verb == ("GET", "requests"):
                return self._json(None, 200, owner.requests())
            if verb == ("GET", "held"):
                return self._json(None, 200, {"n": owner.wait_for_held(float(query.get("timeout", [30])[0]))})
            if verb == ("POST", "configure"):
                if not isinstance(payload, dict):
                    raise TypeError("configure takes a JSON object")
                owner.configure(**payload)
            elif verb == ("POST", "reset"):
                owner.reset()
            elif verb == ("POST", "release"):
                owner.release()
            else:
                return self._error(None, 404, f"Invalid URL ({self.command} /_control/{name})")
            return self._json(None, 200, {"ok": True})
        except TimeoutError as exc:
            self._error(None, 408, str(exc))
        except RuntimeError as exc:  # stopping
            self._error(None, 503, str(exc))
        except (TypeError, ValueError) as exc:
            self._error(None, 400, str(exc))

    def _error(self, entry: dict[str, Any] | None, status: int, message: str,
               retry_after: float = 0.0, api: str = "openai") -> None:
        headers = {}
        if status in (429, 503, 529):
            # openai-python and anthropic ignore a Retry-After of 0 and back off ~0.5s instead, so also
            # send the retry-after-ms header they prefer, with at least 1 ms, to keep test retries instant.
            headers = {"Retry-After": f"{retry_after:g}",
                       "retry-after-ms": str(max(1, round(retry_after * 1000)))}
        if api == "anthropic":
            return self._json(entry, status, scripted_anthropic.error_body(status, message), headers)
        if api == "gemini":
            return self._json(entry, status, scripted_gemini.error_body(status, message), headers)
        kind, code = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        error = {"message": message, "type": kind, "param": None, "code": code}
        self._json(entry, status, {"error": error}, headers)

    def _json(self, entry: dict[str, Any] | None, status: int, obj: Any,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.server.owner._set_status(entry, status)
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                           **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, entry: dict[str, Any] | None, events: Iterable[str]) -> None:
        self.server.owner._set_status(entry, 200)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")  # lets clients parse each event as it lands
        self.end_headers()
        for event in events:
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernel_ext.scripted.server",
                                     description="Serve the scripted stand-in model (not a model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--reply-chars", type=int, default=0, help="pad text replies to exactly N chars")
    parser.add_argument("--tool-rounds", type=int, default=1, help="tool calls before a text answer")
    args = parser.parse_args(argv)
    server = ScriptedModelServer(args.host, args.port, reply_chars=args.reply_chars,
                                 tool_rounds=args.tool_rounds).start()
    return serve(server, [f"scripted model server listening on {server.base_url}"])


def serve(server: ScriptedModelServer, banner: list[str]) -> int:
    """Serve a started server in the foreground, after printing `banner`, until SIGINT or SIGTERM; 0."""
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal() only works there
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: done.set())
    try:
        print("\n".join(banner), flush=True)
        while not done.wait(1.0):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
