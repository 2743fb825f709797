"""`/mcp`'s translations (api/adapters/mcp_server/translate.py): agents as tools, arguments as a chat request,
turns as tool results; and how a 2025-11-25 `notifications/cancelled` finds its call's turn (routes.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import mcp_types as types
import pytest

from parley.api.adapters.mcp_server import routes, server, translate
from parley.shared.schema import ChatResponse
from parley.shared.store.turns import TurnStore

AGENT = {"id": "agent-1", "name": "Chef", "description": "", "response_shape": None}


def _text(result: types.CallToolResult) -> str:
    """The result's one text content."""
    [content] = result.content
    assert isinstance(content, types.TextContent), content
    return content.text


def _meta(result: types.CallToolResult) -> dict[str, Any]:
    """What the result's `_meta` says of the turn."""
    assert result.meta is not None
    return result.meta["parley"]  # type: ignore[no-any-return]


def _agent(**fields: Any) -> dict[str, Any]:
    return {**AGENT, **fields}


def test_a_tool_is_named_by_the_agent_name_else_its_id() -> None:
    agents = [_agent(), _agent(id="agent-2", name="Wine Expert"), _agent(id="agent-3", name="Chef"),
              _agent(id="agent-4", name="x" * 129), _agent(id="agent-5", name="ok.name_v-2")]  # fmt: skip
    named = translate.tools_by_name(agents)
    assert list(named) == ["Chef", "agent-2", "agent-3", "agent-4", "ok.name_v-2"]
    assert named["agent-3"]["id"] == "agent-3"  # a second "Chef" (a tenant agent beside a file agent)


def test_a_json_schema_shape_of_an_object_is_the_output_schema() -> None:
    shape = {"type": "object", "properties": {"dish": {"type": "string"}}}
    assert translate.tool("Chef", _agent(response_shape=shape)).output_schema == shape
    assert translate.tool("Chef", _agent(response_shape={"dish": "the dish's name"})).output_schema is None
    assert translate.tool("Chef", _agent(response_shape={"type": "array", "items": {}})).output_schema is None
    assert translate.tool("Chef", _agent(response_shape="one word")).output_schema is None
    tool = translate.tool("Chef", _agent())
    assert tool.description == "Chat with the Parley agent 'Chef'." and tool.input_schema["required"] == ["message"]


@pytest.mark.parametrize("arguments, says", [
    (None, "`message` is required"),
    ({}, "`message` is required"),
    ({"message": 3}, "`message` is required and must be a string"),
    ({"message": "  "}, "`message`: Value error, message must not be blank"),
    ({"message": "hi", "session_id": 5}, "`session_id` must be a string"),
    ({"message": "hi", "session_id": "has space"}, "`session_id`: String should match pattern"),
    ({"message": "hi", "agent": "Other"}, "unknown argument(s) agent"),
])  # fmt: skip
def test_arguments_that_make_no_chat_request_say_why(arguments: dict[str, Any] | None, says: str) -> None:
    with pytest.raises(translate.BadArguments) as raised:
        translate.chat_request(_agent(), arguments)
    assert str(raised.value).startswith(says)


def test_arguments_make_a_turn_of_that_agent() -> None:
    request = translate.chat_request(_agent(), {"message": "hi", "session_id": "s-1"})
    assert (request.message, request.agent, request.session_id) == ("hi", "agent-1", "s-1")


def _response(structured: Any = None) -> ChatResponse:
    return ChatResponse(response="an answer", agent_id="agent-1", agent_name="Chef", session_id="s-1",
                        job_id="job_1", structured=structured)  # fmt: skip


def test_an_answer_is_text_with_the_turn_in_meta_and_structured_content_as_an_object() -> None:
    plain = translate.answer(_response(), _agent())
    assert _text(plain) == "an answer" and not plain.is_error and plain.structured_content is None
    assert plain.meta == {"parley": {"session_id": "s-1", "job_id": "job_1", "agent_id": "agent-1",
                                     "agent_name": "Chef", "status": "finished"}}  # fmt: skip
    assert translate.answer(_response({"dish": "soup"}), _agent()).structured_content == {"dish": "soup"}
    assert translate.answer(_response(["a", "b"]), _agent()).structured_content == {"result": ["a", "b"]}


def test_a_failure_is_a_tool_error_and_a_wait_is_not() -> None:
    failed = translate.failed("it broke", code="model_error", job_id="job_1", session_id=None)
    assert failed.is_error and _text(failed) == "it broke"
    assert failed.meta == {"parley": {"code": "model_error", "job_id": "job_1"}}
    pending = [{"call_id": "call_1", "tool_name": "http_get", "args": {"url": "https://example.com"}}]
    waiting = translate.waiting("s-1", "job_1", "agent-1", pending)
    assert not waiting.is_error and "http_get" in _text(waiting) and "job_1" in _text(waiting)
    assert _meta(waiting)["status"] == "waiting" and _meta(waiting)["pending"] == pending


class _Store:
    def __init__(self, stored: dict[str, str]) -> None:
        self.stored = stored
        self.r = self  # TurnStore's Redis client: only `get` is read
        self.canceled: list[tuple[str, str]] = []

    def get(self, key: str) -> str | None:
        return self.stored.get(key)

    def cancel(self, tenant: str, job_id: str) -> bool:
        self.canceled.append((tenant, job_id))
        return True

    idempotent_job = TurnStore.idempotent_job  # the real lookup, over the stored values above


class _Runtime:
    def __init__(self, store: _Store) -> None:
        self.turns = store


def _cancel(token: str | None, body: Any, stored: dict[str, str]) -> list[tuple[str, str]]:
    from parley.shared.store import keys

    store = _Store({keys.idempotency("alice", key): value for key, value in stored.items()})
    caller = server.Caller(_Runtime(store), "alice", "key-alice", token)  # type: ignore[arg-type]
    asyncio.run(routes._on_cancel_notification(caller, json.dumps(body).encode()))
    return store.canceled


def test_a_cancel_notification_cancels_the_turn_of_that_call_under_that_token() -> None:
    stored = {server.call_key("tok-1", 7): "job_7 hash", server.call_key("tok-2", 8): "job_8 hash",
              server.call_key("tok-1", "7"): "job_s7 hash"}  # fmt: skip
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
    assert _cancel("tok-1", cancel, stored) == [("alice", "job_7")]
    assert _cancel("tok-2", cancel, stored) == []  # another connection's call 7: not ours
    assert _cancel("tok-1", {**cancel, "params": {"requestId": "7"}}, stored) == [("alice", "job_s7")]
    assert _cancel(None, cancel, stored) == []
    assert len(server.call_key("tok-1", "x" * 10_000)) < 255  # an Idempotency-Key whatever the id's length
    assert _cancel("tok-1", {**cancel, "params": {"requestId": True}}, stored) == []
    assert _cancel("tok-1", {**cancel, "params": "7"}, stored) == []
    assert _cancel("tok-1", {"jsonrpc": "2.0", "method": "tools/call", "id": 7, "params": {"requestId": 7}},
                   stored) == []  # fmt: skip
