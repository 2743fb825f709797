"""The SDK and approvals against the real stack (issue 14): an `approval_required` event typed, the waiting job's
`pending`, `client.approve` / `client.deny` (sync and async) resuming the turn, and the API's 404/409 as the SDK's
errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.client import AsyncParley, ConflictError, Event, EventType, NotFoundError, Parley, PendingCall

pytestmark = pytest.mark.integration

CALL = {"reply": "Let me work it out.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}


def _start(stack: Any) -> None:
    stack.start_web()
    stack.start_workers()


def _types(events: list[Event]) -> list[str]:
    return [e.type if e.type != "status" else f"status:{e.message}" for e in events]


def test_approve_from_the_stream_and_the_turn_goes_on(stack) -> None:  # type: ignore[no-untyped-def]
    _start(stack)
    stack.model_server.control("script", [CALL, {"reply": "It is 42."}])
    with Parley(stack.web_url, stack.api_key) as client:
        client.agents.create("Chef", tools=["calculator"], approval=["calc*"])
        stream = client.stream("What is six times seven?", agent="Chef")
        seen: list[Event] = []
        pending: PendingCall | None = None
        with stream:
            for event in stream:
                seen.append(event)
                job_id = stream.job_id
                assert job_id is not None
                if event.type == EventType.APPROVAL_REQUIRED:
                    pending = event.pending_call
                    assert pending == PendingCall(call_id=event.call_id, tool_name="calculator",
                                                  args={"expression": "6*7"})  # fmt: skip
                    assert client.jobs.get(job_id).status in ("started", "waiting")  # the pause is being written
                    with pytest.raises(NotFoundError):
                        client.approve(job_id, "call_unknown")
                if event.type == "status" and event.message == "waiting":
                    assert pending is not None
                    job = client.jobs.get(job_id)
                    assert job.status == "waiting" and job.pending == [pending]
                    result = client.approve(job_id, pending.call_id)
                    assert result.approve is True and result.call_id == pending.call_id
                    with pytest.raises(ConflictError):
                        client.deny(job_id, pending.call_id)
        types = _types(seen)
        assert types.index("approval_required") < types.index("status:waiting") < types.index("status:resumed")
        [result_event] = [e for e in seen if e.type == "tool_result"]
        assert pending is not None and result_event.call_id == pending.call_id and result_event.data["ok"] is True
        assert seen[-2].type == "response" and seen[-2].content == "It is 42." and seen[-1].type == "done"
        final = client.jobs.get(stream.job_id)  # type: ignore[arg-type]
        assert final.status == "finished" and not final.pending


def test_async_deny_with_a_reason_reaches_the_model(stack) -> None:  # type: ignore[no-untyped-def]
    _start(stack)
    stack.model_server.control("script", [CALL, {"reply": "Fine, no calculator."}])

    async def run() -> list[Event]:
        async with AsyncParley(stack.web_url, stack.api_key) as client:
            await client.agents.create("Chef", tools=["calculator"], approval=["*"])
            accepted = await client.chat_job("What is six times seven?", agent="Chef")
            events: list[Event] = []
            async with client.jobs.events(accepted.job_id) as stream:
                async for event in stream:
                    events.append(event)
                    if event.type == "status" and event.message == "waiting":
                        job = await client.jobs.get(accepted.job_id)
                        [pending] = job.pending or []
                        denied = await client.deny(accepted.job_id, pending.call_id, reason="do it in your head")
                        assert denied.approve is False
            assert (await client.jobs.get(accepted.job_id)).status == "finished"
            return events

    events = asyncio.run(run())
    [result] = [e for e in events if e.type == "tool_result"]
    assert result.data["ok"] is False and "do it in your head" in str(result.data.get("preview"))
    assert events[-2].content == "Fine, no calculator."
    told = [m for m in stack.model_server.control("requests")[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(told) == 1 and "denied" in told[0]["content"] and "do it in your head" in told[0]["content"]


def test_mcp_servers_through_the_sdk(stack, mcp_server) -> None:  # type: ignore[no-untyped-def]
    stack.start_web(env={"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"})
    with Parley(stack.web_url, stack.api_key) as client:
        created = client.mcp_servers.create("tools", f"{mcp_server.url}/mcp", headers={"X-Key": "s3cret"},
                                            allowed_tools=["echo"])  # fmt: skip
        assert created.header_names == ["X-Key"] and [t.name for t in created.tools] == ["echo"]
        assert "s3cret" not in created.model_dump_json()
        assert [s.name for s in client.mcp_servers.list()] == ["tools"]
        every = client.mcp_servers.update("tools", allowed_tools=None)
        assert every.allowed_tools is None and {"echo", "weather"} <= {t.name for t in every.tools}
        assert client.mcp_servers.get("tools").url == f"{mcp_server.url}/mcp"
        with pytest.raises(ConflictError):
            client.mcp_servers.create("tools", f"{mcp_server.url}/mcp")
        client.mcp_servers.delete("tools")
        with pytest.raises(NotFoundError):
            client.mcp_servers.get("tools")
