"""The SDK's feedback methods (`client.feedback`, sync and async) and chat's `on_busy` against the real stack:
a rating set, changed and cleared shows on the message, the listing pages through every rating, and the API's
refusals arrive as the SDK's error classes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.client import AsyncParley, NotFoundError, Parley, ValidationError


def test_feedback_through_the_sync_and_async_clients(stack: Any) -> None:
    stack.start_web()
    stack.start_workers()
    with Parley(stack.web_url, stack.api_key) as client:
        client.agents.create("Chef", first_message="Hello, I am your chef.", model="test-model")
        for n in range(3):
            answer = client.chat(f"question {n}", session_id="s", on_busy="enqueue").response
            assert answer.startswith(f"echo: question {n}")
        answers = [m for m in client.sessions.messages("s") if m.role == "assistant"]
        assert [m.id for m in answers] == ["msg_0", "msg_2", "msg_4", "msg_6"]

        rated = client.feedback.set("s", "msg_2", "up", comment="nice")
        assert rated.feedback is not None
        assert (rated.feedback.rating, rated.feedback.comment) == ("up", "nice")
        assert client.feedback.set("s", "msg_2", "down").feedback.rating == "down"  # type: ignore[union-attr]
        assert client.sessions.messages("s")[2].feedback.rating == "down"  # type: ignore[union-attr]
        client.feedback.set("s", "msg_4", "up")
        client.feedback.set("s", "msg_6", "up")
        cleared = client.feedback.clear("s", "msg_6")
        assert cleared.feedback is None and "feedback" not in cleared.model_dump()

        listed = list(client.feedback.list(agent="Chef", page_size=1))  # pages of one
        assert [(i.message_id, i.rating) for i in listed] == [("msg_4", "up"), ("msg_2", "down")]
        assert listed[1].content == answers[1].content
        assert list(client.feedback.list(since="2999-01-01T00:00:00Z")) == []

        with pytest.raises(ValidationError):
            client.feedback.set("s", "msg_1", "up")  # the user's own message
        with pytest.raises(ValidationError):
            client.feedback.set("s", "msg_2", "up", comment="x" * 2001)
        with pytest.raises(NotFoundError):
            client.feedback.set("s", "msg_99", "up")
        with pytest.raises(NotFoundError):
            client.feedback.set("other", "msg_2", "up")

    async def run() -> list[tuple[str, str]]:
        async with AsyncParley(stack.web_url, stack.api_key) as client:
            rated = await client.feedback.set("s", "msg_0", "up", "a warm welcome")
            assert rated.feedback is not None and rated.feedback.comment == "a warm welcome"
            assert (await client.feedback.clear("s", "msg_4")).feedback is None
            return [(i.message_id, i.rating) async for i in client.feedback.list(page_size=1)]

    assert asyncio.run(run()) == [("msg_0", "up"), ("msg_2", "down")]
