"""The official `openai` SDK, unmodified, talking to a Parley agent through /v1/chat/completions."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.integration.helpers import client, create_agent, messages, model_requests


def _sdk(stack, key: str = "key-alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.web_url}/v1", api_key=key, max_retries=0)


def test_sync_call_with_memory_through_the_session_header(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        sdk = _sdk(stack)
        session = {"X-Parley-Session": "oai-1"}
        first = sdk.chat.completions.create(model="Chef", messages=[{"role": "user", "content": "I like figs"}],
                                            extra_headers=session)  # fmt: skip
        assert first.choices[0].message.content == "echo: I like figs"
        assert first.choices[0].finish_reason == "stop" and first.object == "chat.completion"
        assert first.usage is not None and first.usage.total_tokens > 0
        # Only the last user message is new: the earlier ones in the request are not sent again.
        second = sdk.chat.completions.create(
            model="Chef", extra_headers=session,
            messages=[{"role": "user", "content": "ignored"}, {"role": "user", "content": "and dates"}],
        )  # fmt: skip
        assert second.choices[0].message.content == "echo: and dates | earlier: I like figs"
        assert [m["content"] for m in messages(http, "oai-1") if m["role"] == "user"] == ["I like figs", "and dates"]
        # The `user` field names a session too.
        sdk.chat.completions.create(model="Chef", user="oai-2", messages=[{"role": "user", "content": "hi"}])
        assert [m["content"] for m in messages(http, "oai-2")][1:] == ["hi", "echo: hi"]


def test_without_a_session_the_request_is_the_whole_conversation_and_nothing_is_stored(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        agent = create_agent(http)
        sdk = _sdk(stack)
        answer = sdk.chat.completions.create(model=agent["id"], messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
        ])  # fmt: skip
        assert answer.choices[0].message.content == "echo: second | earlier: first"
        sent = model_requests(stack)[-1]["body"]["messages"]
        assert [m["content"] for m in sent][-4:] == ["Be terse.", "first", "ok", "second"]
        assert sent[0] == {"role": "system", "content": "You are a chef."}
        assert http.get("/api/v1/sessions").json()["data"] == []


def test_streaming_with_usage(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        stream = _sdk(stack).chat.completions.create(
            model="Chef", messages=[{"role": "user", "content": "stream this please"}], stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "echo: stream this please"
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        assert len({c.id for c in chunks}) == 1


def test_async_client_and_models(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        create_agent(http, name="Sommelier")

    async def run() -> tuple[list[str], str, str]:
        sdk = openai.AsyncOpenAI(base_url=f"{stack.web_url}/v1", api_key="key-alice", max_retries=0)
        models = [m.id async for m in sdk.models.list()]
        answer = await sdk.chat.completions.create(model="Sommelier", messages=[{"role": "user", "content": "red?"}])
        stream = await sdk.chat.completions.create(
            model="Chef", messages=[{"role": "user", "content": "async stream"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await sdk.close()
        return models, answer.choices[0].message.content or "", text

    models, answer, text = asyncio.run(run())
    assert models == ["Chef", "Sommelier"]
    assert answer == "echo: red?" and text == "echo: async stream"
    assert [m.id for m in _sdk(stack, "key-bob").models.list()] == []


def test_errors_reach_the_sdk_as_its_own_exceptions(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
    sdk = _sdk(stack)
    with pytest.raises(openai.AuthenticationError):
        _sdk(stack, "wrong").chat.completions.create(model="Chef", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model="Chef", messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model="Chef", messages=[{"role": "user", "content": "x"}], n=2)
    stack.model_server.control("script", [{"status": 500}] * 4)
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.chat.completions.create(model="Chef", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
