"""The SDK's surface: sync/async parity, configuration, and the requests each method sends."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from parley.client import (
    AgentFields,
    AgentUpdate,
    AsyncParley,
    Parley,
    WaitTimeoutError,
)
from parley.client._async import (
    AsyncAgents,
    AsyncFeedbackApi,
    AsyncJobs,
    AsyncMcpServers,
    AsyncSchedules,
    AsyncSessions,
    AsyncWebhooks,
)
from parley.client._sync import Agents, FeedbackApi, Jobs, McpServers, Schedules, Sessions, Webhooks

PAIRS = [(Parley, AsyncParley), (Agents, AsyncAgents), (Sessions, AsyncSessions), (Jobs, AsyncJobs),
         (McpServers, AsyncMcpServers), (FeedbackApi, AsyncFeedbackApi), (Webhooks, AsyncWebhooks),
         (Schedules, AsyncSchedules)]  # fmt: skip
SYNC_ONLY = {"__enter__", "__exit__"}
ASYNC_ONLY = {"__aenter__", "__aexit__"}


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {name: member for name, member in vars(cls).items()
            if callable(member) and (not name.startswith("_") or name in SYNC_ONLY | ASYNC_ONLY)}  # fmt: skip


def asyncified(annotation: str) -> str:
    for name in ("EventStream", "Iterator", "Parley"):
        annotation = annotation.replace(name, "Async" + name)
    return annotation


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_api_parity(sync_cls: type, async_cls: type) -> None:
    """Every sync method has an async twin with the same parameters; one returning an iterator
    returns an async iterator, every other one is a coroutine function."""
    sync_methods, async_methods = public_methods(sync_cls), public_methods(async_cls)
    assert set(sync_methods) - SYNC_ONLY == set(async_methods) - ASYNC_ONLY
    assert SYNC_ONLY <= set(sync_methods) if sync_cls is Parley else True
    for name, method in sync_methods.items():
        if name in SYNC_ONLY:
            continue
        twin = async_methods[name]
        sync_sig, async_sig = inspect.signature(method), inspect.signature(twin)
        assert [(p.name, p.kind, p.default, asyncified(str(p.annotation))) for p in sync_sig.parameters.values()] == [
            (p.name, p.kind, p.default, str(p.annotation)) for p in async_sig.parameters.values()
        ], name
        assert asyncified(str(sync_sig.return_annotation)) == str(async_sig.return_annotation), name
        returns_iterator = "Iterator" in str(sync_sig.return_annotation) or "EventStream" in str(
            sync_sig.return_annotation
        )
        if returns_iterator:
            assert not inspect.iscoroutinefunction(twin), name
        else:
            assert inspect.iscoroutinefunction(twin), name
            assert not inspect.iscoroutinefunction(method), name


def test_agent_fields_match_the_services_update_model() -> None:
    assert set(AgentFields.__annotations__) == set(AgentUpdate.model_fields)


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_URL", "http://env.test:9000/")
    monkeypatch.setenv("PARLEY_API_KEY", "env-key")
    client = Parley()
    assert client.base_url == "http://env.test:9000" and client.api_key == "env-key"
    assert client.timeout.connect == 5.0 and client.timeout.read == 30.0
    assert client.stream_timeout.read == 60.0 and client.chat_timeout.read == 130.0
    explicit = Parley("http://arg.test", "arg-key", timeout=3.0, stream_timeout=45.0)
    assert explicit.base_url == "http://arg.test" and explicit.api_key == "arg-key"
    assert explicit.timeout.read == 3.0 and explicit.stream_timeout.read == 45.0
    assert explicit.stream_timeout.connect == 3.0
    monkeypatch.delenv("PARLEY_URL")
    monkeypatch.delenv("PARLEY_API_KEY")
    bare = Parley()
    assert bare.base_url == "http://127.0.0.1:8000" and bare.api_key is None
    for c in (client, explicit, bare):
        c.close()


class Recorder:
    """A fake service answering from `routes` ({(method, path): response or callable}); records requests."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.raw_path.decode().partition("?")[0]))
        if answer is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": request.url.path}})
        return answer(request) if callable(answer) else answer

    def client(self) -> Parley:
        return Parley("http://parley.test/base/", "k", http_client=httpx.Client(transport=httpx.MockTransport(self)))


AGENT = {"id": "agent-1", "name": "Chef", "model": "m", "created_at": "t", "description": "", "type": "conversational"}
SESSION = {"session_id": "s", "agent_id": "agent-1", "agent_name": "Chef", "created_at": "t", "metadata": {},
           "message_count": 1}  # fmt: skip
JOB = {"job_id": "job_1", "status": "queued", "session_id": "s", "agent_id": "agent-1", "enqueued_at": "t",
       "started_at": None, "ended_at": None, "result": None, "error": None}  # fmt: skip


def test_agents_requests() -> None:
    service = Recorder({
        ("POST", "/base/api/v1/agents"): httpx.Response(201, json=AGENT),
        ("GET", "/base/api/v1/agents"): httpx.Response(200, json=[AGENT]),
        ("GET", "/base/api/v1/agents/Le%20Chef%2F2"): httpx.Response(200, json=AGENT),
        ("PATCH", "/base/api/v1/agents/agent-1"): httpx.Response(200, json=AGENT),
        ("DELETE", "/base/api/v1/agents/agent-1"): httpx.Response(204),
    })  # fmt: skip
    with service.client() as client:
        assert client.agents.create("Chef", context="c", response_shape={"a": "b"}).id == "agent-1"
        assert [a.name for a in client.agents.list()] == ["Chef"]
        assert client.agents.get("Le Chef/2").name == "Chef"
        client.agents.update("agent-1", description="new", temperature=None)
        client.agents.delete("agent-1")
    bodies = [json.loads(r.content) if r.content else None for r in service.requests]
    assert bodies[0] == {"name": "Chef", "context": "c", "response_shape": {"a": "b"}}
    assert bodies[3] == {"description": "new", "temperature": None}  # None is sent: it clears
    assert service.requests[2].url.raw_path == b"/base/api/v1/agents/Le%20Chef%2F2"
    assert all(r.headers["Authorization"] == "Bearer k" for r in service.requests)


def test_sessions_list_follows_the_cursor_and_messages_pass_their_parameters() -> None:
    pages = {None: ([SESSION, {**SESSION, "session_id": "r"}], "c1"), "c1": ([{**SESSION, "session_id": "q"}], None)}

    def list_sessions(request: httpx.Request) -> httpx.Response:
        data, next_cursor = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"data": data, "next_cursor": next_cursor})

    message = {"id": "msg_0", "role": "assistant", "content": "hi", "created_at": "t", "job_id": None}
    service = Recorder({
        ("GET", "/base/api/v1/sessions"): list_sessions,
        ("POST", "/base/api/v1/sessions"): httpx.Response(201, json=SESSION),
        ("GET", "/base/api/v1/sessions/s/messages"): httpx.Response(200, json={"data": [message]}),
        ("DELETE", "/base/api/v1/sessions/s"): httpx.Response(204),
    })  # fmt: skip
    with service.client() as client:
        assert [s.session_id for s in client.sessions.list(agent="Chef", page_size=2)] == ["s", "r", "q"]
        assert client.sessions.create("Chef", session_id="s", metadata={"u": 1}).session_id == "s"
        assert [m.content for m in client.sessions.messages("s", limit=5, before="msg_9")] == ["hi"]
        client.sessions.delete("s")
    params = [dict(r.url.params) for r in service.requests]
    assert params[:2] == [{"agent": "Chef", "limit": "2"}, {"agent": "Chef", "limit": "2", "cursor": "c1"}]
    assert json.loads(service.requests[2].content) == {"agent": "Chef", "session_id": "s", "metadata": {"u": 1}}
    assert params[3] == {"limit": "5", "before": "msg_9"}


def test_chat_job_and_jobs_wait_polls_until_final(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("parley.client._sync.time.sleep", lambda delay: None)
    statuses = ["queued", "started", "finished"]
    accepted = {"job_id": "job_1", "session_id": "s", "agent_id": "agent-1", "status": "queued",
                "status_url": "/api/v1/jobs/job_1", "events_url": "/api/v1/jobs/job_1/events"}  # fmt: skip
    service = Recorder({
        ("POST", "/base/api/v1/chat/jobs"): httpx.Response(202, json=accepted),
        ("GET", "/base/api/v1/jobs/job_1"): lambda r: httpx.Response(200, json={**JOB, "status": statuses.pop(0)}),
        ("POST", "/base/api/v1/jobs/job_1/cancel"): httpx.Response(
            202, json={"job_id": "job_1", "status": "finished", "canceled": False}),
    })  # fmt: skip
    with service.client() as client:
        job = client.chat_job("hi", images=["data:image/png;base64,AAAA"])
        assert job.job_id == "job_1" and job.status == "queued"
        assert client.jobs.wait(job.job_id, timeout=10).status == "finished"
        assert client.jobs.cancel("job_1").canceled is False
    assert json.loads(service.requests[0].content) == {"message": "hi", "images": ["data:image/png;base64,AAAA"]}
    assert service.requests[0].headers["Idempotency-Key"].startswith("parley-client-")
    assert len(service.requests) == 5


def test_jobs_wait_gives_up_after_its_timeout() -> None:
    service = Recorder({("GET", "/base/api/v1/jobs/job_1"): httpx.Response(200, json=JOB)})
    with service.client() as client, pytest.raises(WaitTimeoutError) as raised:
        client.jobs.wait("job_1", timeout=0.05, poll_interval=0.01)
    assert raised.value.job.status == "queued" and len(service.requests) >= 2


def test_async_client_sends_the_same_requests() -> None:
    service = Recorder({
        ("POST", "/api/v1/chat"): httpx.Response(200, json={"response": "echo: hi", "agent_id": "agent-1",
                                                            "agent_name": "Chef", "session_id": "s", "job_id": "j"}),
        ("GET", "/api/v1/sessions"): httpx.Response(200, json={"data": [SESSION], "next_cursor": None}),
        ("GET", "/api/v1/jobs/job_1"): httpx.Response(200, json={**JOB, "status": "finished"}),
    })  # fmt: skip

    async def run() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(service))
        async with AsyncParley("http://parley.test", "k", http_client=http) as client:
            answer = await client.chat("hi", agent="Chef", session_id="s", idempotency_key="idem")
            assert answer.response == "echo: hi"
            assert [s.session_id async for s in client.sessions.list()] == ["s"]
            assert (await client.jobs.wait("job_1")).status == "finished"
        await http.aclose()

    asyncio.run(run())
    chat = service.requests[0]
    assert json.loads(chat.content) == {"message": "hi", "agent": "Chef", "session_id": "s"}
    assert chat.headers["Idempotency-Key"] == "idem" and chat.headers["Authorization"] == "Bearer k"


MESSAGE = {"id": "msg_2", "role": "assistant", "content": "Pesto.", "created_at": "t", "job_id": "job_1"}
RATED = {**MESSAGE, "feedback": {"rating": "up", "comment": "good", "updated_at": "t2"}}
ITEM = {"session_id": "s", "message_id": "msg_2", "agent_id": "agent-1", "rating": "up", "comment": None,
        "updated_at": "t2", "content": "Pesto."}  # fmt: skip


def test_conversation_control_requests() -> None:
    """Each method of issue 16's routes sends the contract's method, path and body."""
    pages = {None: ([ITEM], "c1"), "c1": ([{**ITEM, "message_id": "msg_4"}], None)}
    answer = {"response": "again", "agent_id": "agent-1", "agent_name": "Chef", "session_id": "s", "job_id": "j"}
    service = Recorder({
        ("POST", "/base/api/v1/chat"): httpx.Response(200, json=answer),
        ("PUT", "/base/api/v1/sessions/s/messages/msg_2/feedback"): lambda r: httpx.Response(
            200, json=RATED if json.loads(r.content)["rating"] else MESSAGE),
        ("GET", "/base/api/v1/feedback"): lambda r: httpx.Response(200, json=dict(zip(
            ("data", "next_cursor"), pages[r.url.params.get("cursor")], strict=True))),
        ("POST", "/base/api/v1/sessions/s/fork"): httpx.Response(201, json={**SESSION, "session_id": "f"}),
        ("GET", "/base/api/v1/sessions/s/messages"): httpx.Response(200, json={"data": [MESSAGE]}),
        ("POST", "/base/api/v1/webhooks"): httpx.Response(201, json={"id": "wh_1", "url": "https://x", "events": [
            "turn.finished"], "secret": "shh"}),
        ("GET", "/base/api/v1/webhooks"): httpx.Response(200, json={"data": [{"id": "wh_1", "url": "https://x"}]}),
        ("GET", "/base/api/v1/webhooks/wh_1/deliveries"): httpx.Response(200, json=[{"id": "d1", "status": "ok"}]),
        ("DELETE", "/base/api/v1/webhooks/wh_1"): httpx.Response(204),
        ("POST", "/base/api/v1/schedules"): httpx.Response(201, json={"id": "sch_1", "next_run_at": "t"}),
        ("GET", "/base/api/v1/schedules/sch_1"): httpx.Response(200, json={"id": "sch_1", "interval_s": 60}),
        ("DELETE", "/base/api/v1/schedules/sch_1"): httpx.Response(204),
    })  # fmt: skip
    with service.client() as client:
        assert client.chat(session_id="s", regenerate=True, on_busy="reject").response == "again"
        rated = client.feedback.set("s", "msg_2", "up", comment="good")
        assert rated.feedback is not None and rated.feedback.rating == "up" and rated.feedback.comment == "good"
        assert client.feedback.clear("s", "msg_2").feedback is None
        assert [i.message_id for i in client.feedback.list(agent="Chef", since="2026-01-01T00:00:00Z")] == [
            "msg_2", "msg_4"]  # fmt: skip
        assert client.sessions.fork("s", "msg_2", new_session_id="f").session_id == "f"
        client.sessions.messages("s", include_replaced=True)
        assert client.webhooks.create("https://x", ["turn.finished"]).secret == "shh"
        assert [w.id for w in client.webhooks.list()] == ["wh_1"]
        assert [d.status for d in client.webhooks.deliveries("wh_1")] == ["ok"]
        client.webhooks.delete("wh_1")
        assert client.schedules.create("Chef", "report", interval_s=60).next_run_at == "t"
        assert client.schedules.get("sch_1").interval_s == 60
        client.schedules.delete("sch_1")
    bodies = [json.loads(r.content) if r.content else None for r in service.requests]
    assert bodies[0] == {"regenerate": True, "session_id": "s", "on_busy": "reject"}
    assert bodies[1:3] == [{"rating": "up", "comment": "good"}, {"rating": None}]
    assert [dict(r.url.params) for r in service.requests[3:5]] == [
        {"agent": "Chef", "since": "2026-01-01T00:00:00Z", "limit": "20"},
        {"agent": "Chef", "since": "2026-01-01T00:00:00Z", "limit": "20", "cursor": "c1"}]  # fmt: skip
    assert bodies[5] == {"at": "msg_2", "session_id": "f"}
    assert dict(service.requests[6].url.params) == {"include": "replaced"}
    assert bodies[7] == {"url": "https://x", "events": ["turn.finished"]}
    assert bodies[11] == {"agent": "Chef", "message": "report", "interval_s": 60}
    with pytest.raises(ValueError, match="no message"):
        Parley("http://x").chat("hi", session_id="s", regenerate=True)
