"""The Conversations API (`/v1/conversations`) with the official `openai` SDK against the real stack: a conversation
is a Parley session (created here, it is listed under /api/v1/sessions; any session can be named as one), its items
are the session's messages (paged as OpenAI pages them), items are added to an idle one, responses continue it, and
a session started on /api/v1/chat is continued through /v1/responses with `conversation`."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.integration.helpers import client, create_agent, messages, model_requests, user_contents


def _sdk(stack: Any) -> Any:
    """The official client, typed loosely: the tests send what the SDK's overloads do not spell (agent names)."""
    return openai.OpenAI(base_url=f"{stack.web_url}/v1", api_key=stack.api_key, max_retries=0)


def _texts(page: Any) -> list[tuple[str, str]]:
    return [(item.role, item.content[0].text) for item in page.data]


def test_conversations_crud_and_items(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        create_agent(http, name="Baker", first_message="")
        made = sdk.conversations.create(metadata={"topic": "bread"}, extra_body={"agent": "Baker"},
                                        items=[{"type": "message", "role": "user", "content": "I like rye."},
                                               {"role": "assistant", "content": "Noted."}])  # fmt: skip
        assert made.object == "conversation" and made.metadata == {"topic": "bread"} and made.created_at > 0
        session = http.get(f"/api/v1/sessions/{made.id}").json()
        assert session["agent_name"] == "Baker" and session["message_count"] == 2  # a session, with its items

        updated = sdk.conversations.update(made.id, metadata={"topic": "rye"})
        assert updated.metadata == {"topic": "rye"} and sdk.conversations.retrieve(made.id).metadata == {"topic": "rye"}

        answer = sdk.responses.create(model="Baker", conversation=made.id, input="A loaf?")
        assert answer.output_text == "echo: A loaf? | earlier: I like rye."  # the items are its memory
        assert answer.conversation.id == made.id

        newest = sdk.conversations.items.list(made.id, limit=2)  # newest first, as OpenAI lists them
        assert _texts(newest) == [("assistant", "echo: A loaf? | earlier: I like rye."), ("user", "A loaf?")]
        assert newest.has_more is True
        rest = sdk.conversations.items.list(made.id, limit=2, after=newest.data[-1].id)
        assert _texts(rest) == [("assistant", "Noted."), ("user", "I like rye.")] and rest.has_more is False
        oldest = sdk.conversations.items.list(made.id, order="asc", limit=3)
        assert [item.id for item in oldest.data] == [item.id for item in [*newest.data, *rest.data][::-1][:3]]
        every = list(sdk.conversations.items.list(made.id, order="asc", limit=1))  # the SDK follows the pages
        assert len(every) == 4
        assert sdk.conversations.items.retrieve(every[0].id, conversation_id=made.id).id == every[0].id

        added = sdk.conversations.items.create(made.id, items=[{"role": "user", "content": "Also spelt."}])
        assert _texts(added) == [("user", "Also spelt.")]
        assert messages(http, made.id)[-1]["content"] == "Also spelt."

        with pytest.raises(openai.BadRequestError) as refused:
            sdk.conversations.items.create(made.id, items=[{"type": "function_call_output", "call_id": "c",
                                                            "output": "x"}])  # fmt: skip
        error: Any = refused.value.body
        assert error["param"] == "items.0" and error["type"] == "invalid_request_error"
        with pytest.raises(openai.ConflictError):  # the session belongs to Baker
            sdk.responses.create(model="Chef", conversation=made.id, input="Soup?")
        assert len(messages(http, made.id)) == 5  # refused requests changed nothing

        deleted = sdk.conversations.delete(made.id)
        assert deleted.deleted is True and deleted.id == made.id
        with pytest.raises(openai.NotFoundError):
            sdk.conversations.retrieve(made.id)
        assert http.get(f"/api/v1/sessions/{made.id}").status_code == 404
        for path in ("/v1/conversations/no-such", "/v1/conversations/a%20b/items", "/v1/conversations/x/items/msg_0"):
            assert http.get(path).status_code == 404, path


def test_a_chat_session_continued_as_a_conversation(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http, _sdk(stack) as sdk:
        create_agent(http)
        chat = http.post("/api/v1/chat", json={"message": "Basil or mint?", "session_id": "kitchen-1"})
        assert chat.status_code == 200, chat.text
        answer = sdk.responses.create(model="Chef", conversation={"id": "kitchen-1"}, input="And thyme?")
        assert answer.output_text == "echo: And thyme? | earlier: Basil or mint?"
        assert user_contents(model_requests(stack)[-1]["body"]) == ["Basil or mint?", "And thyme?"]
        items = sdk.conversations.items.list("kitchen-1", order="asc")
        assert [item.role for item in items.data] == ["assistant", "user", "assistant", "user", "assistant"]
        assert items.data[0].content[0].text == "Hello, I am your chef."  # the agent's first message
        assert [m["content"] for m in messages(http, "kitchen-1")][-2:] == ["And thyme?", answer.output_text]
        again = http.post("/api/v1/chat", json={"message": "Which is best?", "session_id": "kitchen-1"}).json()
        assert "earlier: Basil or mint? / And thyme?" in again["response"]  # and back on /api/v1/chat
