"""Parley as an MCP server (`/mcp`), driven by the official `mcp` client in both revisions (2025-11-25 with its
`initialize`, and the stateless 2026-07-28) against the real stack: Redis, two web processes taken in turn by
every HTTP request (a load balancer with no affinity), a worker and the scripted model."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.integration.helpers import client, create_agent, model_requests, user_contents, wait_job

REVISIONS = [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")]
SHAPE = {"type": "object", "properties": {"dish": {"type": "string"}, "minutes": {"type": "integer"}},
         "required": ["dish", "minutes"]}  # fmt: skip


def _text(result: types.CallToolResult) -> str:
    """The result's one text content."""
    [content] = result.content
    assert isinstance(content, types.TextContent), content
    return content.text


def _meta(result: types.CallToolResult) -> dict[str, Any]:
    """What the result's `_meta` says of the turn."""
    assert result.meta is not None
    return result.meta["parley"]  # type: ignore[no-any-return]


class RoundRobin(httpx2.AsyncBaseTransport):
    """Each HTTP request to the next web process in turn, as a load balancer without affinity would send it."""

    def __init__(self, urls: list[str]) -> None:
        self.ports = itertools.cycle([httpx2.URL(url).port for url in urls])
        self.inner = httpx2.AsyncHTTPTransport()
        self.seen: list[int | None] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=next(self.ports))
        self.seen.append(request.url.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _run(stack: Any, mode: str, calls: Callable[[Client], Awaitable[Any]], key: str | None = "key-alice") -> Any:
    """Connect with the official client (Bearer `key`) through the round robin, run `calls`."""
    balancer = RoundRobin(stack.web_urls)

    async def session() -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx2.AsyncClient(transport=balancer, headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
            async with Client(streamable_http_client(f"{stack.web_urls[0]}/mcp", http_client=http), mode=mode,
                              cache=None) as mcp:  # fmt: skip
                return mcp.protocol_version, await calls(mcp)

    result = asyncio.run(session())
    assert len(set(balancer.seen)) == len(stack.web_urls), "the requests did not reach every web process"
    return result


def _jobs(stack: Any, tenant: str = "alice") -> list[dict[str, str]]:
    r = stack.redis()
    return [r.hgetall(key) for key in r.scan_iter(f"parley:job:{tenant}:*")]


async def _wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `check` without blocking the loop: the client's own tasks (a cancel to send) run meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("mode, revision", REVISIONS)
def test_tools_are_the_keys_agents_and_a_call_is_a_turn_with_memory(stack: Any, mode: str, revision: str) -> None:
    stack.start_web(2)
    stack.start_workers(1)
    with client(stack.web_url, "key-alice") as http:
        chef = create_agent(http, description="Cooks.")
        spaced = create_agent(http, name="Wine Expert")
    with client(stack.web_url, "key-bob") as http:
        create_agent(http, name="BobsAgent")

    async def calls(mcp: Client) -> dict[str, Any]:
        listed = (await mcp.list_tools()).tools
        first = await mcp.call_tool("Chef", {"message": "a soup?"})
        session_id = _meta(first)["session_id"]
        second = await mcp.call_tool("Chef", {"message": "and bread?", "session_id": session_id})
        other = await mcp.call_tool(spaced["id"], {"message": "red or white?"})
        return {"listed": listed, "first": first, "second": second, "other": other}

    version, got = _run(stack, mode, calls)
    assert version == revision
    assert [tool.name for tool in got["listed"]] == ["Chef", spaced["id"]]  # not bob's; an id for a spaced name
    tool = got["listed"][0]
    assert tool.description == "Cooks." and tool.input_schema["required"] == ["message"]
    assert set(tool.input_schema["properties"]) == {"message", "session_id"} and tool.output_schema is None
    first, second = got["first"], got["second"]
    assert not first.is_error and _text(first) == "echo: a soup?"
    assert _meta(first)["agent_id"] == chef["id"] and _meta(first)["job_id"].startswith("job_")
    assert _text(second) == "echo: and bread? | earlier: a soup?"
    assert _meta(second)["session_id"] == _meta(first)["session_id"]
    assert _meta(got["other"])["session_id"] != _meta(first)["session_id"]  # no id: a new session
    with client(stack.web_url, "key-alice") as http:
        stored = http.get(f"/api/v1/sessions/{_meta(first)['session_id']}/messages").json()["data"]
    assert [m["content"] for m in stored if m["role"] == "user"] == ["a soup?", "and bread?"]


@pytest.mark.parametrize("mode, revision", REVISIONS)
def test_a_structured_answer_is_structured_content_with_an_output_schema(stack: Any, mode: str,
                                                                         revision: str) -> None:  # fmt: skip
    stack.start_web(2)
    stack.start_workers(1)
    stack.model_server.control("script", [{"reply": '{"dish": "pasta", "minutes": 12}'}])
    with client(stack.web_url, "key-alice") as http:
        create_agent(http, name="Planner", response_shape=SHAPE)

    async def calls(mcp: Client) -> Any:
        return (await mcp.list_tools()).tools[0], await mcp.call_tool("Planner", {"message": "dinner?"})

    _, (tool, result) = _run(stack, mode, calls)
    assert tool.output_schema == SHAPE
    assert not result.is_error and result.structured_content == {"dish": "pasta", "minutes": 12}
    assert '"pasta"' in _text(result)


@pytest.mark.parametrize("mode, revision", REVISIONS)
def test_unknown_tools_bad_arguments_and_turn_errors(stack: Any, mode: str, revision: str) -> None:
    stack.start_web(2)
    stack.start_workers(1)
    with client(stack.web_url, "key-alice") as http:
        create_agent(http)
        create_agent(http, name="Other")
        http.post("/api/v1/chat", json={"message": "hi", "agent": "Other", "session_id": "others"})
    with client(stack.web_url, "key-bob") as http:
        create_agent(http, name="BobsAgent")

    async def calls(mcp: Client) -> dict[str, Any]:
        got: dict[str, Any] = {}
        for name in ("Nobody", "BobsAgent"):
            with pytest.raises(MCPError) as raised:
                await mcp.call_tool(name, {"message": "hi"})
            got[name] = raised.value
        got["missing"] = await mcp.call_tool("Chef", {})
        got["blank"] = await mcp.call_tool("Chef", {"message": "   "})
        got["extra"] = await mcp.call_tool("Chef", {"message": "hi", "agent": "Other"})
        got["bad_session"] = await mcp.call_tool("Chef", {"message": "hi", "session_id": "no spaces allowed"})
        got["other_agents_session"] = await mcp.call_tool("Chef", {"message": "hi", "session_id": "others"})
        return got

    _, got = _run(stack, mode, calls)
    for name in ("Nobody", "BobsAgent"):
        assert got[name].code == -32602 and name in got[name].error.message
    for case in ("missing", "blank", "extra", "bad_session"):
        assert got[case].is_error and _text(got[case]).startswith("invalid arguments:"), case
    assert got["other_agents_session"].is_error and "another agent" in _text(got["other_agents_session"])
    assert _meta(got["other_agents_session"])["code"] == "conflict"
    with client(stack.web_url, "key-alice") as http:  # nothing refused was stored or queued
        assert http.get("/api/v1/sessions").json()["data"][0]["session_id"] == "others"
    assert len(_jobs(stack)) == 1


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_without_a_key_401(stack: Any, mode: str) -> None:
    stack.start_web(1)
    bare = httpx.post(f"{stack.web_url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                      headers={"Accept": "application/json, text/event-stream"})  # fmt: skip
    assert bare.status_code == 401 and bare.headers["WWW-Authenticate"].startswith("Bearer")
    assert bare.json()["error"]["code"] == "unauthorized"
    for method in ("GET", "DELETE"):  # no server-initiated stream, no session to end: 405, as both revisions allow
        refused = httpx.request(
            method, f"{stack.web_url}/mcp", headers={**stack.headers(), "Accept": "text/event-stream"}
        )
        assert refused.status_code == 405 and refused.headers["Allow"] == "POST"

    async def calls(mcp: Client) -> Any:
        return await mcp.list_tools()

    with pytest.raises(Exception):  # noqa: B017 - the client's own error for a 401 differs per revision
        asyncio.run(_unbalanced(stack, mode, calls, "wrong-key"))


async def _unbalanced(stack: Any, mode: str, calls: Callable[[Client], Awaitable[Any]], key: str) -> Any:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        async with Client(streamable_http_client(f"{stack.web_url}/mcp", http_client=http), mode=mode) as mcp:
            return await calls(mcp)


@pytest.mark.parametrize("mode, revision", REVISIONS)
def test_an_abandoned_call_cancels_its_turn(stack: Any, mode: str, revision: str) -> None:
    stack.start_web(2)
    stack.start_workers(1)
    stack.model_server.control("script", [{"hang": True}])
    with client(stack.web_url, "key-alice") as http:
        create_agent(http)

    async def calls(mcp: Client) -> str:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                await mcp.call_tool("Chef", {"message": "take your time"})
        await _wait_until(lambda: any(job.get("status") == "canceled" for job in _jobs(stack)))
        return _text(await mcp.call_tool("Chef", {"message": "still there?"}))

    _, answer = _run(stack, mode, calls)
    assert answer == "echo: still there?"
    assert sorted(job["status"] for job in _jobs(stack)) == ["canceled", "finished"]
    assert user_contents(model_requests(stack)[-1]["body"]) == ["still there?"]


@pytest.mark.parametrize("mode, revision", REVISIONS)
def test_a_turn_that_waits_for_approval_says_so_and_goes_on_once_approved(stack: Any, mode: str,
                                                                          revision: str) -> None:  # fmt: skip
    stack.env.update({"PARLEY_TOOL_MODULES": "tests.fixture_tools"})
    stack.start_web(2)
    stack.start_workers(1)
    bump = {"reply": "I will bump it.", "tool_calls": [{"name": "bump", "arguments": {}}]}
    stack.model_server.control("script", [bump, {"reply": "Done bumping."}])
    with client(stack.web_url, "key-alice") as http:
        create_agent(http, tools=["bump"], approval=["bump"])

    async def calls(mcp: Client) -> types.CallToolResult:
        return await mcp.call_tool("Chef", {"message": "bump it"})

    _, waiting = _run(stack, mode, calls)
    meta = _meta(waiting)
    assert not waiting.is_error and meta["status"] == "waiting" and "approval" in _text(waiting)
    [pending] = meta["pending"]
    assert pending["tool_name"] == "bump" and pending["args"] == {}
    with client(stack.web_url, "key-alice") as http:
        decided = http.post(f"/api/v1/jobs/{meta['job_id']}/approvals", json={"call_id": pending["call_id"],
                                                                              "approve": True})  # fmt: skip
        assert decided.status_code == 202, decided.text
        assert wait_job(http, meta["job_id"])["result"]["response"] == "Done bumping."


@pytest.mark.parametrize("mode, revision", REVISIONS)
def test_progress_follows_the_answer_as_it_streams(stack: Any, mode: str, revision: str) -> None:
    stack.start_web(2)
    stack.start_workers(1)
    stack.model_server.control("script", [{"reply": "one two three four", "chunks": 4, "chunk_delay_ms": 50}])
    with client(stack.web_url, "key-alice") as http:
        create_agent(http)
    seen: list[tuple[float, str | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async def calls(mcp: Client) -> types.CallToolResult:
        return await mcp.call_tool("Chef", {"message": "count"}, progress_callback=progress)

    _, result = _run(stack, mode, calls)
    assert _text(result) == "one two three four"
    assert "".join(message or "" for _, message in seen) == "one two three four"
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # increasing, as MCP wants


HOSTILE = [
    b"",
    b"not json",
    b"[]",
    b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]',
    b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "Chef"}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": ["Chef"], "arguments": 3}}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "no/such/method"}',
    b"[" * 100_000,
    b'{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": ' + b"9" * 5000 + b"}}",
]
"""Bodies that are no call Parley can serve: each gets an error, Parley's JSON or JSON-RPC's, never a 5xx."""
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
SURROGATE = {"name": "Chef", "arguments": {"message": "\ud800 lone"}}
"""A call whose message holds a lone surrogate (JSON allows the escape): a turn like any other."""


def _rpc(answer: httpx.Response) -> dict[str, Any]:
    """The JSON body, or the JSON-RPC message of an SSE answer's last `data:` line."""
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in answer.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])  # type: ignore[no-any-return]
    return answer.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", [None, b"2025-11-25", b"2026-07-28", b"1999-01-01", b"garbage\xe9"])
def test_hostile_requests_get_a_json_error_never_a_5xx(stack: Any, version: bytes | None) -> None:
    stack.start_web(1)
    stack.start_workers(1)
    headers = {b"Accept": b"application/json, text/event-stream", b"Content-Type": b"application/json"}
    if version is not None:
        headers[b"MCP-Protocol-Version"] = version
    with client(stack.web_url, "key-alice") as http:
        create_agent(http)
        for body in HOSTILE:
            answer = http.post("/mcp", content=body, headers=headers)
            assert answer.status_code < 500 and "error" in _rpc(answer), (body[:60], answer.status_code, answer.text)
        params = SURROGATE
        if version == b"2026-07-28":  # what the revision wants of a request: an envelope and routing headers
            params = {**SURROGATE, "_meta": ENVELOPE}
            headers.update({b"Mcp-Method": b"tools/call", b"Mcp-Name": b"Chef"})
        call = http.post("/mcp", headers=headers, content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                                    "params": params}))  # fmt: skip
        assert call.status_code < 500
        if version in (None, b"2025-11-25", b"2026-07-28"):
            result = _rpc(call)
            assert "result" in result, result
            assert not result["result"].get("isError") and result["result"]["content"][0]["text"].startswith("echo: ")
        else:
            assert "error" in _rpc(call)
        assert http.get("/readyz").status_code == 200


def test_a_tenant_past_its_budget_gets_a_tool_error_saying_so(stack: Any) -> None:
    budgets = {"PARLEY_TENANT_BUDGETS": "alice:0,*:100000"}  # alice's day is spent before it starts
    stack.start_web(2, env=budgets)
    stack.start_workers(1, env=budgets)
    with client(stack.web_url, "key-alice") as http:
        create_agent(http)

    async def calls(mcp: Client) -> types.CallToolResult:
        return await mcp.call_tool("Chef", {"message": "a soup?"})

    _, refused = _run(stack, "legacy", calls)
    assert refused.is_error and "spent" in _text(refused)
    assert _meta(refused)["code"] == "budget_exceeded" and int(_meta(refused)["retry_after_s"]) > 0
    assert _jobs(stack) == [] and model_requests(stack) == []
