"""The demo model plans built-in tool calls from plainly worded messages and answers JSON in
the agent's shape, so the offline quick start shows the whole agent loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from parley.worker.providers.demo import DemoProvider, fill_shape, plan_tool_call

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
