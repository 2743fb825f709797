"""The official `a2a-sdk` client, unmodified, driving Parley agents through A2A (1.0, and 0.3 where the SDK's
compat transport speaks it) against real Redis, web and worker processes and the scripted model server.

The SDK picks 1.0 from the card (it lists a 1.0 and a 0.3 interface on the same URL); the 0.3 tests hand the
client the same card with its 0.3 interface only, so the SDK's own 0.3 transport sends `message/send`,
`message/stream`, `tasks/get`, `tasks/cancel` and `tasks/resubscribe`. What no client sends (a broken envelope,
an unknown method, a batch) is sent as raw JSON-RPC, said so in each test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError
from a2a.helpers.proto_helpers import get_data_parts, get_text_parts, new_data_part, new_text_part
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
)
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, messages, model_requests

TOOL_ENV = {"PARLEY_TOOL_MODULES": "tests.fixture_tools"}
BUMP_THEN_ANSWER = (
    {"reply": "I will bump it.", "tool_calls": [{"name": "bump", "arguments": {}}]},
    {"reply": "Done bumping."},
)
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "intent": {"type": "string"}},
    "required": ["answer", "intent"],
}
SLOW = {"reply": "one two three four five six seven eight", "chunk_delay_ms": 400}
"""An answer that streams for about three seconds: long enough to subscribe to it and cancel it."""


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _message(*parts: Part, context_id: str | None = None, task_id: str | None = None) -> SendMessageRequest:
    message = Message(role=Role.ROLE_USER, parts=list(parts), message_id=str(uuid.uuid4()),
                      context_id=context_id or "", task_id=task_id or "")  # fmt: skip
    return SendMessageRequest(message=message)


def _text(text: str, **ids: str | None) -> SendMessageRequest:
    return _message(new_text_part(text), **ids)


def _answer(task: Task) -> str:
    return "".join(get_text_parts(task.artifacts[0].parts)) if task.artifacts else ""


def _legacy(card: AgentCard) -> AgentCard:
    """The same card with its 0.3 interface only: the SDK then talks 0.3 (its CompatJsonRpcTransport)."""
    legacy = AgentCard()
    legacy.CopyFrom(card)
    del legacy.supported_interfaces[:]
    legacy.supported_interfaces.extend(i for i in card.supported_interfaces if i.protocol_version == "0.3")
    return legacy


@asynccontextmanager
async def _client(stack: Any, agent: str = "Chef", *, streaming: bool = False, polling: bool = False,
                  legacy: bool = False, tenant: str = "alice") -> AsyncIterator[tuple[Client, AgentCard]]:  # fmt: skip
    """The SDK's client for the agent, built from its card (fetched with the key), its calls carrying the key."""
    async with httpx.AsyncClient(headers=stack.headers(tenant), timeout=30) as http:
        card = await A2ACardResolver(http, f"{stack.web_url}/a2a/{agent}").get_agent_card()
        config = ClientConfig(streaming=streaming, polling=polling, httpx_client=http)
        sdk = ClientFactory(config).create(_legacy(card) if legacy else card)
        try:
            yield sdk, card
        finally:
            await sdk.close()


async def _send(sdk: Client, request: SendMessageRequest) -> Task:
    """A non-streaming send: its one response, a task."""
    responses = [response async for response in sdk.send_message(request)]
    assert len(responses) == 1 and responses[0].HasField("task"), responses
    return responses[0].task


async def _collect(stream: AsyncIterator[StreamResponse]) -> list[StreamResponse]:
    return [response async for response in stream]


def _states(responses: list[StreamResponse]) -> list[int]:
    """The states a stream showed, its snapshot's included (a turn may end or wait before its stream starts)."""
    return [r.status_update.status.state if r.HasField("status_update") else r.task.status.state
            for r in responses if r.HasField("status_update") or r.HasField("task")]  # fmt: skip


def _last_status(responses: list[StreamResponse]) -> tuple[str, TaskStatus]:
    """The task id and status of a stream's last status update, or of its snapshot when nothing followed it."""
    last = responses[-1]
    if last.HasField("task"):
        return last.task.id, last.task.status
    return last.status_update.task_id, last.status_update.status


def _streamed_text(responses: list[StreamResponse]) -> str:
    """The answer as a client rebuilds it: the snapshot's artifact, then artifact updates (`append` adds, otherwise
    the parts replace)."""
    text = ""
    for response in responses:
        if response.HasField("task") and response.task.artifacts:
            text = "".join(get_text_parts(response.task.artifacts[0].parts))
        if response.HasField("artifact_update"):
            update = response.artifact_update
            chunk = "".join(get_text_parts(update.artifact.parts))
            text = text + chunk if update.append else chunk
    return text


def run(coroutine: Callable[[], Awaitable[None]]) -> None:
    """Run a scenario, failing with its traceback (not the whole test's timeout) if it hangs."""

    async def bounded() -> None:
        async with asyncio.timeout(90):
            await coroutine()

    asyncio.run(bounded())


# ---------------------------------------------------------------------------------------------------- 1.0


def test_card_blocking_send_get_and_memory_through_context_id(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        agent = create_agent(http, description="Cooks things.")

    async def scenario() -> str:
        async with _client(stack) as (sdk, card):
            assert card.name == "Chef" and card.description == "Cooks things." and card.capabilities.streaming
            assert {(i.url, i.protocol_version) for i in card.supported_interfaces} == {
                (f"{stack.web_url}/a2a/Chef", "1.0"), (f"{stack.web_url}/a2a/Chef", "0.3")}  # fmt: skip
            assert card.security_schemes["bearer"].http_auth_security_scheme.scheme.lower() == "bearer"
            first = await _send(sdk, _text("I like figs"))
            assert first.status.state == TaskState.TASK_STATE_COMPLETED, first
            assert first.id.startswith("job_") and first.context_id
            assert _answer(first) == "echo: I like figs"
            assert [get_text_parts(m.parts) for m in first.history] == [["I like figs"], ["echo: I like figs"]]
            second = await _send(sdk, _text("and dates", context_id=first.context_id))
            assert second.context_id == first.context_id and second.id != first.id
            assert _answer(second) == "echo: and dates | earlier: I like figs"
            got = await sdk.get_task(GetTaskRequest(id=first.id, history_length=1))
            assert got.status.state == TaskState.TASK_STATE_COMPLETED and _answer(got) == "echo: I like figs"
            assert [m.role for m in got.history] == [Role.ROLE_AGENT]
        return first.context_id

    context_id = asyncio.run(scenario())
    with client(stack.web_url, stack.api_key) as http:  # the context is a Parley session of the agent
        session = http.get(f"/api/v1/sessions/{context_id}").json()
        assert session["agent_id"] == agent["id"]
        user_said = [m["content"] for m in messages(http, context_id) if m["role"] == "user"]
        assert user_said == ["I like figs", "and dates"]
        started = http.post("/api/v1/chat", json={"message": "I cook for two", "session_id": "shared-1"})
        assert started.status_code == 200, started.text

    async def across() -> None:  # a session started on /api/v1/chat goes on through A2A
        async with _client(stack) as (sdk, _):
            task = await _send(sdk, _text("what now?", context_id="shared-1"))
            assert _answer(task) == "echo: what now? | earlier: I cook for two"

    run(across)
    with client(stack.web_url, stack.api_key) as http:
        no_key = httpx.get(f"{stack.web_url}/a2a/Chef/.well-known/agent-card.json")
        assert no_key.status_code == 401 and no_key.headers["WWW-Authenticate"] == "Bearer"
        bob = httpx.get(f"{stack.web_url}/a2a/Chef/.well-known/agent-card.json", headers=stack.headers("bob"))
        assert bob.status_code == 404  # alice's agent does not exist for bob


def test_streaming_send_streams_status_and_the_answer_as_artifact_chunks(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, {"reply": "figs are sweet and dates are too", "chunk_delay_ms": 20})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)

    async def scenario() -> None:
        async with _client(stack, streaming=True) as (sdk, _):
            responses = await _collect(sdk.send_message(_text("tell me")))
        assert responses[0].HasField("task")  # the snapshot first
        assert responses[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
        chunks = [r for r in responses if r.HasField("artifact_update")]
        assert len(chunks) > 3  # the answer streamed in pieces, then came whole as the last chunk
        assert chunks[-1].artifact_update.last_chunk and not chunks[0].artifact_update.append
        assert _streamed_text(responses) == "figs are sweet and dates are too"
        states = _states(responses)
        assert states[:2] == [TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING]
        assert states[-1] == TaskState.TASK_STATE_COMPLETED
        assert responses[-1].HasField("status_update")  # the stream ends with the final status

    run(scenario)


def test_subscribe_then_cancel_a_running_task(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, SLOW)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)

    async def scenario() -> None:
        async with _client(stack, polling=True) as (sdk, _), _client(stack, streaming=True) as (streamer, _):
            task = await _send(sdk, _text("slowly"))  # returnImmediately: the task as accepted
            assert task.status.state == TaskState.TASK_STATE_SUBMITTED
            subscription = streamer.subscribe(SubscribeToTaskRequest(id=task.id))
            first = await anext(subscription)
            assert first.HasField("task") and first.task.id == task.id
            seen = [first]
            async for response in subscription:  # wait until the answer streams, then cancel
                seen.append(response)
                if response.HasField("artifact_update"):
                    break
            canceled = await sdk.cancel_task(CancelTaskRequest(id=task.id))
            assert canceled.status.state == TaskState.TASK_STATE_CANCELED
            seen += [response async for response in subscription]
            assert _states(seen)[-1] == TaskState.TASK_STATE_CANCELED
            with pytest.raises(TaskNotCancelableError):
                await sdk.cancel_task(CancelTaskRequest(id=task.id))
            with pytest.raises(UnsupportedOperationError):  # an ended task has nothing to stream
                await _collect(streamer.subscribe(SubscribeToTaskRequest(id=task.id)))
            got = await sdk.get_task(GetTaskRequest(id=task.id))
            assert got.status.state == TaskState.TASK_STATE_CANCELED and not got.artifacts

    run(scenario)


def test_an_approval_wait_is_input_required_and_a_message_decides_it(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(env=TOOL_ENV)
    _script(stack, *BUMP_THEN_ANSWER)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["bump"], approval=["bump"])

    async def scenario() -> None:
        async with _client(stack) as (sdk, _), _client(stack, streaming=True) as (streamer, _):
            task = await _send(sdk, _text("bump it"))
            assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED, task
            # A stream of a task that waits is its snapshot alone: A2A streams end at input-required.
            [snapshot] = await _collect(streamer.subscribe(SubscribeToTaskRequest(id=task.id)))
            pending = get_data_parts(task.status.message.parts)[0]["pending"]
            task_id, status = _last_status([snapshot])
            assert (task_id, status.state) == (task.id, TaskState.TASK_STATE_INPUT_REQUIRED)
            assert get_data_parts(status.message.parts)[0]["pending"] == pending
            assert [(call["tool_name"], call["kind"]) for call in pending] == [("bump", "approval")]
            call_id = pending[0]["call_id"]
            with pytest.raises(InvalidParamsError):  # a call the task does not wait for
                await _send(sdk, _message(new_data_part({"call_id": "nope", "approve": True}), task_id=task.id))
            with pytest.raises(InvalidParamsError):  # text alone cannot decide
                await _send(sdk, _text("yes please", task_id=task.id))
            decided = await _send(sdk, _message(new_data_part({"call_id": call_id, "approve": True}),
                                                task_id=task.id, context_id=task.context_id))  # fmt: skip
            assert decided.id == task.id and decided.status.state == TaskState.TASK_STATE_COMPLETED
            assert _answer(decided) == "Done bumping."
            with pytest.raises(UnsupportedOperationError):  # the task ended: nothing waits any more
                await _send(sdk, _message(new_data_part({"call_id": call_id, "approve": True}), task_id=task.id))

    run(scenario)


def test_errors_come_back_as_a2a_errors(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)

        create_agent(http, name="Other")
    with client(stack.web_url, "key-bob") as http:
        create_agent(http)  # bob's own Chef: alice's tasks do not exist for him

    async def scenario() -> None:
        async with _client(stack) as (sdk, _):
            task = await _send(sdk, _text("hello"))
            with pytest.raises(TaskNotFoundError):
                await sdk.get_task(GetTaskRequest(id="job_nope"))
            with pytest.raises(ContentTypeNotSupportedError):
                await _send(sdk, _message(Part(url="https://example.com/a.png")))
            with pytest.raises(InvalidParamsError):  # not a Parley session id
                await _send(sdk, _text("hi", context_id="bad id with spaces"))
        await _only_its_owner_sees_a_task(stack, task)

    run(scenario)


async def _only_its_owner_sees_a_task(stack: Any, task: Task) -> None:
    async with _client(stack, tenant="bob") as (bob, _):
        with pytest.raises(TaskNotFoundError):
            await bob.get_task(GetTaskRequest(id=task.id))
        with pytest.raises(TaskNotFoundError):
            await bob.cancel_task(CancelTaskRequest(id=task.id))
    async with _client(stack, agent="Other") as (other, _):  # a task is seen through its own agent only
        with pytest.raises(TaskNotFoundError):
            await other.get_task(GetTaskRequest(id=task.id))
        with pytest.raises(TaskNotFoundError):
            await other.create_task_push_notification_config(TaskPushNotificationConfig(task_id=task.id,
                                                                                     url="https://example.com/x"))


def test_a_structured_answer_is_a_data_part_beside_its_text(stack) -> None:
    stack.start_web()
    stack.start_workers()
    answer = {"answer": "Pasta", "intent": "recommend"}
    _script(stack, {"reply": json.dumps(answer)})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, name="Shaped Chef", response_shape=SCHEMA)

    async def scenario() -> None:
        async with _client(stack, agent=quote("Shaped Chef")) as (sdk, card):
            assert card.supported_interfaces[0].url == f"{stack.web_url}/a2a/Shaped%20Chef"
            task = await _send(sdk, _text("dinner?"))
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            assert json.loads(_answer(task)) == answer
            assert get_data_parts(task.artifacts[0].parts) == [answer]

    run(scenario)


def test_raw_json_rpc_envelope_errors_and_auth(stack) -> None:
    """Raw JSON-RPC (httpx): what no A2A client sends: broken JSON, a batch, an unknown method, no key."""
    stack.start_web()
    stack.start_workers()
    url = f"{stack.web_url}/a2a/Chef"
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        broken = http.post("/a2a/Chef", content=b'{"jsonrpc": "2.0", "id": 1, "method": ')
        assert broken.status_code == 200 and broken.json()["error"]["code"] == -32700
        batch = http.post("/a2a/Chef", json=[{"jsonrpc": "2.0", "id": 1, "method": "GetTask"}])
        assert batch.json()["error"]["code"] == -32600
        unknown = http.post("/a2a/Chef", json={"jsonrpc": "2.0", "id": 7, "method": "tasks/explode"})
        assert unknown.json() == {"jsonrpc": "2.0", "id": 7, "error": {
            "code": -32601, "message": "no A2A method 'tasks/explode'",
            "data": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "METHOD_NOT_FOUND",
                      "domain": "a2a-protocol.org", "metadata": {}}]}}  # fmt: skip
        deep = http.post("/a2a/Chef", content=b"[" * 100000 + b"]" * 100000)
        assert deep.status_code in (200, 413) and "error" in deep.json()
        missing = http.post("/a2a/Nobody", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == -32600
        sessions_before = http.get("/api/v1/sessions").json()["data"]
        for headers in ({"Content-Type": "application/json"}, {"Content-Type": "text/plain"}):
            lone = http.post("/a2a/Chef", headers=headers, content=rb'{"jsonrpc": "2.0", "id": 1, "method": '
                             rb'"message/send", "params": {"message": {"kind": "message", "messageId": "m", '
                             rb'"role": "user", "parts": [{"kind": "text", "text": "hi \ud800 there"}]}}}')  # fmt: skip
            assert lone.status_code == 200, lone.text
            assert lone.json()["result"]["artifacts"][0]["parts"][0]["text"] == "echo: hi \ufffd there"
        sessions_before = http.get("/api/v1/sessions").json()["data"]
    no_key = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}})
    assert no_key.status_code == 401 and no_key.headers["WWW-Authenticate"] == "Bearer"
    assert no_key.json()["error"]["code"] == -32600 and no_key.json()["id"] is None
    with client(stack.web_url, stack.api_key) as http:
        message = {"kind": "message", "messageId": "m", "role": "user", "parts": [{"kind": "text", "text": " "}]}
        blank = http.post("/a2a/Chef", json={"jsonrpc": "2.0", "id": "b", "method": "message/send",
                                             "params": {"message": message}})  # fmt: skip
        assert blank.json()["error"]["code"] == -32602 and "data" not in blank.json()["error"]  # 0.3: no ErrorInfo
        assert http.get("/api/v1/sessions").json()["data"] == sessions_before  # refused requests made nothing


# ---------------------------------------------------------------------------------------------------- 0.3


def test_the_same_through_the_sdk_s_0_3_transport(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(env=TOOL_ENV)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        create_agent(http, name="Bumper", tools=["bump"], approval=["bump"])

    async def scenario() -> None:
        async with _client(stack, legacy=True) as (sdk, _):
            first = await _send(sdk, _text("I like figs"))  # message/send
            assert first.status.state == TaskState.TASK_STATE_COMPLETED and _answer(first) == "echo: I like figs"
            got = await sdk.get_task(GetTaskRequest(id=first.id))  # tasks/get
            assert _answer(got) == "echo: I like figs" and got.context_id == first.context_id
        async with _client(stack, legacy=True, streaming=True) as (sdk, _):
            _script(stack, {"reply": "and dates too", "chunk_delay_ms": 20})
            responses = await _collect(sdk.send_message(_text("more", context_id=first.context_id)))  # message/stream
            assert _streamed_text(responses) == "and dates too"
            assert _states(responses)[-1] == TaskState.TASK_STATE_COMPLETED
        async with (_client(stack, legacy=True, polling=True) as (sdk, _),
                    _client(stack, legacy=True, streaming=True) as (streamer, _)):  # fmt: skip
            _script(stack, SLOW)
            task = await _send(sdk, _text("slowly"))  # message/send, blocking false
            subscription = streamer.subscribe(SubscribeToTaskRequest(id=task.id))  # tasks/resubscribe
            assert (await anext(subscription)).task.id == task.id
            async for response in subscription:  # the model's answer streams: cancel it now
                if response.HasField("artifact_update"):
                    break
            canceled = await sdk.cancel_task(CancelTaskRequest(id=task.id))  # tasks/cancel
            assert canceled.status.state == TaskState.TASK_STATE_CANCELED
            rest = [response async for response in subscription]
            assert _states(rest)[-1] == TaskState.TASK_STATE_CANCELED
            with pytest.raises(TaskNotFoundError):
                await sdk.get_task(GetTaskRequest(id="job_nope"))
        async with _client(stack, agent="Bumper", legacy=True, streaming=True) as (sdk, _):
            _script(stack, *BUMP_THEN_ANSWER)
            waited = await _collect(sdk.send_message(_text("bump it")))
            assert _states(waited)[-1] == TaskState.TASK_STATE_INPUT_REQUIRED
            task_id, status = _last_status(waited)
            call_id = get_data_parts(status.message.parts)[0]["pending"][0]["call_id"]
            decision = new_data_part({"call_id": call_id, "approve": False, "reason": "not today"})
            went_on = await _collect(sdk.send_message(_message(decision, task_id=task_id)))
            assert _states(went_on)[-1] == TaskState.TASK_STATE_COMPLETED
            assert _streamed_text(went_on) == "Done bumping."

    run(scenario)
    with client(stack.web_url, stack.api_key) as http:
        user_said = [m["content"] for m in messages(http, first_context(stack)) if m["role"] == "user"]
        assert user_said == ["I like figs", "more"]


def first_context(stack: Any) -> str:
    """The session the 0.3 test's first two tasks share (the oldest session of the agent Chef)."""
    with client(stack.web_url, stack.api_key) as http:
        sessions = http.get("/api/v1/sessions?agent=Chef").json()["data"]
    wait_until(lambda: bool(sessions), timeout=1, message="no session")
    return str(sessions[-1]["session_id"])


def test_a_tenant_past_its_budget_is_refused_with_429(stack) -> None:
    """The official client sees the refusal as HTTP 429 (the body, a JSON-RPC error with `parley_code:
    budget_exceeded`, and Retry-After are there for clients that read them: test_budgets.py); nothing is queued."""
    budgets = {"PARLEY_TENANT_BUDGETS": "alice:0,*:100000"}
    stack.start_web(env=budgets)
    stack.start_workers(env=budgets)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)

    async def scenario() -> None:
        async with _client(stack) as (sdk, _):
            with pytest.raises(A2AClientError, match="429"):
                await _send(sdk, _text("hello"))

    run(scenario)
    assert model_requests(stack) == []
