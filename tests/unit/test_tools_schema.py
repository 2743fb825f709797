"""A tool's JSON Schema comes from its signature and docstring, or from its one pydantic model."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from parley.tools import Tool, ToolContext, tool
from parley.tools.registry import TOOL_ATTRIBUTE
from parley.tools.schema import parse_docstring


def made(fn: object) -> Tool:
    found = getattr(fn, TOOL_ATTRIBUTE)
    assert isinstance(found, Tool)
    return found


def test_schema_from_signature_types_defaults_and_docstring() -> None:
    @tool
    def search_flights(origin: str, destination: str, passengers: int = 1,
                       cabin: Literal["economy", "business"] = "economy", max_price: float | None = None) -> str:
        """Find flights between two airports.

        Searches every airline we know.

        Args:
            origin: IATA code of the departure airport,
                e.g. CDG.
            destination (str): IATA code of the arrival airport.
            passengers: how many seats.

        Returns:
            A list of flights.
        """
        return ""

    spec = made(search_flights)
    assert spec.name == "search_flights"
    assert spec.description == "Find flights between two airports."
    assert spec.context_param is None
    assert spec.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "origin": {"type": "string", "description": "IATA code of the departure airport, e.g. CDG."},
            "destination": {"type": "string", "description": "IATA code of the arrival airport."},
            "passengers": {"type": "integer", "default": 1, "description": "how many seats."},
            "cabin": {"enum": ["economy", "business"], "type": "string", "default": "economy"},
            "max_price": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
        },
        "required": ["origin", "destination"],
    }


def test_context_parameter_is_injected_not_shown() -> None:
    @tool
    def whoami(ctx: ToolContext, loud: bool = False) -> str:
        """Say which session this is."""
        return ctx.session_id

    spec = made(whoami)
    assert spec.context_param == "ctx"
    assert list(spec.parameters["properties"]) == ["loud"]
    assert spec.parameters["properties"]["loud"] == {"type": "boolean", "default": False}
    assert "required" not in spec.parameters


def test_name_description_and_timeout_given_to_the_decorator_win() -> None:
    @tool(name="lookup-v2", description="Look a word up.", timeout_s=2.5)
    def lookup(word: str) -> str:
        """Not this text."""
        return word

    spec = made(lookup)
    assert (spec.name, spec.description, spec.timeout_s) == ("lookup-v2", "Look a word up.", 2.5)
    assert lookup("still callable") == "still callable"


class Booking(BaseModel):
    """A table booking."""

    name: str = Field(..., description="who books")
    people: int = Field(2, ge=1, le=12)


def test_schema_from_a_pydantic_model() -> None:
    @tool
    def book_table(booking: Booking, ctx: ToolContext) -> str:
        """Book a table."""
        return booking.name

    spec = made(book_table)
    assert spec.model_param == "booking" and spec.context_param == "ctx"
    assert spec.arguments is Booking
    assert spec.parameters["properties"]["name"]["description"] == "who books"
    assert spec.parameters["properties"]["people"]["maximum"] == 12
    assert spec.parameters["required"] == ["name"]
    assert spec.parameters["type"] == "object" and "title" not in spec.parameters


def test_parameter_names_that_shadow_basemodel_attributes_work() -> None:
    @tool
    def odd_names(json: str, schema: int, model_id: str) -> str:
        """Parameters named like pydantic's own methods."""
        return f"{json}{schema}{model_id}"

    spec = made(odd_names)
    assert spec.parameters["required"] == ["json", "schema", "model_id"]
    validated = spec.arguments.model_validate({"json": "a", "schema": 1, "model_id": "m"})
    assert spec.call(validated, None) == "a1m"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(*args: int) -> str:\n    'Doc.'\n", "ordinary named parameter"),
        ("def f(**kw: int) -> str:\n    'Doc.'\n", "ordinary named parameter"),
        ("def f(a: int, /) -> str:\n    'Doc.'\n", "ordinary named parameter"),
        ("def f(a: int) -> str:\n    pass\n", "needs a description"),
        ("def f(a: 'Missing') -> str:\n    'Doc.'\n", "cannot resolve its type hints"),
    ],
)
def test_functions_that_cannot_be_tools_fail_at_decoration(source: str, message: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # builds the odd signatures under test
    with pytest.raises(TypeError, match=message):
        tool(namespace["f"])


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dot.ted"])
def test_tool_names_must_suit_openai(name: str) -> None:
    def f() -> str:
        """Doc."""
        return ""

    with pytest.raises(TypeError, match="tool name"):
        tool(name=name)(f)


def test_parse_docstring_summary_and_args() -> None:
    summary, args = parse_docstring(
        """Add two numbers
        and return the sum.

        Args:
            a: the first
                number.
            b (int): the second: any integer.
        Raises:
            c: not an argument.
        """
    )
    assert summary == "Add two numbers and return the sum."
    assert args == {"a": "the first number.", "b": "the second: any integer."}
