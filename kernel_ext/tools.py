"""`@tool`: functions whose effects happen once, however often the step around them runs.

Inside a durable step a tool call is journaled twice: a start record before the function
runs, and its result (or error) after. When the step runs again the recorded result is
returned without running the function; a recorded failure is raised again. A start without
an outcome means the process died inside the tool: the effect may or may not have happened.
Such a call runs again only for a tool declared `idempotent`; otherwise the step stops with
`InDoubtError` until someone settles it. A tool that takes an `idempotency_key` parameter gets
a key that stays the same across retries and replays, for APIs that deduplicate with one.
Outside a durable step a tool is a plain function call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import inspect
import json
import sys
import time
import types
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from journal import Split, split_document
from journal._time import now

from . import stored
from .errors import RecordedToolError, ToolRejected, ToolTimeoutError
from .runtime import ActiveStep, Claim, active_step, interrupted_by, journaled_call, outside_steps
from .secrets import redact_document

IDEMPOTENCY_PARAMETER = "idempotency_key"


class Tool:
    """A function made durable by `@tool`; call it like the function."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None, retries: int, backoff: float,
                 retry_on: tuple[type[BaseException], ...], timeout: float | None, idempotent: bool,
                 requires_approval: bool = False) -> None:
        if retries < 0 or backoff < 0 or (timeout is not None and timeout <= 0):
            raise ValueError("@tool: retries and backoff must be >= 0 and timeout > 0")
        self.fn, self.name = fn, name or fn.__name__
        self.retries, self.backoff, self.retry_on = retries, backoff, retry_on
        self.timeout, self.idempotent, self.requires_approval = timeout, idempotent, requires_approval
        self.signature = inspect.signature(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)
        # Frameworks that build their own tool from a function (the Agents SDK's @function_tool,
        # Pydantic AI's @agent.tool_plain) inspect it as a function: its signature (without the
        # key, which is the runtime's to give), and whether it is a coroutine function.
        self.__signature__ = self.signature.replace(
            parameters=[p for p in self.signature.parameters.values() if p.name != IDEMPOTENCY_PARAMETER])
        for attribute in ("__code__", "__defaults__", "__kwdefaults__"):
            if hasattr(fn, attribute):
                setattr(self, attribute, getattr(fn, attribute))

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # A descriptor like a function: a tool defined in a class binds to its instance.
        return self if instance is None else types.MethodType(self, instance)

    def __repr__(self) -> str:
        return f"<tool {self.name}{self.signature}>"

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        """The OpenAI function-tool definition, for `tools=[...]`."""
        from .tool_schema import function_schema

        return function_schema(self.fn, name=self.name, skip=(IDEMPOTENCY_PARAMETER,))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        active = active_step()
        if active is None:
            outside_steps(f"{{n}} call{{s}} of tool {self.name}")
            if IDEMPOTENCY_PARAMETER in self.signature.parameters:
                bound = self.signature.bind_partial(*args, **kwargs)
                if IDEMPOTENCY_PARAMETER not in bound.arguments:  # not durable here: a fresh key per call
                    kwargs = {**kwargs, IDEMPOTENCY_PARAMETER: f"dk-{uuid.uuid4().hex}"}
            return self.fn(*args, **kwargs)
        if self.requires_approval:
            return self._approved_call(active, args, kwargs)
        call = _ToolCall(self, active, args, kwargs)
        if self.is_async:
            return call.run_async()
        return call.run()

    def _approved_call(self, active: ActiveStep, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from .approvals import approve

        bound = self.signature.bind_partial(*args, **kwargs)
        details = {"tool": self.name, **_jsonable(_without_key(bound.arguments))}
        pending = approve(f"Run {self.name}?", details=details)

        def go(decision: Any) -> Any:
            if not decision.approved:
                raise ToolRejected(self.name, decision)
            call = _ToolCall(self, active, args, kwargs)
            return call.run_async() if self.is_async else call.run()

        if self.is_async:
            async def waited() -> Any:
                return await go(await pending)
            return waited()
        return go(pending)  # a pending approval suspends the step here, when it is read


@dataclasses.dataclass(frozen=True)
class _FrameworkTool:
    """The journaling policy of a tool defined by an agent framework: run once, no retries of ours."""

    name: str
    idempotent: bool = False
    retries: int = 0
    backoff: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    signature: inspect.Signature = inspect.Signature()
    answers_model: bool = True  # its result goes back to the model (not so a framework's own bookkeeping)

    def fn(self, run: Callable[[], Any]) -> Any:
        return run()


def call_tool(name: str, arguments: Mapping[str, Any], run: Callable[[], Any], *, idempotent: bool = False,
              answers_model: bool = True) -> Any:
    """Run a framework's tool call as a journaled tool call of the open step (a plain call outside one).

    `arguments` identify the call (with the tool's name); `run()` does it. The same rules as
    `@tool`: run once, the recorded result (or error) on replay, in doubt after a crash inside it.
    `answers_model=False` for a framework's own bookkeeping (a checkpoint, a session's memory), whose
    result is no tool result a model request will carry.
    """
    active = active_step()
    if active is None:
        outside_steps(f"{{n}} call{{s}} of tool {name}")
        return run()
    tool = _FrameworkTool(name, idempotent, answers_model=answers_model)
    return _ToolCall(tool, active, (run,), {}, arguments=arguments).run()


async def acall_tool(name: str, arguments: Mapping[str, Any], run: Callable[[], Awaitable[Any]], *,
                     idempotent: bool = False, answers_model: bool = True) -> Any:
    """`call_tool` for a tool run by awaiting `run()`."""
    active = active_step()
    if active is None:
        outside_steps(f"{{n}} call{{s}} of tool {name}")
        return await run()
    tool = _FrameworkTool(name, idempotent, answers_model=answers_model)
    return await _ToolCall(tool, active, (run,), {}, arguments=arguments).run_async()


class _ToolCall:
    def __init__(self, tool: Tool | _FrameworkTool, active: ActiveStep, args: tuple[Any, ...],
                 kwargs: dict[str, Any], *, arguments: Mapping[str, Any] | None = None) -> None:
        self.tool, self.active, self.args, self.kwargs = tool, active, args, kwargs
        bound = tool.signature.bind_partial(*args, **kwargs) if arguments is None else None
        self.request = Split()
        given = bound.arguments if bound is not None else arguments
        self.document = {"tool": tool.name, "args": redact_document(_jsonable(_without_key(given)))}
        self.fingerprint = split_document(self.document, self.request)
        self.claim: Claim = active.claim(self.fingerprint, f"tool {tool.name}", self.document, kind="tool",
                                         idempotent=tool.idempotent)
        if getattr(tool, "answers_model", True):
            active.session.tool_ledger.journaled(tool.name)  # its result, sent to the model, is accounted for
        if bound is not None and IDEMPOTENCY_PARAMETER in tool.signature.parameters and (
                IDEMPOTENCY_PARAMETER not in bound.arguments):
            self.kwargs = {**kwargs, IDEMPOTENCY_PARAMETER: self.claim.idempotency_key}

    def run(self) -> Any:
        if self.claim.recorded is not None:
            return self._replay()
        call_id = self._start()
        for attempt in range(1, self.tool.retries + 2):
            try:
                with journaled_call():
                    result = self._invoke()
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    self._interrupted(call_id, exc)
                    raise
                if self._again(exc, attempt):
                    time.sleep(self.tool.backoff * 2 ** (attempt - 1))
                    continue
                self._fail(call_id, exc, attempt)
                raise
            return self._complete(call_id, result, attempt)
        raise AssertionError("unreachable")

    async def run_async(self) -> Any:
        if self.claim.recorded is not None:
            return self._replay()
        call_id = self._start()
        for attempt in range(1, self.tool.retries + 2):
            try:
                with journaled_call():
                    result = await asyncio.wait_for(self.tool.fn(*self.args, **self.kwargs), self.tool.timeout)
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    self._interrupted(call_id, exc)
                    raise
                if isinstance(exc, asyncio.TimeoutError):
                    exc = self._timeout_error()
                if self._again(exc, attempt):
                    await asyncio.sleep(self.tool.backoff * 2 ** (attempt - 1))
                    continue
                self._fail(call_id, exc, attempt)
                raise exc from None
            return self._complete(call_id, result, attempt)
        raise AssertionError("unreachable")

    def _invoke(self) -> Any:
        if self.tool.timeout is None:
            return self.tool.fn(*self.args, **self.kwargs)
        # A thread cannot be stopped: after a timeout the function may still finish in the
        # background. That is why a timed-out call counts as failed, not as never started.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            return pool.submit(self.tool.fn, *self.args, **self.kwargs).result(self.tool.timeout)
        except concurrent.futures.TimeoutError:
            raise self._timeout_error() from None
        finally:
            pool.shutdown(wait=False)

    def _interrupted(self, call_id: int | None, exc: BaseException) -> None:
        # Its effect may have happened: a started call stays in doubt, now saying why.
        if call_id is not None and interrupted_by(exc):
            self.active.interrupted(call_id)

    def _timeout_error(self) -> ToolTimeoutError:
        return ToolTimeoutError(f"tool {self.tool.name!r} did not finish within {self.tool.timeout} s")

    def _again(self, exc: Exception, attempt: int) -> bool:
        return attempt <= self.tool.retries and isinstance(exc, self.tool.retry_on)

    def _start(self) -> int | None:
        """Journal the start of a tool that is not idempotent; None for one that is.

        Only a start row tells, after a crash, that a call may have taken effect. An idempotent
        tool simply runs again with the same key, so it is journaled once, with its outcome.
        """
        self.meta = {"idempotent": self.tool.idempotent, "idempotency_key": self.claim.idempotency_key}
        self.started = now()
        if self.tool.idempotent and self.claim.resume is None:
            return None
        return self.active.start(self.claim, kind="tool", name=self.tool.name, request=self.request,
                                 meta=self.meta, effect=not self.tool.idempotent)

    def _outcome(self, call_id: int | None, status: str, response: Split | None, key: str | None,
                 meta: dict[str, Any], attempts: int) -> None:
        if call_id is None:
            self.active.record(self.claim, kind="tool", name=self.tool.name, request=self.request,
                               response=response, response_key=key, meta=meta, started_at=self.started,
                               status=status, attempts=attempts)
        else:
            self.active.finish(call_id, status=status, response=response, response_key=key, meta=meta,
                               attempts=attempts)

    def _complete(self, call_id: int | None, result: Any, attempts: int) -> Any:
        try:
            data, body = stored.dump(result)
        except Exception as exc:
            error = TypeError(f"tool {self.tool.name!r} returned a value that cannot be journaled "
                              f"({type(exc).__name__}: {exc}); return plain data instead")
            self._fail(call_id, error, attempts)
            raise error from exc
        response = Split()
        self._outcome(call_id, "completed", response, response.add(data), {**self.meta, "body": body}, attempts)
        return result

    def _fail(self, call_id: int | None, exc: BaseException, attempts: int) -> None:
        kind = type(exc)
        meta = {**self.meta, "error": {"type": f"{kind.__module__}.{kind.__qualname__}", "message": str(exc)}}
        response, key = Split(), None
        try:
            data, meta["body"] = stored.dump(exc)
            key = response.add(data)
        except Exception:  # noqa: BLE001 - the type and message are journaled anyway
            response = None
        self._outcome(call_id, "failed", response, key, meta, attempts)

    def _replay(self) -> Any:
        recorded = self.claim.recorded  # loaded with its response blob (None for an unpicklable error)
        what = f"the recorded {'result' if recorded.status == 'completed' else 'error'} of tool {self.tool.name!r}"
        journal = self.active.session.journal.path
        if recorded.status == "completed":
            return stored.load(recorded.data, recorded.meta.get("body"), what, journal)
        if recorded.data is not None:
            raise stored.load(recorded.data, recorded.meta.get("body"), what, journal)
        raise _rebuild(recorded.meta.get("error", {}))


def _rebuild(error: Mapping[str, Any]) -> BaseException:
    """A recorded exception stored by type and message alone: that type if it is imported here, with the message.

    The type is looked up among modules already imported, never imported: a journal chooses no code to run.
    """
    path, message = error.get("type", "builtins.Exception"), error.get("message", "")
    module, _, name = path.rpartition(".")
    kind = getattr(sys.modules.get(module or "builtins"), name, None)
    if isinstance(kind, type) and issubclass(kind, BaseException):
        try:
            return kind(message)
        except Exception:  # noqa: BLE001 - a type whose constructor wants more than a message
            pass
    return RecordedToolError(f"{path}: {message}")


def _jsonable(value: Any) -> Any:
    """Arguments as JSON for the fingerprint. Stable across processes: never an object's address."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=json.dumps)
    if hasattr(value, "model_dump"):
        return _jsonable(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    text = repr(value)
    if " at 0x" in text:  # the default repr names a memory address, different in every process
        return {"$type": f"{type(value).__module__}.{type(value).__qualname__}"}
    return {"$repr": text}


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, retries: int = 0,
         backoff: float = 0.5, retry_on: type[BaseException] | Iterable[type[BaseException]] = Exception,
         timeout: float | None = None, idempotent: bool = False, requires_approval: bool = False) -> Any:
    """Make a function (sync or async) a durable tool.

    Args:
        name: the tool's name in the journal and its schema (default: the function's name).
        retries: extra attempts after a failure that is an instance of `retry_on`.
        backoff: seconds before the first retry; doubled for each further one.
        retry_on: exception types worth retrying (default: any Exception).
        timeout: seconds an attempt may take; a slower one fails with ToolTimeoutError.
        idempotent: running it twice does no harm, so a call in doubt after a crash is simply
            run again. Leave False for anything that charges, sends or books.
        requires_approval: every call first asks a person (`approve`), with the tool's name and
            arguments as details; a rejected call raises ToolRejected.
    """
    kinds = (retry_on,) if isinstance(retry_on, type) else tuple(retry_on)

    def wrap(function: Callable[..., Any]) -> Tool:
        return Tool(function, name=name, retries=retries, backoff=backoff, retry_on=kinds, timeout=timeout,
                    idempotent=idempotent, requires_approval=requires_approval)

    return wrap(fn) if fn is not None else wrap


def run_tool_calls(message: Any, tools: Iterable[Tool]) -> list[dict[str, Any]]:
    """Run a model message's `tool_calls` against `tools`; return the `role: tool` messages to append.

    A tool's exception becomes the content of its message (so the model can react), except
    durable-kernel's own errors (in doubt, strict replay), which stop the step.
    """
    replies = []
    for call, invoke in _tool_invocations(message, tools):
        try:
            result = invoke()
            if inspect.isawaitable(result):
                result.close()
                raise TypeError(f"tool {call.function.name!r} is async: use `await arun_tool_calls(...)`")
            content = _content(result)
        except Exception as exc:  # noqa: BLE001 - reported to the model
            content = _error_content(exc)
        replies.append({"role": "tool", "tool_call_id": call.id, "content": content})
    return replies


async def arun_tool_calls(message: Any, tools: Iterable[Tool]) -> list[dict[str, Any]]:
    """`run_tool_calls` for async tools (sync tools work here too); calls run one after another."""
    replies = []
    for call, invoke in _tool_invocations(message, tools):
        try:
            result = invoke()
            if inspect.isawaitable(result):
                result = await result
            content = _content(result)
        except Exception as exc:  # noqa: BLE001 - reported to the model
            content = _error_content(exc)
        replies.append({"role": "tool", "tool_call_id": call.id, "content": content})
    return replies


def _tool_invocations(message: Any, tools: Iterable[Tool]) -> list[tuple[Any, Callable[[], Any]]]:
    from .tool_schema import ToolArgumentError, bind_arguments

    by_name = {t.name: t for t in tools}
    invocations = []
    for call in getattr(message, "tool_calls", None) or []:
        function = call.function

        def invoke(function: Any = function) -> Any:
            chosen = by_name.get(function.name)
            if chosen is None:
                raise ToolArgumentError(f"unknown tool {function.name!r}; available: {', '.join(by_name)}")
            arguments = json.loads(function.arguments or "{}")
            if IDEMPOTENCY_PARAMETER in chosen.signature.parameters:
                # The key is the runtime's to give, never the model's.
                arguments[IDEMPOTENCY_PARAMETER] = None
            bound = bind_arguments(chosen.fn, arguments)
            return chosen(**_without_key(bound.arguments))

        invocations.append((call, invoke))
    return invocations


def _content(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, default=str)


def _error_content(error: Exception) -> str:
    from journal import JournalError

    from .errors import DurableError

    if isinstance(error, (DurableError, JournalError)):  # the runtime's or the journal's: not the model's to fix
        raise error
    return f"error: {type(error).__name__}: {error}"  # the model may correct itself


def _without_key(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if k != IDEMPOTENCY_PARAMETER}
