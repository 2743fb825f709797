"""The SDK's approvals and MCP servers: the requests `approve`/`deny` and `mcp_servers` send, what they return,
and the typed fields of an `approval_required` event and a waiting job."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from parley.client import (
    ApprovalResult,
    AsyncParley,
    ConflictError,
    Event,
    EventType,
    McpServer,
    NotFoundError,
    Parley,
    PendingCall,
)

JOB = {"job_id": "job_1", "status": "waiting", "session_id": "s", "agent_id": "agent-1", "enqueued_at": "t",
       "started_at": "t", "ended_at": None, "result": None, "error": None,
       "pending": [{"call_id": "call_1", "kind": "approval", "tool_name": "http_get",
                    "args": {"url": "https://example.com"}}]}  # fmt: skip
SERVER = {"name": "github", "url": "https://mcp.example.com/mcp", "header_names": ["Authorization"],
          "allowed_tools": ["search"], "tools": [{"name": "search", "description": "Search code."}]}  # fmt: skip


class Service:
    """A fake API answering from `routes` ({(method, path): response or callable}); records requests."""

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
        return Parley("http://parley.test", "k", http_client=httpx.Client(transport=httpx.MockTransport(self)))

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def decided(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if body["call_id"] == "call_done":
        return httpx.Response(409, json={"error": {"code": "conflict", "message": "decided already"}})
    return httpx.Response(202, json={"job_id": "job_1", "call_id": body["call_id"], "approve": body["approve"],
                                     "status": "waiting"})  # fmt: skip


def test_approve_and_deny_post_the_decision_and_return_it() -> None:
    service = Service({("POST", "/api/v1/jobs/job_1/approvals"): decided})
    with service.client() as client:
        approved = client.approve("job_1", "call_1")
        denied = client.deny("job_1", "call_2", reason="not that site")
        plain_denial = client.deny("job_1", "call_3")
        with pytest.raises(ConflictError):
            client.approve("job_1", "call_done")
        with pytest.raises(NotFoundError):
            client.approve("job/2", "call_1")
    assert isinstance(approved, ApprovalResult) and approved.approve is True and approved.call_id == "call_1"
    assert denied.approve is False and plain_denial.status == "waiting"
    assert service.bodies()[:3] == [
        {"call_id": "call_1", "approve": True},
        {"call_id": "call_2", "approve": False, "reason": "not that site"},
        {"call_id": "call_3", "approve": False},
    ]
    assert service.requests[4].url.raw_path == b"/api/v1/jobs/job%2F2/approvals"  # ids are percent-encoded
    assert len(service.requests) == 5, "a 409 is final: not retried"


def test_async_approve_and_deny_send_the_same_requests() -> None:
    service = Service({("POST", "/api/v1/jobs/job_1/approvals"): decided})

    async def run() -> list[ApprovalResult]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(service))
        async with AsyncParley("http://parley.test", "k", http_client=http) as client:
            results = [await client.approve("job_1", "call_1", reason="fine"), await client.deny("job_1", "call_2")]
        await http.aclose()
        return results

    approved, denied = asyncio.run(run())
    assert (approved.approve, denied.approve) == (True, False)
    assert service.bodies() == [{"call_id": "call_1", "approve": True, "reason": "fine"},
                                {"call_id": "call_2", "approve": False}]  # fmt: skip


def test_a_waiting_job_lists_its_pending_calls_typed() -> None:
    service = Service({("GET", "/api/v1/jobs/job_1"): httpx.Response(200, json=JOB)})
    with service.client() as client:
        job = client.jobs.get("job_1")
    assert job.status == "waiting"
    assert job.pending == [PendingCall(call_id="call_1", tool_name="http_get", args={"url": "https://example.com"})]
    assert job.pending[0].kind == "approval"


def test_approval_required_events_expose_their_call() -> None:
    data = {"type": "approval_required", "call_id": "call_1", "tool_name": "mcp:github/search", "args": {"q": "x"}}
    event = Event(id="1-1", type=EventType.APPROVAL_REQUIRED, data=data)
    assert (event.call_id, event.tool_name, event.args) == ("call_1", "mcp:github/search", {"q": "x"})
    assert event.pending_call == PendingCall(call_id="call_1", tool_name="mcp:github/search", args={"q": "x"})
    result = Event(id="1-2", type="tool_result", data={"type": "tool_result", "call_id": "call_1",
                                                         "tool_name": "mcp:github/search", "ok": False})  # fmt: skip
    assert (result.call_id, result.tool_name, result.args, result.pending_call) == (
        "call_1", "mcp:github/search", None, None)  # fmt: skip
    delta = Event(id="1-3", type="delta", data={"type": "delta", "content": "hi", "call_id": "x", "tool_name": "y"})
    assert (delta.call_id, delta.tool_name, delta.args, delta.pending_call) == (None, None, None, None)
    broken = Event(id="1-4", type="approval_required", data={"type": "approval_required", "tool_name": "t"})
    assert broken.pending_call is None  # no call id: nothing to decide on


def test_mcp_servers_requests() -> None:
    service = Service({
        ("POST", "/api/v1/mcp-servers"): httpx.Response(201, json=SERVER),
        ("GET", "/api/v1/mcp-servers"): httpx.Response(200, json=[SERVER]),
        ("GET", "/api/v1/mcp-servers/github"): httpx.Response(200, json=SERVER),
        ("PATCH", "/api/v1/mcp-servers/github"): httpx.Response(200, json={**SERVER, "allowed_tools": None}),
        ("DELETE", "/api/v1/mcp-servers/github"): httpx.Response(204),
    })  # fmt: skip
    with service.client() as client:
        created = client.mcp_servers.create("github", "https://mcp.example.com/mcp", allowed_tools=["search"],
                                            headers={"Authorization": "Bearer s3cret"})  # fmt: skip
        listed = client.mcp_servers.list()
        one = client.mcp_servers.get("github")
        changed = client.mcp_servers.update("github", allowed_tools=None)
        client.mcp_servers.delete("github")
    assert isinstance(created, McpServer) and created.header_names == ["Authorization"]
    assert [t.name for t in created.tools] == ["search"] and created.tools[0].description == "Search code."
    assert [s.name for s in listed] == ["github"] and one.url == SERVER["url"] and changed.allowed_tools is None
    bodies = service.bodies()
    assert bodies[0] == {"name": "github", "url": "https://mcp.example.com/mcp",
                         "headers": {"Authorization": "Bearer s3cret"}, "allowed_tools": ["search"]}  # fmt: skip
    assert bodies[3] == {"allowed_tools": None}  # None is sent: every tool again
    assert [r.method for r in service.requests] == ["POST", "GET", "GET", "PATCH", "DELETE"]


def test_async_mcp_servers_send_the_same_requests() -> None:
    service = Service({
        ("POST", "/api/v1/mcp-servers"): httpx.Response(201, json=SERVER),
        ("GET", "/api/v1/mcp-servers"): httpx.Response(200, json=[SERVER]),
        ("DELETE", "/api/v1/mcp-servers/git%20hub"): httpx.Response(204),
    })  # fmt: skip

    async def run() -> list[McpServer]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(service))
        async with AsyncParley("http://parley.test", "k", http_client=http) as client:
            await client.mcp_servers.create("github", "https://mcp.example.com/mcp")
            servers = await client.mcp_servers.list()
            await client.mcp_servers.delete("git hub")
        await http.aclose()
        return servers

    assert [s.name for s in asyncio.run(run())] == ["github"]
    assert service.bodies()[0] == {"name": "github", "url": "https://mcp.example.com/mcp"}
    assert service.requests[2].url.raw_path == b"/api/v1/mcp-servers/git%20hub"
