"""Values as data: what a tool returned, a recorded value or a tool's error, in a form loading cannot execute.

A journal travels (committed beside a notebook, sent to a colleague), so what it holds is read as data.
A value is stored as JSON whose special values carry a type tag: `{"$bytes": ...}`, `{"$datetime": ...}`,
`{"$model": "pkg.mod.Name", "data": ...}`. Loading it builds only JSON types, the standard library's plain
types, and instances of classes that are already imported in this process (a pydantic model, a dataclass,
an enum, an exception), found by name in `sys.modules`: loading never imports a module and never calls a
constructor or `__reduce__` a journal names. A value is stored as data only if it comes back equal (or, for
an exception, of the same type with the same arguments); anything else stays a pickle, which trust.py
signs and checks.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import json
import math
import sys
import uuid as _uuid
from collections.abc import Callable
from typing import Any

TAG = "$"  # a dict whose one key starts with this is a tagged value; other dicts with such keys are escaped


class NotData(Exception):
    """The value has no data form: it is kept as a signed pickle."""


def encode(value: Any) -> bytes:
    """The data form of `value`, as UTF-8 JSON; NotData if it has none that comes back the same."""
    try:
        text = json.dumps(_to_data(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotData(str(exc)) from None
    data = text.encode()
    try:
        back = decode(data)
    except Exception as exc:  # noqa: BLE001 - a class defined in a function, a model that does not validate again
        raise NotData(f"a {type(value).__name__} that does not load back from its data ({exc})") from None
    if not _same(back, value):
        raise NotData(f"a {type(value).__name__} that does not come back equal from its data")
    return data


def decode(data: bytes) -> Any:
    """The value of a data form. A class it names that is not imported in this process is a LookupError."""
    return _from_data(json.loads(data))


def display(data: bytes) -> Any:
    """The data form as plain JSON for people (views): tags kept as they are, no class looked up."""
    return json.loads(data)


def _qualname(kind: type) -> str:
    return f"{kind.__module__}:{kind.__qualname__}"


def _to_data(value: Any) -> Any:
    if value is None or type(value) in (bool, str, int):
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if type(value) is list:
        return [_to_data(v) for v in value]
    if type(value) is dict:
        if all(isinstance(k, str) for k in value) and not any(k.startswith(TAG) for k in value):
            return {k: _to_data(v) for k, v in value.items()}
        return {"$dict": [[_to_data(k), _to_data(v)] for k, v in value.items()]}
    for kind, (tag, to_data, _) in _PLAIN.items():
        if type(value) is kind:
            return {tag: to_data(value)}
    if isinstance(value, enum.Enum):
        return {"$enum": _qualname(type(value)), "value": _to_data(value.value)}
    if _is_model(value):
        return {"$model": _qualname(type(value)), "data": _to_data(value.model_dump(mode="python", round_trip=True))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$dataclass": _qualname(type(value)),
                "fields": {f.name: _to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, BaseException):
        state = {k: v for k, v in vars(value).items() if not k.startswith("__")}
        return {"$error": _qualname(type(value)), "args": [_to_data(a) for a in value.args],
                "state": {k: _to_data(v) for k, v in state.items()}}
    raise TypeError(f"no data form for {type(value).__name__}")


def _from_data(data: Any) -> Any:
    if isinstance(data, list):
        return [_from_data(v) for v in data]
    if not isinstance(data, dict):
        return data
    tag = next(iter(data), None) if data else None
    if tag is None or not tag.startswith(TAG):
        return {k: _from_data(v) for k, v in data.items()}
    if tag == "$dict":
        return {_hashable(_from_data(k)): _from_data(v) for k, v in data[tag]}
    if tag == "$float":
        return float(data[tag])
    for _kind, (name, _, from_data) in _PLAIN.items():
        if tag == name:
            return from_data(data[tag])
    if tag == "$enum":
        return _imported(data[tag], enum.Enum)(_from_data(data["value"]))
    if tag == "$model":
        model = _imported(data[tag], None)
        if not _is_model_class(model):
            raise LookupError(f"{data[tag]} is not a pydantic model")
        return model.model_validate(_from_data(data["data"]))
    if tag == "$dataclass":
        kind = _imported(data[tag], None)
        if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
            raise LookupError(f"{data[tag]} is not a dataclass")
        obj = kind.__new__(kind)  # as pickle does: the fields are set, no __init__ or __post_init__ runs
        for name, value in data["fields"].items():
            object.__setattr__(obj, name, _from_data(value))
        return obj
    if tag == "$error":
        kind = _imported(data[tag], BaseException)
        error = kind.__new__(kind)
        error.args = tuple(_from_data(a) for a in data["args"])
        for name, value in data.get("state", {}).items():
            setattr(error, name, _from_data(value))
        return error
    raise LookupError(f"a value tagged {tag!r}, which this release does not know")


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def _imported(name: str, base: type | None) -> Any:
    """A class named `module:qualname`, among modules already imported; never imports one."""
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        raise LookupError(f"{name.replace(':', '.')} is recorded, but its module {module_name} is not imported "
                          "here; import it before this step runs")
    obj: Any = module
    for part in qualname.split("."):
        # What the module or class holds, never getattr: a module's __getattr__ (a lazy import) would run
        # with a name the journal chose.
        obj = vars(obj).get(part) if hasattr(obj, "__dict__") else None
    if not isinstance(obj, type) or (base is not None and not issubclass(obj, base)):
        raise LookupError(f"{name.replace(':', '.')} is not a class of the kind recorded")
    return obj


def _is_model(value: Any) -> bool:
    return _is_model_class(type(value))


def _is_model_class(kind: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(kind, type) and issubclass(kind, pydantic.BaseModel)


def _same(back: Any, value: Any) -> bool:
    if isinstance(value, BaseException):
        # Exceptions do not compare equal; the same type, arguments, state and message do.
        return (type(back) is type(value) and back.args == value.args and str(back) == str(value)
                and vars(back) == {k: v for k, v in vars(value).items() if not k.startswith("__")})
    if isinstance(value, _dt.datetime) and back.tzinfo != value.tzinfo:
        return False  # equal instants in another zone: the zone would be lost
    try:
        return type(back) is type(value) and bool(back == value)
    except Exception:  # noqa: BLE001 - an __eq__ that cannot compare: keep the pickle
        return False


def _bytes_to(value: bytes) -> str:
    return base64.b64encode(value).decode()


# Types of the standard library stored under a tag of their own: (tag, to data, from data).
_PLAIN: dict[type, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = {
    bytes: ("$bytes", _bytes_to, base64.b64decode),
    tuple: ("$tuple", lambda v: [_to_data(x) for x in v], lambda d: tuple(_from_data(x) for x in d)),
    set: ("$set", lambda v: [_to_data(x) for x in v], lambda d: {_hashable(_from_data(x)) for x in d}),
    frozenset: ("$frozenset", lambda v: [_to_data(x) for x in v],
                lambda d: frozenset(_hashable(_from_data(x)) for x in d)),
    _dt.datetime: ("$datetime", _dt.datetime.isoformat, _dt.datetime.fromisoformat),
    _dt.date: ("$date", _dt.date.isoformat, _dt.date.fromisoformat),
    _dt.time: ("$time", _dt.time.isoformat, _dt.time.fromisoformat),
    _dt.timedelta: ("$timedelta", lambda v: [v.days, v.seconds, v.microseconds],
                    lambda d: _dt.timedelta(days=d[0], seconds=d[1], microseconds=d[2])),
    _uuid.UUID: ("$uuid", str, _uuid.UUID),
    decimal.Decimal: ("$decimal", str, decimal.Decimal),
}
