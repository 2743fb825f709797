"""Client tools through /v1/chat/completions with the official `openai` SDK, unmodified, against the real stack:
the model calls a tool the request brought, the answer ends with `tool_calls` (streamed and not), the client's
`role: "tool"` results continue the conversation (with a session: from its memory; without: from the request),
and what cannot be honoured is a 400 that changes nothing. The scripted model records what it was sent."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionNamedToolChoiceParam,
    ChatCompletionToolMessageParam,
)

from tests.integration.helpers import client, create_agent, messages, model_requests
from tests.integration.test_tenancy_and_input import _snapshot

WEATHER: ChatCompletionFunctionToolParam = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}  # fmt: skip


def _sdk(stack: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.web_url}/v1", api_key=stack.api_key, max_retries=0)


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _streamed(stream: Any) -> tuple[str, list[dict[str, str]], str | None]:
    """A stream's text, its tool calls put together by `index` as OpenAI clients do, its last finish_reason."""
    text, finish = "", None
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        for delta in choice.delta.tool_calls or ():
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += delta.function.name or "" if delta.function else ""
            call["arguments"] += delta.function.arguments or "" if delta.function else ""
        finish = choice.finish_reason or finish
    return text, [calls[index] for index in sorted(calls)], finish


def test_a_round_trip_without_a_session(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, {"reply": "Let me look.", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"reply": "Sunny in Oslo."})  # fmt: skip
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        asked: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Oslo?"}]
        first = sdk.chat.completions.create(model="Chef", messages=asked, tools=[WEATHER], tool_choice="required")
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
        [call] = choice.message.tool_calls or []
        assert isinstance(call, ChatCompletionMessageFunctionToolCall) and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Oslo"}
        sent = model_requests(stack)[-1]["body"]
        assert sent["tool_choice"] == "required" and WEATHER in sent["tools"]

        result: ChatCompletionToolMessageParam = {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}
        second = sdk.chat.completions.create(model="Chef", messages=[*asked, choice.message, result],  # type: ignore[list-item]
                                             tools=[WEATHER])  # fmt: skip
        assert second.choices[0].message.content == "Sunny in Oslo." and second.choices[0].finish_reason == "stop"
        seen = model_requests(stack)[-1]["body"]
        assert seen["messages"][-3:] == [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "get_weather",
                                                                  "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
        ]  # fmt: skip
        assert "tool_choice" not in seen  # it went with the first request's first step only
        assert http.get("/api/v1/sessions").json()["data"] == []


def test_a_streamed_round_trip_with_a_session_and_the_agents_own_tool_in_the_same_step(stack) -> None:
    stack.start_web()
    stack.start_workers()
    both = [{"name": "calculator", "arguments": {"expression": "6*7"}},
            {"name": "get_weather", "arguments": {"city": "Bergen"}}]  # fmt: skip
    _script(stack, {"tool_calls": both}, {"reply": "Rain, and 42."})
    session = {"X-Parley-Session": "tools-1"}
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http, tools=["calculator"])
        stream = sdk.chat.completions.create(model="Chef", messages=[{"role": "user", "content": "6*7, and Bergen?"}],
                                             tools=[WEATHER], stream=True, extra_headers=session)  # fmt: skip
        text, calls, finish = _streamed(stream)
        assert finish == "tool_calls" and text == ""
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "Bergen"})]
        model_call_id = calls[0]["id"]
        assert model_call_id == "call_1"  # the scripted model's id for the step's second call

        # Only the tool message is new: the session holds the rest, the agent's own result included.
        stream = sdk.chat.completions.create(
            model="Chef", stream=True, extra_headers=session, tools=[WEATHER],
            messages=[{"role": "tool", "tool_call_id": model_call_id, "content": "Rain"}],
        )  # fmt: skip
        text, calls, finish = _streamed(stream)
        assert (text, calls, finish) == ("Rain, and 42.", [], "stop")
        seen = model_requests(stack)[-1]["body"]["messages"]
        assert [m["role"] for m in seen[-4:]] == ["user", "assistant", "tool", "tool"]
        assert [c["function"]["name"] for c in seen[-3]["tool_calls"]] == ["calculator", "get_weather"]
        assert seen[-2] == {"role": "tool", "tool_call_id": "call_0", "content": "42"}
        assert seen[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "Rain"}
        stored = messages(http, "tools-1")
        assert [m["role"] for m in stored[1:]] == ["user", "assistant", "tool", "tool", "assistant"]
        assert stored[-1]["content"] == "Rain, and 42."

        # Those calls are answered now: the same results again have nothing to answer.
        repeated: list[ChatCompletionMessageParam] = [{"role": "tool", "tool_call_id": "call_1", "content": "Rain"}]
        with pytest.raises(openai.BadRequestError) as again:
            sdk.chat.completions.create(model="Chef", extra_headers=session, messages=repeated)
        assert again.value.status_code == 400 and "call_1" in again.value.message


def test_a_named_tool_choice_reaches_the_model_and_the_answer_can_be_text_too(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        choice: ChatCompletionNamedToolChoiceParam = {"type": "function", "function": {"name": "get_weather"}}
        answer = sdk.chat.completions.create(model="Chef", messages=[{"role": "user", "content": "hi"}],
                                             tools=[WEATHER], tool_choice=choice, parallel_tool_calls=True)
        assert answer.choices[0].message.content == "echo: hi" and answer.choices[0].finish_reason == "stop"
        assert answer.choices[0].message.tool_calls is None
        sent = model_requests(stack)[-1]["body"]
        assert sent["tool_choice"] == choice and sent["tools"] == [WEATHER]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools.0.function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
         "tool_choice.function.name"),
        ({"tools": [WEATHER], "parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"functions": [WEATHER["function"]]}, "functions"),
        ({"tools": [{"type": "function", "function": {"name": "calculator"}}]}, "tools.0.function.name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"messages": [{"role": "user", "content": "hi"},
                       {"role": "tool", "tool_call_id": "call_0", "content": "x"}]}, "messages.1.tool_call_id"),
        ({"messages": [{"role": "tool", "tool_call_id": "call_0", "content": "x"}],
          "extra_headers": {"X-Parley-Session": "fresh"}}, "messages"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_400_and_changes_nothing(stack, body: dict[str, Any], field: str) -> None:
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http, tools=["calculator"] if "calculator" in json.dumps(body) else [])
        before = _snapshot(stack)
        headers = body.pop("extra_headers", None)
        with pytest.raises(openai.BadRequestError) as refused:  # the fields as the SDK sends unknown ones
            sdk.chat.completions.create(model="Chef", messages=[{"role": "user", "content": "hi"}],
                                        extra_body=body, extra_headers=headers)  # fmt: skip
        assert refused.value.status_code == 400
        error = refused.value.body  # the SDK keeps the body's "error" object
        assert isinstance(error, dict) and error["code"] == "bad_request" and error["field"] == field, error
        assert _snapshot(stack) == before
