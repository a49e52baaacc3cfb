"""`kernel_ext.tool_schema`: tool definitions from signatures and docstrings, and argument binding. No kernels."""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Annotated, Any, List, Literal, Optional, TypedDict, Union  # noqa: UP035 - the old spellings too

import pytest
import typing_extensions  # an openai dependency

from kernel_ext.tool_schema import ToolArgumentError, bind_arguments, function_schema

# Types live at module level: the annotations below are strings (`from __future__ import annotations`) and
# get_type_hints resolves them in the module's globals.


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(TypedDict, total=False):
    street: str
    zip_code: typing.Required[str]


class Point(TypedDict):
    x: float
    y: float
    label: typing.NotRequired[str]


@dataclasses.dataclass
class Booking:
    guest: str
    nights: int = 1
    tags: list[str] = dataclasses.field(default_factory=list)


def params(fn: Any, **kwargs: Any) -> dict[str, Any]:
    return function_schema(fn, **kwargs)["function"]["parameters"]


def props(fn: Any, **kwargs: Any) -> dict[str, Any]:
    return params(fn, **kwargs)["properties"]


def lookup(city: str, day: int, metric: bool = True, scale: float = 1.5) -> str:
    """Look up the weather
    for a city.

    Args:
        city (str): Name of the city,
            e.g. "Oslo".
        day: Days from today.

    Returns:
        A forecast.

    Raises:
        KeyError: unknown city.
    """
    return city


def test_envelope_name_description_and_required():
    schema = function_schema(lookup)
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "lookup"
    assert fn["description"] == "Look up the weather for a city."
    assert fn["strict"] is False
    assert fn["parameters"] == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": 'Name of the city, e.g. "Oslo".'},
            "day": {"type": "integer", "description": "Days from today."},
            "metric": {"type": "boolean", "default": True},
            "scale": {"type": "number", "default": 1.5},
        },
        "required": ["city", "day"],
        "additionalProperties": False,
    }
    assert function_schema(lookup, name="weather")["function"]["name"] == "weather"


def test_numpy_docstring():
    def area(width, height=2.0):
        """Area of a rectangle.

        Parameters
        ----------
        width : float
            The width, in metres,
            measured inside.
        height : float, optional
            The height.

        Returns
        -------
        float
        """

    schema = function_schema(area)["function"]
    assert schema["description"] == "Area of a rectangle."
    assert schema["parameters"]["properties"] == {
        "width": {"description": "The width, in metres, measured inside."},
        "height": {"description": "The height.", "default": 2.0},
    }
    assert schema["parameters"]["required"] == ["width"]


def test_no_docstring_and_unannotated_or_any_take_any_value():
    def f(a, b: Any, c: typing.Any = None):
        pass

    assert function_schema(f)["function"]["description"] == ""
    assert props(f) == {"a": {}, "b": {}, "c": {"default": None}}


def test_docstring_with_only_sections_and_text_after_args():
    def f(x: int):
        """Args:
            x: The x.

        More notes, outdented, are not part of x.
        """

    assert function_schema(f)["function"]["description"] == ""
    assert props(f)["x"] == {"type": "integer", "description": "The x."}


def test_optional_with_default_is_not_required():
    def f(a: Optional[int] = None, b: str | None = "x", c: int | None = ..., d: Optional[str] = None):  # noqa: UP045
        pass

    def g(a: int | None):
        pass

    p = params(f)
    assert p["properties"]["a"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert p["properties"]["b"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": "x"}
    assert "default" not in p["properties"]["c"]  # Ellipsis is not JSON
    assert p["required"] == []
    assert params(g)["required"] == ["a"]  # nullable, but still has to be given


def test_union_is_any_of():
    def f(x: Union[int, str], y: int | list[str]):  # noqa: UP007
        pass

    assert props(f) == {
        "x": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "y": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "string"}}]},
    }


def test_literal():
    def f(unit: Literal["c", "f"] = "c", n: Literal[1, 2] = 1, mixed: Literal["a", 1, None] = None):
        pass

    p = props(f)
    assert p["unit"] == {"type": "string", "enum": ["c", "f"], "default": "c"}
    assert p["n"] == {"type": "integer", "enum": [1, 2], "default": 1}
    assert p["mixed"] == {"enum": ["a", 1, None], "default": None}


def test_enum_and_enum_default():
    def f(color: Color = Color.GREEN, priority: Priority = Priority.LOW):
        pass

    assert props(f) == {
        "color": {"type": "string", "enum": ["red", "green"], "default": "green"},
        "priority": {"type": "integer", "enum": [1, 2], "default": 1},
    }


def test_containers():
    def f(
        rows: list[dict[str, int]],
        names: List[str],  # noqa: UP006
        ids: Sequence[int],
        pairs: tuple[int, ...],
        point: tuple[int, str],
        tags: set[str],
        weights: Mapping[str, float],
        anything: list,
        table: dict,
    ):
        pass

    assert props(f) == {
        "rows": {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "integer"}}},
        "names": {"type": "array", "items": {"type": "string"}},
        "ids": {"type": "array", "items": {"type": "integer"}},
        "pairs": {"type": "array", "items": {"type": "integer"}},
        "point": {"type": "array"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "weights": {"type": "object", "additionalProperties": {"type": "number"}},
        "anything": {"type": "array"},
        "table": {"type": "object"},
    }


def test_dates():
    def f(when: datetime, on: date, none: None = None):
        pass

    assert props(f) == {
        "when": {"type": "string", "format": "date-time"},
        "on": {"type": "string", "format": "date"},
        "none": {"type": "null", "default": None},
    }


def test_typeddict():
    def f(address: Address, points: list[Point]):
        pass

    p = props(f)
    assert p["address"] == {
        "type": "object",
        "properties": {"street": {"type": "string"}, "zip_code": {"type": "string"}},
        "required": ["zip_code"],
    }
    assert p["points"]["items"] == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {"type": "number"}, "label": {"type": "string"}},
        "required": ["x", "y"],
    }


@dataclasses.dataclass
class Node:
    name: str
    children: list[Node] = dataclasses.field(default_factory=list)


def test_recursive_dataclass_stops():
    def f(tree: Node):
        pass

    assert props(f)["tree"]["properties"]["children"] == {"type": "array", "items": {"type": "object"}}


class Options(typing_extensions.TypedDict):  # the kind openai's own types are
    depth: int
    verbose: typing_extensions.NotRequired[bool]


def test_typing_extensions_typeddict():
    def f(options: Options):
        pass

    assert props(f)["options"]["required"] == ["depth"]


def test_dataclass():
    def f(booking: Booking):
        pass

    assert props(f)["booking"] == {
        "type": "object",
        "properties": {
            "guest": {"type": "string"},
            "nights": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["guest"],
    }


def test_pydantic_model_uses_its_schema_with_defs_at_the_root():
    pydantic = pytest.importorskip("pydantic")

    class Inner(pydantic.BaseModel):
        n: int

    class Outer(pydantic.BaseModel):
        inner: Inner
        note: str = ""

    def f(outer, many):
        pass

    f.__annotations__ = {"outer": Outer, "many": list[Outer]}  # local classes: no string annotations to resolve
    p = params(f)
    assert p["properties"]["outer"]["properties"]["inner"] == {"$ref": "#/$defs/Inner"}
    assert p["properties"]["outer"]["required"] == ["inner"]
    assert p["properties"]["many"]["items"]["title"] == "Outer"
    assert set(p["$defs"]) == {"Inner"}
    assert '"$defs":' not in json.dumps(p["properties"])


def test_annotated_description_wins_over_docstring():
    def f(city: Annotated[str, "City name"], n: Annotated[Optional[int], 42, "How many"] = None, q: str = ""):  # noqa: UP045
        """Search.

        Args:
            city: From the docstring.
            q: The query.
        """

    assert props(f) == {
        "city": {"type": "string", "description": "City name"},
        "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "How many", "default": None},
        "q": {"type": "string", "description": "The query.", "default": ""},
    }


def test_skipped_parameters():
    class Tools:
        def charge(self, amount: int, *args, idempotency_key: str, note: str = "", **kwargs):
            """Charge a card."""

        @classmethod
        def refund(cls, amount: int):
            pass

    assert list(props(Tools.charge)) == ["amount", "note"]
    assert params(Tools.charge)["required"] == ["amount"]
    assert list(props(Tools().charge)) == ["amount", "note"]
    assert list(props(Tools.refund)) == ["amount"]
    assert list(props(Tools.charge, skip=("note",))) == ["amount", "idempotency_key"]


def test_positional_only_parameters_are_included():
    def f(a: int, /, b: int = 2):
        pass

    assert params(f)["required"] == ["a"]
    assert list(props(f)) == ["a", "b"]


def test_async_function_same_as_sync():
    async def fetch(url: str, retries: int = 3) -> bytes:
        """Fetch a URL.

        Args:
            url: Where from.
        """
        return b""

    def fetch_sync(url: str, retries: int = 3) -> bytes:
        """Fetch a URL.

        Args:
            url: Where from.
        """
        return b""

    assert function_schema(fetch) == function_schema(fetch_sync, name="fetch")


def test_defaults_only_when_json():
    def f(a: list[int] = (1, 2), b: object = object(), c: float = float("nan"), d: datetime = datetime(2024, 1, 1)):  # noqa: B008
        pass

    p = props(f)
    assert p["a"]["default"] == [1, 2]
    assert all("default" not in p[k] for k in "bcd")


def test_unresolvable_annotation_falls_back_to_raw():
    def f(a: NoSuchType, b: int):  # noqa: F821
        pass

    assert params(f) == {
        "type": "object",
        "properties": {"a": {}, "b": {}},  # raw strings say nothing reliable; any value
        "required": ["a", "b"],
        "additionalProperties": False,
    }


def test_not_callable_is_type_error():
    with pytest.raises(TypeError, match="needs a callable, got int"):
        function_schema(3)  # type: ignore[arg-type]


def test_schema_fits_openai_tool_param():
    from openai.types.chat import ChatCompletionToolParam
    from openai.types.shared_params import FunctionDefinition

    def f(when: datetime, color: Color = Color.RED, rows: list[dict[str, int]] | None = None):
        """Do it."""

    schema = function_schema(f)
    assert set(schema) == set(ChatCompletionToolParam.__annotations__) == {"type", "function"}
    assert set(schema["function"]) <= set(FunctionDefinition.__annotations__)
    assert json.loads(json.dumps(schema)) == schema


# bind_arguments


def test_bind_passes_json_values_through():
    bound = bind_arguments(lookup, {"day": "3", "city": "Oslo"})
    assert bound.args == ("Oslo", "3")  # no coercion: "3" stays a string
    assert lookup(*bound.args, **bound.kwargs) == "Oslo"


def test_bind_unknown_argument():
    with pytest.raises(ToolArgumentError) as info:
        bind_arguments(lookup, {"cty": "Oslo", "day": 1})
    assert str(info.value) == "tool 'lookup' got unexpected argument 'cty'; it takes: city, day, metric, scale"
    assert isinstance(info.value, ValueError)


def test_bind_error_does_not_offer_the_idempotency_key():
    def charge(amount: int, idempotency_key: str | None = None):
        pass

    with pytest.raises(ToolArgumentError, match=r"^tool 'charge' got unexpected arguments 'x', 'y'; it takes: amount$"):
        bind_arguments(charge, {"amount": 1, "x": 1, "y": 2})


def test_bind_missing_arguments():
    with pytest.raises(ToolArgumentError, match=r"^tool 'lookup' is missing argument 'day'$"):
        bind_arguments(lookup, {"city": "Oslo"})
    with pytest.raises(ToolArgumentError, match=r"^tool 'lookup' is missing arguments 'city', 'day'$"):
        bind_arguments(lookup, {})


def test_bind_converts_dates_and_enums_only():
    def f(when: datetime, on: Optional[date], color: Color, prio: Annotated[Priority, "p"], n: int = 0):  # noqa: UP045
        pass

    bound = bind_arguments(f, {"when": "2024-05-01T12:30:00Z", "on": "2024-05-02", "color": "red", "prio": 2, "n": 1.0})
    assert bound.arguments == {
        "when": datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc),
        "on": date(2024, 5, 2),
        "color": Color.RED,
        "prio": Priority.HIGH,
        "n": 1.0,
    }
    # None for an Optional and an already-converted member pass through unchanged
    bound = bind_arguments(f, {"when": datetime(2024, 1, 1), "on": None, "color": Color.GREEN, "prio": 1})
    assert bound.arguments["on"] is None and bound.arguments["color"] is Color.GREEN


def test_bind_bad_enum_or_date_is_tool_argument_error():
    def f(color: Color = Color.RED, when: datetime | None = None):
        pass

    with pytest.raises(ToolArgumentError, match=r"tool 'f' argument 'color': 'blue' is not a valid Color"):
        bind_arguments(f, {"color": "blue"})
    with pytest.raises(ToolArgumentError, match=r"tool 'f' argument 'when'"):
        bind_arguments(f, {"when": "next tuesday"})
    assert bind_arguments(f, {"when": None}).arguments == {"when": None}


def test_bind_positional_only_and_kwargs():
    def f(a: int, /, b: int = 2, **extra: Any):
        return a, b, extra

    bound = bind_arguments(f, {"a": 1, "z": 9})
    assert f(*bound.args, **bound.kwargs) == (1, 2, {"z": 9})

    def g(a: int = 0, /, b: int = 1):
        return a, b

    bound = bind_arguments(g, {"b": 5})
    assert g(*bound.args, **bound.kwargs) == (0, 5)
