"""The demo model plans built-in tool calls from plainly worded messages and answers JSON in
the agent's shape, so the offline quick start shows the whole agent loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from parley.worker.providers.demo import DemoProvider, fill_shape, forced_call, named_call, plan_tool_call

ALL = {"calculator", "current_time", "remember", "recall", "http_get"}


def test_plain_asks_become_tool_calls() -> None:
    assert plan_tool_call("calc: 2+2", ALL) == ("calculator", {"expression": "2+2"})
    assert plan_tool_call("What is 3 * (4 + 1)?", ALL) == ("calculator", {"expression": "3 * (4 + 1)"})
    assert plan_tool_call("what is 2^8", ALL) == ("calculator", {"expression": "2**8"})
    assert plan_tool_call("What time is it in Tokyo?", ALL) == ("current_time", {"timezone": "Asia/Tokyo"})
    assert plan_tool_call("time in Europe/Lisbon", ALL) == ("current_time", {"timezone": "Europe/Lisbon"})
    assert plan_tool_call("remember: I like basil", ALL) == ("remember", {"note": "I like basil"})
    assert plan_tool_call("What do you remember?", ALL) == ("recall", {})
    assert plan_tool_call("fetch https://example.org/a", ALL) == ("http_get", {"url": "https://example.org/a"})


def test_no_call_without_the_tool_or_a_plain_ask() -> None:
    assert plan_tool_call("calc: 2+2", {"current_time"}) is None
    assert plan_tool_call("what is love?", ALL) is None
    assert plan_tool_call("hello there", ALL) is None


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "required": ["location", "unit", "days", "when", "tags", "where"],
    "properties": {"location": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]},
                   "days": {"type": "integer", "minimum": 3}, "when": {"type": "string", "format": "date"},
                   "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                   "where": {"type": "object", "required": ["lat"], "properties": {"lat": {"type": "number"}}},
                   "optional": {"type": "string"}}}}}  # fmt: skip
CALC = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}


def test_a_forced_tool_choice_calls_that_tool_with_arguments_from_its_schema() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    args = {"location": "Rain in Oslo?", "unit": "celsius", "days": 3, "when": "2026-01-01",
            "tags": ["Rain in Oslo?"], "where": {"lat": 1.0}}  # fmt: skip
    assert forced_call(named, [CALC, WEATHER], "Rain in Oslo?") == ("get_weather", args)
    assert forced_call("required", [CALC, WEATHER], "Rain in Oslo?") == ("get_weather", args)  # the last offered
    assert forced_call("required", [CALC, WEATHER], "calc: 1+1") == ("calculator", {"expression": "1+1"})
    assert forced_call(named, [CALC], "x") is None and forced_call("auto", [WEATHER], "x") is None
    assert forced_call("required", [], "x") is None
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):  # nested arrays of 8 items each: one item each, not 8 ** 40
        deep = {"type": "array", "items": deep, "minItems": 8}
    properties = {"a": deep, "n": {"type": "integer", "minimum": float("nan")}}
    hostile = {"type": "function", "function": {"name": "h", "parameters": {
        "type": "object", "required": ["a", "n"], "properties": properties}}}  # fmt: skip
    name, args = forced_call("required", [hostile], "x")  # type: ignore[misc]
    assert len(json.dumps(args)) < 200 and args["n"] == 1


def test_a_function_tool_the_message_names_is_called() -> None:
    """The demo's rule for tools it has no pattern for: a word of the tool's name (4+ letters, not generic)."""
    lookup = {
        "type": "function",
        "function": {
            "name": "fetchStockPrice",
            "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]},
        },
    }
    assert named_call("What's the weather like in San Francisco?", [CALC, WEATHER])[0] == "get_weather"  # type: ignore[index]
    assert named_call("the stock of ACME?", [lookup]) == ("fetchStockPrice", {"symbol": "the stock of ACME?"})
    assert named_call("fetch the price", [lookup]) == ("fetchStockPrice", {"symbol": "fetch the price"})
    assert named_call("please fetch it", [lookup]) is None  # "fetch" alone says nothing
    assert named_call("a calculator please", [CALC]) is None  # a built-in keeps its own pattern
    assert named_call("weathering", [WEATHER]) is None  # whole words only


def test_a_step_honours_tool_choice(make_settings: Any) -> None:
    provider = DemoProvider(make_settings(PARLEY_DEMO_CHUNK_DELAY_MS="0"))
    said = [{"role": "user", "content": "calc: 2+2"}]
    text, calls = _step(
        provider, said, tools=[CALC, WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert text == "" and [(c.name, json.loads(c.arguments)["location"]) for c in calls] == [
        ("get_weather", "calc: 2+2")
    ]
    text, calls = _step(provider, said, tools=[CALC], tool_choice="none")
    assert calls == [] and "You said" in text  # "none": no call, even to a tool the message asks for


def test_shapes_are_filled() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "n": {"type": "integer"},
                                               "kind": {"enum": ["a", "b"]}}}  # fmt: skip
    assert fill_shape(schema, "hi") == {"answer": "hi", "n": 0, "kind": "a"}
    assert fill_shape({"answer": "string", "recipes": "list of strings"}, "hi") == {"answer": "hi", "recipes": []}
    assert fill_shape("anything", "hi") == {"answer": "hi"}


def _step(provider: DemoProvider, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[str, list[Any]]:
    async def read() -> tuple[str, list[Any]]:
        async with provider.stream(model="demo", messages=messages, temperature=None, max_tokens=None,
                                   **kwargs) as stream:  # fmt: skip
            text = "".join([piece async for piece in stream])
        return text, stream.tool_calls

    return asyncio.run(read())


def test_a_step_calls_then_answers_from_the_result(make_settings: Any) -> None:
    provider = DemoProvider(make_settings(PARLEY_DEMO_CHUNK_DELAY_MS="0"))
    tools = [{"type": "function", "function": {"name": "calculator"}}]
    text, calls = _step(provider, [{"role": "user", "content": "calc: 1+1"}], tools=tools)
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("calculator", {"expression": "1+1"})]
    followed: list[dict[str, Any]] = [{"role": "user", "content": "calc: 1+1"},
                {"role": "assistant", "content": None, "tool_calls": [calls[0].as_message_part()]},
                {"role": "tool", "tool_call_id": calls[0].id, "content": "2"}]  # fmt: skip
    text, calls = _step(provider, followed, tools=tools)
    assert calls == [] and "calculator said: 2" in text


def test_json_answers_follow_the_instructions_shape(make_settings: Any) -> None:
    provider = DemoProvider(make_settings(PARLEY_DEMO_CHUNK_DELAY_MS="0"))
    messages = [
        {"role": "system", "content": 'Be brief.\n\nAnswer with RFC 8259 compliant JSON in this shape, without '
                                      'deviation: {"answer": "string", "tags": "list of strings"}'},
        {"role": "user", "content": "hello"},
    ]  # fmt: skip
    text, _ = _step(provider, messages, response_format={"type": "json_object"})
    answer = json.loads(text)
    assert set(answer) == {"answer", "tags"} and "hello" in answer["answer"]
