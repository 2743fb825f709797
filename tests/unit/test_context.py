"""The model's context is rebuilt from Redis alone: its order and content decide what the model
remembers, so pin them. Also the demo model, which shows that memory offline."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from parley.worker.providers.demo import demo_answer
from parley.worker.turn.context import (
    CLOSING_MESSAGE,
    NO_RESULT,
    build_messages,
    exchanges_so_far,
    instructions_text,
    model_sequence,
)

SHAPE_SENTENCE = "Answer with RFC 8259 compliant JSON in this shape, without deviation: "


def _stored(role: str, content: str, **extra: Any) -> dict[str, Any]:
    """A message as SessionStore.history returns it (extra fields must not reach the model)."""
    return {"role": role, "content": content, "created_at": 1, "job_id": "job_x", **extra}


HISTORY = [
    _stored("assistant", "Hello! What shall we cook?"),  # message 0: the agent's first message
    _stored("user", "Something with lentils", images=["data:image/png;base64,AAAA"]),
    _stored("assistant", "Try a dal."),
]


def test_full_order_system_instructions_history_new_message() -> None:
    agent = {"context": "You are a chef.", "instructions": "Be brief.", "response_shape": {"answer": "string"}}
    messages = build_messages(agent, HISTORY, "And a dessert?")
    assert messages == [
        {"role": "system", "content": "You are a chef."},
        {"role": "system", "content": 'Be brief.\n\n' + SHAPE_SENTENCE + '{"answer": "string"}'},
        {"role": "assistant", "content": "Hello! What shall we cook?"},
        {"role": "user", "content": [
            {"type": "text", "text": "Something with lentils"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
        {"role": "assistant", "content": "Try a dal."},
        {"role": "user", "content": "And a dessert?"},
    ]  # fmt: skip


def test_new_images_are_image_parts_of_the_new_message() -> None:
    messages = build_messages({}, [], "what is this?", ["data:image/png;base64,AAAA"])
    assert messages == [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]}]  # fmt: skip


def test_tool_steps_reach_the_model_in_openai_shape() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    history = [
        _stored("user", "sum"), _stored("assistant", "", tool_calls=[call], tokens=3),
        _stored("tool", "5", tool_call_id="call_1", name="calculator"), _stored("assistant", "It is 5."),
    ]  # fmt: skip
    assert build_messages({}, history, "thanks")[:4] == [
        {"role": "user", "content": "sum"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
        {"role": "assistant", "content": "It is 5."},
    ]


def test_first_message_of_a_new_session_comes_before_the_user_message() -> None:
    agent = {"context": "ctx", "first_message": "Hi, I'm the chef."}
    history = [_stored("assistant", "Hi, I'm the chef.")]
    assert build_messages(agent, history, "hello") == [
        {"role": "system", "content": "ctx"},
        {"role": "assistant", "content": "Hi, I'm the chef."},
        {"role": "user", "content": "hello"},
    ]


def test_bare_agent_sends_only_the_message() -> None:
    assert build_messages({}, [], "hi") == [{"role": "user", "content": "hi"}]


def test_empty_fields_add_no_system_message() -> None:
    agent = {"context": "", "instructions": "", "response_shape": None}
    assert build_messages(agent, [], "hi") == [{"role": "user", "content": "hi"}]


def test_response_shape_alone_is_an_instruction() -> None:
    messages = build_messages({"response_shape": {"n": 1}}, [], "hi")
    assert messages[0] == {"role": "system", "content": SHAPE_SENTENCE + '{"n": 1}'}
    assert messages[1] == {"role": "user", "content": "hi"}


def test_response_shape_as_dict_is_json() -> None:
    shape = {"answer": "string", "recipes": ["list of strings"], "note": "déjà vu"}
    text = instructions_text({"response_shape": shape})
    assert text.startswith(SHAPE_SENTENCE)
    assert json.loads(text.removeprefix(SHAPE_SENTENCE)) == shape
    assert "déjà vu" in text  # not \u-escaped


def test_response_shape_as_string_is_used_verbatim() -> None:
    text = instructions_text({"instructions": "Be kind.", "response_shape": '{"answer": <text>}'})
    assert text == "Be kind.\n\n" + SHAPE_SENTENCE + '{"answer": <text>}'


def test_only_role_and_content_reach_the_model() -> None:
    for message in build_messages({}, HISTORY, "x"):
        assert set(message) == {"role", "content"}


def test_exchanges_so_far_counts_user_messages() -> None:
    assert exchanges_so_far([]) == 0
    assert exchanges_so_far([_stored("assistant", "first message")]) == 0
    assert exchanges_so_far(HISTORY) == 1
    assert exchanges_so_far(HISTORY + [_stored("user", "b"), _stored("assistant", "c")]) == 2


def test_closing_message_is_polite_text() -> None:
    assert "conversation" in CLOSING_MESSAGE


def test_demo_answer_echoes_the_message() -> None:
    text = demo_answer(build_messages({}, [_stored("assistant", "Hi")], "first words"))
    assert 'You said: "first words"' in text
    assert "Earlier" not in text
    assert text.startswith("[demo model, offline]")


def test_demo_answer_shows_the_earlier_message() -> None:
    history = [_stored("assistant", "Hi"), _stored("user", "my name is Ana"), _stored("assistant", "ok")]
    text = demo_answer(build_messages({"context": "ctx"}, history, "what is my name?"))
    assert 'You said: "what is my name?"' in text
    assert 'Earlier you said: "my name is Ana"' in text
    assert "I remember 1 earlier message(s)" in text


def test_demo_answer_counts_every_earlier_message() -> None:
    history = [_stored("user", "one"), _stored("assistant", "a"), _stored("user", "two"), _stored("assistant", "b")]
    text = demo_answer(build_messages({}, history, "three"))
    assert 'Earlier you said: "two"' in text
    assert "I remember 2 earlier message(s)" in text


def test_demo_provider_streams_the_demo_answer_word_by_word(make_settings: Any) -> None:
    from parley.worker.providers import make_provider
    from parley.worker.providers.demo import DemoProvider

    settings = make_settings(PARLEY_DEMO_CHUNK_DELAY_MS="0")
    provider = make_provider(settings)
    assert isinstance(provider, DemoProvider)
    messages = build_messages({}, [_stored("user", "earlier")], "now")

    async def read() -> list[str]:
        async with provider.stream(model="m", messages=messages, temperature=None, max_tokens=None) as pieces:
            return [piece async for piece in pieces]

    received = asyncio.run(read())
    assert len(received) > 3
    assert "".join(received) == demo_answer(messages)


def _calls(*ids: str) -> dict[str, Any]:
    parts = [{"id": i, "type": "function", "function": {"name": "lookup", "arguments": "{}"}} for i in ids]
    return {"role": "assistant", "content": "", "tool_calls": parts}


def test_a_call_left_without_a_result_is_answered_before_the_next_message() -> None:
    """A client that called its own tool and then sent a user message instead of the result: the model is given
    NO_RESULT for the call, so the conversation stays one a model accepts."""
    history = [_calls("c1"), {"role": "user", "content": "never mind"}]
    assert [(m["role"], m.get("tool_call_id")) for m in model_sequence(history)] == [
        ("assistant", None), ("tool", "c1"), ("user", None)]  # fmt: skip
    assert model_sequence(history)[1]["content"] == NO_RESULT


def test_the_images_of_a_steps_results_follow_its_last_result() -> None:
    image = "data:image/png;base64,AA=="
    history = [_calls("c1", "c2"), {"role": "tool", "tool_call_id": "c1", "content": "a", "images": [image]},
               {"role": "tool", "tool_call_id": "c2", "content": "b"}]  # fmt: skip
    roles = [m["role"] for m in model_sequence(history)]
    assert roles == ["assistant", "tool", "tool", "user"]
    assert model_sequence(history)[-1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA=="},
    }


def test_the_clients_results_answer_the_open_calls_once() -> None:
    history = [_calls("c1", "c2"), {"role": "tool", "tool_call_id": "c1", "content": "agent's"}]
    results = [{"tool_call_id": "c2", "content": "client's"}, {"tool_call_id": "c1", "content": "again"}]
    sequence = model_sequence(history, results)
    assert [(m["role"], m.get("tool_call_id"), m.get("content")) for m in sequence][1:] == [
        ("tool", "c1", "agent's"), ("tool", "c2", "client's")]  # fmt: skip
