"""Client tools on /v1/chat/completions, without Redis: how the adapter reads `tools`, `tool_choice`,
`parallel_tool_calls` and `role: "tool"` messages (400 for what Parley cannot honour), how the turn service
checks them against the agent and the session, and how a turn that ends in client tool calls is shaped,
waited for and streamed (parsed back with the official `openai` SDK's own types)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageFunctionToolCall

from parley.api.adapters.openai import translate
from parley.api.service import turns as turn_service
from parley.shared.errors import InvalidInput, ParleyError
from parley.shared.events import EventType, encode
from parley.shared.schema import ChatRequest, ChatResponse
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.sessions import SessionStore
from parley.shared.store.turns import Accepted, ClientTools

WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}  # fmt: skip
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


def _read(session: str | None = None, **body: Any) -> translate.Turn:
    body.setdefault("messages", [{"role": "user", "content": "Weather in Oslo?"}])
    request = translate.ChatCompletionRequest.model_validate({"model": "Chef", **body})
    return translate.read(request, session, Settings())


def _refused(field: str, **body: Any) -> ParleyError:
    """The request is refused with a 400 naming `field` (or a field under it)."""
    with pytest.raises(ParleyError) as refused:
        _read(**body)
    assert refused.value.status == 400, refused.value.message
    assert str(refused.value.extra["field"]).startswith(field), refused.value.extra
    return refused.value


# --------------------------------------------------------------------------------------------- tools


def test_tools_and_tool_choice_become_the_turns_client_tools() -> None:
    turn = _read(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                 parallel_tool_calls=True)  # fmt: skip
    assert turn.client_tools == ClientTools([WEATHER], {"type": "function", "function": {"name": "get_weather"}})
    assert turn.request.message == "Weather in Oslo?" and turn.history == []
    for choice in ("none", "auto", "required"):
        assert _read(tools=[WEATHER], tool_choice=choice).client_tools == ClientTools([WEATHER], choice)


def test_a_plain_request_brings_no_client_tools() -> None:
    assert _read().client_tools is None
    assert _read(tools=[], parallel_tool_calls=False).client_tools is None


def test_a_tool_keeps_only_what_openai_defines_and_a_bare_function_is_fine() -> None:
    bare = {"type": "function", "function": {"name": "ping"}}
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    assert _read(tools=[bare, strict]).client_tools.tools == [bare, strict]  # type: ignore[union-attr]
    nulls = {"type": "function", "function": {"name": "ping", "description": None, "parameters": None}}
    assert _read(tools=[nulls]).client_tools.tools == [bare]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("tools", "field"),
    [
        ({"type": "function"}, "tools"),
        ([{"type": "web_search"}], "tools.0.type"),
        (["get_weather"], "tools.0.type"),
        ([{"type": "function", "function": "get_weather"}], "tools.0"),
        ([{"type": "function", "function": {"name": "get weather"}}], "tools.0.function.name"),
        ([{"type": "function", "function": {"name": "x" * 65}}], "tools.0.function.name"),
        ([{"type": "function", "function": {"name": 7}}], "tools.0.function.name"),
        ([{"type": "function", "function": {}}], "tools.0.function.name"),
        ([{"type": "function", "function": {"name": "a", "parameters": []}}], "tools.0.function.parameters"),
        ([{"type": "function", "function": {"name": "a", "parameters": "{}"}}], "tools.0.function.parameters"),
        ([{"type": "function", "function": {"name": "a", "description": 3}}], "tools.0.function.description"),
        ([{"type": "function", "function": {"name": "a", "strict": "yes"}}], "tools.0.function.strict"),
        ([{"type": "function", "function": {"name": "a", "examples": []}}], "tools.0"),
        ([{"type": "function", "function": {"name": "a"}, "cache": True}], "tools.0"),
        ([WEATHER, WEATHER], "tools.1.function.name"),
    ],
)  # fmt: skip
def test_tools_parallel_cannot_honour_is_400(tools: Any, field: str) -> None:
    _refused(field, tools=tools)


def test_tools_are_bounded_in_count_size_and_depth() -> None:
    many = [{"type": "function", "function": {"name": f"t{n}"}} for n in range(translate.MAX_TOOLS + 1)]
    assert "at most 128" in _refused("tools", tools=many).message
    _read(tools=many[:-1])
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(translate.TOOL_MAX_DEPTH):
        deep = {"type": "object", "properties": {"x": deep}}
    assert "deeper" in _refused("tools.0", tools=[{"type": "function", "function": {"name": "a",
                                                                                    "parameters": deep}}]).message
    big = {"type": "function", "function": {"name": "a", "description": "x" * translate.TOOL_MAX_BYTES}}
    assert "larger than" in _refused("tools.0", tools=[big]).message
    near = "x" * (translate.TOOL_MAX_BYTES - 100)
    several = [{"type": "function", "function": {"name": f"t{n}", "description": near}} for n in range(9)]
    assert "in all" in _refused("tools", tools=several).message


@pytest.mark.parametrize(
    ("choice", "field"),
    [
        ({"type": "function", "function": {"name": "get_time"}}, "tool_choice.function.name"),
        ({"type": "function", "function": {}}, "tool_choice.function.name"),
        ({"type": "function"}, "tool_choice"),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}, "tool_choice"),
        ("always", "tool_choice"),
        (["auto"], "tool_choice"),
        (1, "tool_choice"),
    ],
)  # fmt: skip
def test_a_tool_choice_that_cannot_be_honoured_is_400(choice: Any, field: str) -> None:
    _refused(field, tools=[WEATHER], tool_choice=choice)


def test_a_named_tool_choice_needs_that_tool_in_the_request() -> None:
    _refused("tool_choice.function.name", tool_choice={"type": "function", "function": {"name": "get_weather"}})


def test_parallel_tool_calls_false_with_tools_is_400_and_not_a_bool_is_400() -> None:
    _refused("parallel_tool_calls", tools=[WEATHER], parallel_tool_calls=False)
    _refused("parallel_tool_calls", parallel_tool_calls="yes")
    assert _read(parallel_tool_calls=False).client_tools is None  # no client tool: nothing reaches the client


@pytest.mark.parametrize("field", ["functions", "function_call"])
def test_legacy_function_calling_is_400(field: str) -> None:
    value = [WEATHER["function"]] if field == "functions" else "auto"
    assert "tools and tool_choice" in _refused(field, **{field: value}).message


def test_fields_parley_cannot_honour_otherwise_stay_422() -> None:
    with pytest.raises(InvalidInput):
        _read(n=2)


# ------------------------------------------------------------------------------------------ messages


def _round(*results: dict[str, Any], calls: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A conversation that ends in the assistant's tool calls and the client's tool messages."""
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": calls or [CALL]}, *results]  # fmt: skip


def test_tool_results_without_a_session_go_on_from_the_conversation() -> None:
    turn = _read(tools=[WEATHER], messages=_round({"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}))
    assert turn.request.message == ""
    assert turn.client_tools == ClientTools([WEATHER], None, [{"tool_call_id": "call_1", "content": "Sunny"}])
    assert turn.history == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"},
                            {"role": "assistant", "content": None, "tool_calls": [CALL]}]  # fmt: skip


def test_tool_results_do_not_need_the_tools_again() -> None:
    parts = {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "Sun"},
                                                                   {"type": "text", "text": "ny"}]}  # fmt: skip
    turn = _read(messages=_round(parts))
    assert turn.client_tools == ClientTools([], None, [{"tool_call_id": "call_1", "content": "Sunny"}])


def test_earlier_rounds_of_tool_calls_reach_the_history_as_openai_has_them() -> None:
    second = {**CALL, "id": "call_2"}
    messages = [*_round({"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}),
                {"role": "assistant", "content": "Sunny. Anything else?"}, {"role": "user", "content": "Bergen?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [second]},
                {"role": "tool", "tool_call_id": "call_2", "content": "Rain"}]  # fmt: skip
    turn = _read(messages=messages)
    assert turn.history is not None
    assert turn.history[3] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}
    assert turn.history[-1] == {"role": "assistant", "content": "Checking.", "tool_calls": [second]}
    assert turn.client_tools == ClientTools([], None, [{"tool_call_id": "call_2", "content": "Rain"}])
    ended = _read(messages=[*messages, {"role": "assistant", "content": "Rain."}, {"role": "user", "content": "ok"}])
    assert ended.client_tools is None and ended.request.message == "ok" and len(ended.history or []) == 9


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        (_round({"role": "tool", "tool_call_id": "call_9", "content": "x"}), "messages.3.tool_call_id"),
        (_round({"role": "tool", "tool_call_id": "call_1", "content": "x"},
                calls=[CALL, {**CALL, "id": "call_2"}]), "messages.2.tool_calls"),
        (_round({"role": "tool", "tool_call_id": "call_1", "content": "x"},
                {"role": "tool", "tool_call_id": "call_1", "content": "y"}), "messages.4.tool_call_id"),
        (_round({"role": "tool", "content": "x"}), "messages.3.tool_call_id"),
        (_round({"role": "tool", "tool_call_id": "", "content": "x"}), "messages.3.tool_call_id"),
        (_round({"role": "tool", "tool_call_id": "c" * 257, "content": "x"}), "messages.3.tool_call_id"),
        (_round({"role": "tool", "tool_call_id": 1, "content": "x"}), "messages.3.tool_call_id"),
        ([{"role": "tool", "tool_call_id": "call_1", "content": "x"}], "messages.0.tool_call_id"),
        ([{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "call_1", "content": "x"}],
         "messages.1.tool_call_id"),
        ([*_round(), {"role": "user", "content": "never mind"}], "messages.2.tool_calls"),
        ([{"role": "tool", "tool_call_id": "call_1", "content": "x"}, {"role": "user", "content": "a"}],
         "messages.0.tool_call_id"),
        (_round({"role": "tool", "tool_call_id": "call_1", "content": "x"}, calls=[{"id": "call_1"}]),
         "messages.2.tool_calls.0"),
        (_round({"role": "tool", "tool_call_id": "call_1", "content": "x"},
                calls=[{**CALL, "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]),
         "messages.2.tool_calls.0.function.arguments"),
        (_round({"role": "tool", "tool_call_id": "call_1", "content": "x"},
                calls=[{**CALL, "function": {"name": "no spaces", "arguments": "{}"}}]),
         "messages.2.tool_calls.0.function.name"),
        (_round({"role": "tool", "tool_call_id": "call_1", "content": "x"}, calls=[CALL, CALL]),
         "messages.2.tool_calls"),
        ([{"role": "user", "content": "a", "tool_calls": [CALL]}, {"role": "user", "content": "b"}],
         "messages.0.tool_calls"),
        ([{"role": "user", "content": "a", "tool_call_id": "call_1"}, {"role": "user", "content": "b"}],
         "messages.0.tool_call_id"),
        ([{"role": "assistant", "content": "", "tool_calls": "call_1"}, {"role": "user", "content": "b"}],
         "messages.0.tool_calls"),
    ],
)  # fmt: skip
def test_tool_messages_that_answer_no_waiting_call_are_400(messages: list[dict[str, Any]], field: str) -> None:
    _refused(field, messages=messages)


def test_with_a_session_the_tool_results_are_new_and_the_rest_is_memory() -> None:
    results = [{"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}]
    turn = _read("my-session", tools=[WEATHER], messages=results)
    assert turn.history is None and turn.request.session_id == "my-session" and turn.request.message == ""
    assert turn.client_tools == ClientTools([WEATHER], None, [{"tool_call_id": "call_1", "content": "Sunny"}])
    # The whole conversation may come too: only the trailing tool messages are new (the session checks them).
    whole = _read("my-session", messages=_round(*results))
    assert whole.history is None and whole.client_tools == ClientTools([], None, turn.client_tools.results)  # type: ignore[union-attr]


def test_a_conversation_ending_otherwise_is_still_422() -> None:
    with pytest.raises(InvalidInput):
        _read(messages=[*_round({"role": "tool", "tool_call_id": "call_1", "content": "x"}),
                        {"role": "assistant", "content": "done"}])  # fmt: skip


def test_tool_calls_count_toward_the_history_bound() -> None:
    calls = [{**CALL, "function": {"name": "a", "arguments": "x" * 500}}]
    request = translate.ChatCompletionRequest.model_validate(
        {"model": "Chef", "messages": _round({"role": "tool", "tool_call_id": "call_1", "content": "x"}, calls=calls)}
    )
    translate._check_history(request, max_messages=10, max_chars=1000)
    with pytest.raises(ParleyError) as too_large:
        translate._check_history(request, max_messages=10, max_chars=500)
    assert too_large.value.status == 413


# ------------------------------------------------------------------------------- the agent and the session


def _runtime(sessions: SessionStore) -> Any:
    return SimpleNamespace(sessions=sessions)


def _check(rt: Any, agent: dict[str, Any], tools: ClientTools, session_id: str | None = "s1") -> None:
    turn_service._check_client_tools(rt, "t1", agent, session_id, tools)


def test_a_client_tool_named_like_one_of_the_agents_is_400(sessions: SessionStore) -> None:
    rt = _runtime(sessions)
    calc = {"type": "function", "function": {"name": "calculator"}}
    agent = {"id": "a1", "name": "Chef", "tools": ["calculator"]}
    with pytest.raises(ParleyError) as clash:
        _check(rt, agent, ClientTools([WEATHER, calc]))
    assert clash.value.status == 400 and clash.value.extra["field"] == "tools.1.function.name"
    mcp_like = {"type": "function", "function": {"name": "mcp__github__create_issue"}}
    _check(rt, agent, ClientTools([WEATHER, mcp_like]))  # the agent has no MCP tool: the name is free
    with pytest.raises(ParleyError, match="MCP"):
        _check(rt, {**agent, "tools": ["mcp:github/*"]}, ClientTools([mcp_like]))


def test_tool_choice_required_needs_some_tool(sessions: SessionStore) -> None:
    rt = _runtime(sessions)
    with pytest.raises(ParleyError) as refused:
        _check(rt, {"id": "a1", "tools": []}, ClientTools([], "required"))
    assert refused.value.status == 400 and refused.value.extra["field"] == "tool_choice"
    _check(rt, {"id": "a1", "tools": ["calculator"]}, ClientTools([], "required"))
    _check(rt, {"id": "a1"}, ClientTools([WEATHER], "required"))


def _stored(sessions: SessionStore, *messages: dict[str, Any]) -> None:
    """A session `s1` of tenant t1 whose memory holds these messages."""
    sessions.create("t1", {"id": "a1", "name": "Chef", "first_message": ""}, "s1", {})
    for message in messages:
        sessions.r.rpush(keys.messages("t1", "s1"), json.dumps({"created_at": 1, "job_id": "job_1", **message}))


def test_waiting_calls_are_the_last_assistant_calls_no_stored_tool_message_answers() -> None:
    asked = {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "call_2"}, {**CALL, "id": "own"}]}
    own = {"role": "tool", "tool_call_id": "own", "content": "4"}
    assert turn_service.waiting_calls([{"role": "user", "content": "hi"}, asked, own]) == ["call_1", "call_2"]
    assert turn_service.waiting_calls([asked, own, {"role": "user", "content": "later"}]) == []
    assert turn_service.waiting_calls([{"role": "assistant", "content": "plain"}]) == []
    assert turn_service.waiting_calls([]) == []


def test_with_a_session_the_results_must_answer_its_waiting_calls(sessions: SessionStore) -> None:
    rt = _runtime(sessions)
    asked = {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "call_2"}, {**CALL, "id": "own"}]}
    _stored(sessions, {"role": "user", "content": "Oslo and Bergen?"}, asked,
            {"role": "tool", "tool_call_id": "own", "content": "4"})  # fmt: skip
    both = [{"tool_call_id": "call_2", "content": "Rain"}, {"tool_call_id": "call_1", "content": "Sun"}]
    _check(rt, {"id": "a1"}, ClientTools([], None, both))
    for results, says in (
        (both[:1], "call_1 have no tool message"),
        ([*both, {"tool_call_id": "own", "content": "4"}], "'own'"),
        ([{"tool_call_id": "call_9", "content": "x"}], "'call_9'"),
    ):  # fmt: skip
        with pytest.raises(ParleyError, match=says) as refused:
            _check(rt, {"id": "a1"}, ClientTools([], None, results))
        assert refused.value.status == 400


def test_tool_results_for_a_session_with_nothing_waiting_are_400(sessions: SessionStore) -> None:
    rt = _runtime(sessions)
    results = [{"tool_call_id": "call_1", "content": "Sun"}]
    with pytest.raises(ParleyError, match="waiting: none"):  # no such session yet
        _check(rt, {"id": "a1"}, ClientTools([], None, results))
    _stored(sessions, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"})
    with pytest.raises(ParleyError, match="waiting: none"):
        _check(rt, {"id": "a1"}, ClientTools([], None, results))
    _check(rt, {"id": "a1"}, ClientTools([WEATHER]))  # tools alone need nothing of the session


def test_client_tools_are_part_of_what_an_idempotency_key_is_bound_to() -> None:
    request = ChatRequest(message="hi", agent="Chef")
    plain = turn_service.request_hash(request, [])
    with_tools = turn_service.request_hash(request, [], ClientTools([WEATHER]))
    assert len({plain, with_tools, turn_service.request_hash(request, [], ClientTools([WEATHER], "required"))}) == 3
    assert with_tools == turn_service.request_hash(request, [], ClientTools([WEATHER]))


# ------------------------------------------------------------------------------------------- answers


def _result(content: str, tool_calls: list[dict[str, str]] | None) -> ChatResponse:
    return ChatResponse(response=content, agent_id="a1", agent_name="Chef", session_id="s1", job_id="job_abc",
                        tool_calls=tool_calls)  # fmt: skip


def test_an_answer_ending_in_client_tool_calls_is_openais_tool_calls_message() -> None:
    calls = [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
             {"id": "call_2", "name": "get_weather", "arguments": '{"city": "Bergen"}'}]  # fmt: skip
    body = translate.completion(_result("", calls), "Chef", 1700000000)
    parsed = ChatCompletion.model_validate(body)
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls_made = [c for c in choice.message.tool_calls or [] if isinstance(c, ChatCompletionMessageFunctionToolCall)]
    assert [(c.id, c.type, c.function.name, c.function.arguments) for c in calls_made] == [
        ("call_1", "function", "get_weather", '{"city": "Oslo"}'),
        ("call_2", "function", "get_weather", '{"city": "Bergen"}'),
    ]
    said = ChatCompletion.model_validate(translate.completion(_result("Let me check.", calls[:1]), "Chef", 1))
    assert said.choices[0].message.content == "Let me check." and said.choices[0].finish_reason == "tool_calls"
    plain = translate.completion(_result("Sunny.", None), "Chef", 1)["choices"][0]
    assert plain["finish_reason"] == "stop" and "tool_calls" not in plain["message"]


async def _events(*events: str) -> AsyncIterator[tuple[str, str]]:
    for index, event in enumerate(events):
        yield f"{index}-0", event


def _chunks(*events: str, include_usage: bool = False) -> list[ChatCompletionChunk]:
    async def collect() -> list[str]:
        return [text async for text in translate.chunks(_events(*events), "job_abc", 1, "Chef", include_usage)]

    lines = [line for text in asyncio.run(collect()) for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [ChatCompletionChunk.model_validate(json.loads(line.removeprefix("data: "))) for line in lines[:-1]]


def test_a_streamed_answer_ends_with_delta_tool_calls_and_finish_reason_tool_calls() -> None:
    calls = [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
             {"id": "call_2", "name": "get_time", "arguments": "{}"}]  # fmt: skip
    chunks = _chunks(encode(EventType.DELTA, content="Let me "), encode(EventType.DELTA, content="check."),
                     encode(EventType.LLM_THOUGHT, thought="Let me check.", turn=1),
                     encode(EventType.RESPONSE, content="Let me check.", tool_calls=calls, usage={"prompt_tokens": 3}),
                     encode(EventType.DONE), include_usage=True)  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check."  # no blank line: nothing follows the thought
    deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert [(d.index, d.id, d.type, d.function.name, d.function.arguments) for d in deltas if d.function] == [
        (0, "call_1", "function", "get_weather", '{"city": "Oslo"}'), (1, "call_2", "function", "get_time", "{}"),
    ]  # fmt: skip
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3


def test_a_thought_is_set_apart_only_when_more_text_follows() -> None:
    chunks = _chunks(encode(EventType.DELTA, content="Thinking."),
                     encode(EventType.LLM_THOUGHT, thought="Thinking.", turn=1),
                     encode(EventType.DELTA, content="Answer."), encode(EventType.RESPONSE, content="Answer."),
                     encode(EventType.DONE))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Thinking.\n\nAnswer."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_waiting_for_a_result_keeps_the_responses_tool_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [{"id": "call_1", "name": "get_weather", "arguments": "{}"}]

    async def last_events(*args: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
        return {"session": {"agent_id": "a1", "agent_name": "Chef", "session_id": "s1"},
                "response": {"content": "", "tool_calls": calls}}  # fmt: skip

    monkeypatch.setattr(turn_service, "last_events", last_events)
    rt = SimpleNamespace(settings=Settings())
    result = asyncio.run(turn_service.wait_for_result(rt, "t1", Accepted("job_1", "s1", "a1", replayed=False)))  # type: ignore[arg-type]
    assert [call.model_dump() for call in result.tool_calls or []] == calls


def test_the_sdks_own_stream_accumulator_puts_the_streamed_calls_together() -> None:
    """`client.chat.completions.stream(...)` builds its final completion with ChatCompletionStreamState."""
    state = ChatCompletionStreamState(input_tools=[WEATHER])  # type: ignore[list-item]
    calls = [{"id": "call_7", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]
    for chunk in _chunks(encode(EventType.DELTA, content="One moment."),
                         encode(EventType.RESPONSE, content="One moment.", tool_calls=calls), encode(EventType.DONE),
                         include_usage=True):  # fmt: skip
        state.handle_chunk(chunk)
    final = state.get_final_completion().choices[0]
    assert final.finish_reason == "tool_calls" and final.message.content == "One moment."
    [call] = final.message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == ("call_7", "get_weather", '{"city": "Oslo"}')
