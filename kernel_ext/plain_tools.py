"""Plain functions the model calls as tools, journaled without a code change.

The vendors' docs teach a loop that sends the model's tool calls to plain functions
(`available[name](**args)`). When a request of a durable step offers the model a function tool
named N (its `tools=`), and the notebook (or a script's `__main__`) has a plain function under
that name (a global N, or the value under key N of a global dict), that function is adopted:
from then on, calling it inside a durable step is a journaled tool call, as if it had been
decorated with `@tool` (run once, its result replayed, in doubt after a crash inside it), however
it is reached, through the name or through a dict built before. Outside steps it runs as always.

The function object itself must change for a dict built before to see it, so its code is
replaced by a small trampoline with the same parameters (defaults, annotations, name and
signature stay those of the function). The trampoline holds the original code, so a function
pickled with cloudpickle still works where this module is importable. Functions that are not
adopted (a closure, a method, a `functools.partial`, a callable object, a generator, a function
imported from a module) are still named under the cell as not journaled (see `tool_results`).
"""

from __future__ import annotations

import inspect
import sys
import threading
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .tool_results import check_request, field_of

if TYPE_CHECKING:
    from .runtime import ActiveStep

_TRAMPOLINE = "__durable_trampoline__"  # the docstring of every trampoline: one is never adopted twice
_ORIGINAL = "__durable_original_code__"  # replaced by the adopted function's own code
_SKIP = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
_lock = threading.Lock()


def check_offered(active: ActiveStep, request: Any, describe: str) -> None:
    """Adopt the notebook's functions that `request` offers as tools, then account for the tool results it
    sends back (see `tool_results.check_request`)."""
    adopt_named(request)
    check_request(active, request, describe)


def adopt_named(request: Any) -> None:
    """Adopt the notebook's plain functions that `request` (a model request's kwargs or JSON body) offers as tools."""
    names = list(tool_names(request))
    if not names:
        return
    namespace = _namespace()
    if namespace is None:
        return
    for name in names:
        for function in _candidates(namespace, name):
            adopt(function, name)


def adopt(function: types.FunctionType, name: str) -> bool:
    """Make calls of `function` inside durable steps journaled tool calls named `name`; False if it cannot be."""
    code = function.__code__
    if function.__closure__ is not None or code.co_flags & _SKIP:
        return False
    with _lock:
        if _TRAMPOLINE in function.__code__.co_consts:
            return True
        trampoline = _trampoline(code, name)
        if trampoline is None:
            return False
        function.__code__ = trampoline
    return True


def tool_names(request: Any) -> Iterator[str]:
    """The names of the function tools a request offers: OpenAI chat and Responses, Anthropic, Gemini."""
    tools = field_of(request, "tools")
    if tools is None:
        tools = field_of(field_of(request, "config"), "tools")
    if not isinstance(tools, (list, tuple)):
        return
    for entry in tools:
        function = field_of(entry, "function")
        name = field_of(function, "name") if function is not None else field_of(entry, "name")
        if isinstance(name, str):
            yield name
        for declaration in field_of(entry, "function_declarations", "functionDeclarations") or ():
            if isinstance(field_of(declaration, "name"), str):
                yield field_of(declaration, "name")


def dispatch(code: types.CodeType, namespace: dict[str, Any], name: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
    """Run an adopted function's own code as a journaled tool call (plainly outside steps or inside a tool)."""
    __tracebackhide__ = True
    from .runtime import active_step, in_journaled_call
    from .tools import call_tool

    own = types.FunctionType(code, namespace, code.co_name)
    if active_step() is None or in_journaled_call():
        return own(*args, **kwargs)
    return call_tool(name, _arguments(code, args, kwargs), lambda: own(*args, **kwargs))


async def adispatch(code: types.CodeType, namespace: dict[str, Any], name: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    """`dispatch` for an `async def` function."""
    __tracebackhide__ = True
    from .runtime import active_step, in_journaled_call
    from .tools import acall_tool

    own = types.FunctionType(code, namespace, code.co_name)
    if active_step() is None or in_journaled_call():
        return await own(*args, **kwargs)
    return await acall_tool(name, _arguments(code, args, kwargs), lambda: own(*args, **kwargs))


def _arguments(code: types.CodeType, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name (what identifies it in the journal, as for `@tool`)."""
    named = dict(zip(code.co_varnames[:code.co_argcount], args, strict=False))
    extra = args[code.co_argcount:]
    if extra:
        named[code.co_varnames[code.co_argcount + code.co_kwonlyargcount]] = list(extra)
    return {**named, **kwargs}


def _parameters(code: types.CodeType) -> tuple[str, str, str] | None:
    """(the trampoline's parameter list, its positional arguments, its keyword arguments) as source."""
    names = code.co_varnames
    positional = list(names[:code.co_argcount])
    keyword = list(names[code.co_argcount:code.co_argcount + code.co_kwonlyargcount])
    at = code.co_argcount + code.co_kwonlyargcount
    star = names[at] if code.co_flags & inspect.CO_VARARGS else None
    at += star is not None
    stars = names[at] if code.co_flags & inspect.CO_VARKEYWORDS else None
    if not all(n.isidentifier() for n in [*positional, *keyword, star or "a", stars or "a"]):
        return None  # a parameter the compiler named itself (a tuple parameter of old)
    params = list(positional)
    if code.co_posonlyargcount:
        params.insert(code.co_posonlyargcount, "/")
    if star or keyword:
        params.append(f"*{star}" if star else "*")
    params += keyword
    if stars:
        params.append(f"**{stars}")
    call_args = ", ".join(positional + ([f"*{star}"] if star else []))
    call_kwargs = ", ".join([f"{n!r}: {n}" for n in keyword] + ([f"**{stars}"] if stars else []))
    return ", ".join(params), f"({call_args}{',' if call_args else ''})", f"{{{call_kwargs}}}"


def _trampoline(code: types.CodeType, name: str) -> types.CodeType | None:
    parts = _parameters(code)
    module = "_durable_plain_tools_"
    if parts is None or module in code.co_varnames or "globals" in code.co_varnames:
        return None
    params, call_args, call_kwargs = parts
    asynchronous = bool(code.co_flags & inspect.CO_COROUTINE)
    run = f"{'await ' if asynchronous else ''}{module}.{'adispatch' if asynchronous else 'dispatch'}"
    source = (f"{'async ' if asynchronous else ''}def trampoline({params}):\n"
              f"    {_TRAMPOLINE!r}\n"
              f"    import kernel_ext.plain_tools as {module}\n"
              f"    return {run}({_ORIGINAL!r}, globals(), {name!r}, {call_args}, {call_kwargs})\n")
    compiled = compile(source, code.co_filename, "exec")
    inner = next(c for c in compiled.co_consts if isinstance(c, types.CodeType))
    # The original code travels as a constant in place of the placeholder: a pickled function keeps it.
    consts = tuple(code if c == _ORIGINAL and isinstance(c, str) else c for c in inner.co_consts)
    return inner.replace(co_consts=consts, co_name=code.co_name, co_qualname=code.co_qualname,
                         co_firstlineno=code.co_firstlineno)


def _namespace() -> dict[str, Any] | None:
    if "IPython" in sys.modules:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            return shell.user_ns
    main = sys.modules.get("__main__")
    return getattr(main, "__dict__", None)


def _candidates(namespace: dict[str, Any], name: str) -> Iterator[types.FunctionType]:
    """Plain functions of the notebook the tool `name` may reach: the global `name`, and `name` in global dicts."""
    found: dict[int, types.FunctionType] = {}
    values: list[Any] = [namespace.get(name)]
    values += [value.get(name) for value in list(namespace.values())
               if type(value) is dict and value is not namespace and name in value]
    for value in values:
        if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
            found[id(value)] = value
    yield from found.values()
