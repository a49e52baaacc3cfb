"""OpenAI function-tool definitions from a Python function's signature and docstring, and binding of the
model's JSON arguments back to the function. Imports neither openai nor IPython: tool modules load without them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import inspect
import json
import re
import types
import typing
from collections import abc
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, Literal, Union

__all__ = ["ToolArgumentError", "bind_arguments", "function_schema"]

# bool before int: bool is a subclass of int; datetime before date likewise.
_SCALARS: tuple[tuple[type, dict[str, str]], ...] = (
    (bool, {"type": "boolean"}), (int, {"type": "integer"}), (float, {"type": "number"}), (str, {"type": "string"}),
    (dt.datetime, {"type": "string", "format": "date-time"}), (dt.date, {"type": "string", "format": "date"}),
)
# Tuples, not sets: an annotation need not be hashable. typing.Sequence etc. have these classes as their origins.
_ARRAYS = (list, set, frozenset, tuple, abc.Sequence, abc.MutableSequence, abc.Set, abc.Collection, abc.Iterable)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
# These only mark TypedDict keys and say nothing about the value; matched by name to cover typing_extensions too.
_KEY_MARKERS = {"Required", "NotRequired", "ReadOnly"}
_RUNTIME_PARAMS = ("idempotency_key",)  # passed by the runtime itself, never by the model
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_PARAM_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments", "Other Parameters"}
_SECTIONS = _PARAM_SECTIONS | {"Returns", "Return", "Yields", "Yield", "Raises", "Examples", "Example", "Notes", "Note",
                               "Attributes", "See Also", "Warnings", "Warning", "References", "Todo"}
_GOOGLE_ENTRY = re.compile(r"(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_NUMPY_ENTRY = re.compile(r"(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?")


class ToolArgumentError(ValueError):
    """The model called a tool with arguments its function cannot take."""


def function_schema(
    fn: Callable[..., Any], *, name: str | None = None, skip: Collection[str] = _RUNTIME_PARAMS
) -> dict[str, Any]:
    """{"type": "function", "function": {"name", "description", "parameters": JSON schema, "strict": False}}"""
    if not callable(fn):
        raise TypeError(f"function_schema() needs a callable, got {type(fn).__name__}")
    summary, param_docs = _parse_docstring(inspect.getdoc(fn) or "")
    hints = _type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in _VARIADIC or param.name in ("self", "cls") or param.name in skip:
            continue
        prop = _schema(hints.get(param.name, param.annotation))
        if param.name in param_docs:
            prop.setdefault("description", param_docs[param.name])  # an Annotated description is more specific
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        else:
            default = param.default.value if isinstance(param.default, enum.Enum) else param.default
            with contextlib.suppress(TypeError, ValueError):  # a default JSON cannot carry is left out
                prop["default"] = json.loads(json.dumps(default, allow_nan=False))
        properties[param.name] = prop
    parameters = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    if defs := _hoist_defs(properties, {}):
        parameters["$defs"] = defs
    function = {"name": name or getattr(fn, "__name__", type(fn).__name__), "description": summary}
    return {"type": "function", "function": {**function, "parameters": parameters, "strict": False}}


def bind_arguments(fn: Callable[..., Any], arguments: Mapping[str, Any]) -> inspect.BoundArguments:
    """Bind a model's JSON arguments to `fn`; ISO strings become datetimes/dates and values become Enum members."""
    tool, signature = getattr(fn, "__name__", type(fn).__name__), inspect.signature(fn)
    named = [p for p in signature.parameters.values() if p.kind not in _VARIADIC]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    if unknown := [] if takes_any else [k for k in arguments if k not in {p.name for p in named}]:
        takes = ", ".join(p.name for p in named if p.name not in _RUNTIME_PARAMS) or "no arguments"
        raise ToolArgumentError(f"tool {tool!r} got unexpected {_plural('argument', unknown)}; it takes: {takes}")
    if missing := [p.name for p in named if p.default is inspect.Parameter.empty and p.name not in arguments]:
        raise ToolArgumentError(f"tool {tool!r} is missing {_plural('argument', missing)}")
    hints = _type_hints(fn)
    annotations = {p.name: hints.get(p.name, p.annotation) for p in named}
    values = {k: _convert(tool, k, annotations.get(k), v) for k, v in arguments.items()}
    # Positional-only parameters cannot be passed by name; an omitted one takes its default to keep later ones in place.
    args = [values.pop(p.name, p.default) for p in named if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    return signature.bind(*args, **values)


def _type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:  # an unresolvable forward reference must not cost the whole schema; callers fall back
        return dict(getattr(obj, "__annotations__", None) or {})


def _schema(tp: Any, seen: frozenset[type] = frozenset()) -> dict[str, Any]:
    """The JSON schema of a type annotation; {} (any value) for what JSON schema cannot say."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty or isinstance(tp, (str, typing.ForwardRef)):
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    if origin is Annotated:
        schema = _schema(args[0], seen)
        text = next((m for m in args[1:] if isinstance(m, str)), None)
        return schema if text is None else {**schema, "description": text}
    if getattr(origin, "_name", None) in _KEY_MARKERS:
        return _schema(args[0], seen)
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [_schema(a, seen) for a in args]}
    if origin is Literal:
        return _enum([a.value if isinstance(a, enum.Enum) else a for a in args])
    if tp in _ARRAYS or origin in _ARRAYS:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array"}  # fixed-length tuples would need prefixItems
        return {"type": "array", "items": _schema(args[0], seen)} if args else {"type": "array"}
    if tp in _MAPPINGS or origin in _MAPPINGS:
        return {"type": "object", "additionalProperties": _schema(args[1], seen)} if args else {"type": "object"}
    if not isinstance(tp, type):
        return {}
    if tp in seen:  # a recursive type: stop rather than recurse forever
        return {"type": "object"}
    if issubclass(tp, enum.Enum):
        return _enum([m.value for m in tp])
    if issubclass(tp, dict) and hasattr(tp, "__required_keys__"):  # typing's or typing_extensions' TypedDict
        hints, keys = _type_hints(tp), tp.__required_keys__
        # With string annotations the class could not see Required/NotRequired when it was made; the hints can.
        marks = {k: getattr(typing.get_origin(v), "_name", None) for k, v in hints.items()}
        required = [k for k, m in marks.items() if m == "Required" or (k in keys and m != "NotRequired")]
        props = {k: _schema(v, seen | {tp}) for k, v in hints.items()}
        return {"type": "object", "properties": props, "required": required}
    if dataclasses.is_dataclass(tp):
        hints, fields = _type_hints(tp), dataclasses.fields(tp)
        props = {f.name: _schema(hints.get(f.name, f.type), seen | {tp}) for f in fields}
        required = [f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING]
        return {"type": "object", "properties": props, "required": required}
    if hasattr(tp, "model_json_schema"):
        return tp.model_json_schema()
    return next((dict(schema) for base, schema in _SCALARS if issubclass(tp, base)), {})


def _enum(values: list[Any]) -> dict[str, Any]:
    # A Literal may mix types (or hold None); then only the values are given.
    kinds = {next((s["type"] for base, s in _SCALARS if isinstance(v, base)), None) for v in values}
    return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 and None not in kinds else {"enum": values}


def _hoist_defs(node: Any, defs: dict[str, Any]) -> dict[str, Any]:
    # Pydantic refers to nested models as "#/$defs/Name", which resolves only from the root of "parameters".
    if isinstance(node, dict):
        defs.update(node.pop("$defs", {}))
        node = list(node.values())
    for value in node if isinstance(node, list) else []:
        _hoist_defs(value, defs)
    return defs


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary and the parameter descriptions of a Google- or numpy-style docstring."""
    lines = doc.splitlines()

    def is_header(i: int) -> bool:
        text, below = lines[i].strip(), lines[i + 1].strip() if i + 1 < len(lines) else ""
        return (text.endswith(":") and text[:-1] in _SECTIONS) or bool(text and re.fullmatch(r"-{3,}", below))

    headers = [i for i in range(len(lines)) if is_header(i)]
    summary = " ".join(" ".join(lines[: headers[0] if headers else None]).split())
    params: dict[str, str] = {}
    for h, end in zip(headers, [*headers[1:], len(lines)], strict=False):
        title = lines[h].strip()
        if title.rstrip(":") in _PARAM_SECTIONS:
            numpy = not title.endswith(":")  # a numpy header is underlined instead
            params.update(_entries(lines[h + (2 if numpy else 1) : end], _NUMPY_ENTRY if numpy else _GOOGLE_ENTRY))
    return summary, params


def _entries(body: list[str], entry: re.Pattern[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    names: list[str] = []
    indent = next((len(line) - len(line.lstrip()) for line in body if line.strip()), 0)  # the first entry's
    for line in body:
        depth = len(line) - len(line.lstrip())
        if not line.strip():
            continue
        if depth < indent:  # text after a Google section, outdented to the header
            break
        if depth == indent:
            match = entry.fullmatch(line.strip())
            names = [n.strip().lstrip("*") for n in match.group(1).split(",")] if match else []
            for n in names:
                found[n] = match.group(2) if entry is _GOOGLE_ENTRY else ""  # numpy puts the type there
        else:
            for n in names:
                found[n] = f"{found[n]} {line.strip()}"
    return {n: " ".join(text.split()) for n, text in found.items() if text.strip()}


def _convert(tool: str, name: str, tp: Any, value: Any) -> Any:
    while typing.get_origin(tp) in (Annotated, Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) is not Annotated and len(options) != 1:
            return value  # a real union: which member was meant is not ours to guess
        tp = options[0]
    try:
        if isinstance(tp, type) and issubclass(tp, enum.Enum) and not isinstance(value, tp) and value is not None:
            return tp(value)
        if isinstance(value, str) and tp in (dt.datetime, dt.date):
            # Python 3.10's fromisoformat rejects the "Z" that models usually write
            return tp.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") and tp is dt.datetime else value)
    except ValueError as exc:
        raise ToolArgumentError(f"tool {tool!r} argument {name!r}: {exc}") from None
    return value


def _plural(word: str, names: list[str]) -> str:
    return f"{word}{'s' if len(names) > 1 else ''} " + ", ".join(repr(n) for n in names)
