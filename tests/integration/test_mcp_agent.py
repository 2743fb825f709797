"""An agent calls the tools of a real MCP server (tests/mcp_server.py) over HTTP, end to end: real Redis, web,
worker and the scripted model server. Both revisions (a 2026-07-28-only and a 2025-11-25-only server); text,
structured and image results reach the model; a failing, hanging or unreachable server gives the model
`ok: false` and the turn still answers."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from parley.shared.store import keys
from tests.integration.helpers import client, create_agent, model_requests
from tests.mcp_server import PNG_1X1
from tests.sse_client import collect

LOOPBACK_ALLOWED = {"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"}


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _register(http: Any, name: str, url: str) -> None:
    response = http.post("/api/v1/mcp-servers", json={"name": name, "url": url})
    assert response.status_code == 201, response.text


def _tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [message for message in body["messages"] if message["role"] == "tool"]


@pytest.mark.parametrize("revision", ["modern", "legacy"])
def test_an_agent_calls_mcp_tools_and_their_results_reach_the_model(stack: Any, mcp_server: Any,
                                                                    revision: str) -> None:  # fmt: skip
    stack.env.update(LOOPBACK_ALLOWED)
    stack.start_web()
    stack.start_workers()
    _script(
        stack,
        {"tool_calls": [{"name": "mcp__srv__echo", "arguments": {"text": "héllo"}},
                        {"name": "mcp__srv__weather", "arguments": {"city": "Oslo"}},
                        {"name": "mcp__srv__image", "arguments": {}}]},
        {"reply": "Clear in Oslo."},
    )  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        _register(http, "srv", f"{mcp_server.url}/{revision}/mcp")
        create_agent(http, response_shape=None, tools=["mcp:srv/echo", "mcp:srv/weather", "mcp:srv/image"])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "weather?", "session_id": "w"})
    by_type = {kind: [e.data for e in events if e.type == kind] for kind in ("tool_execution", "tool_result")}
    assert [(d["tool_name"], d["args"]) for d in by_type["tool_execution"]] == [
        ("mcp:srv/echo", {"text": "héllo"}), ("mcp:srv/weather", {"city": "Oslo"}), ("mcp:srv/image", {}),
    ]  # fmt: skip
    assert [(d["tool_name"], d["ok"]) for d in by_type["tool_result"]] == [
        ("mcp:srv/echo", True), ("mcp:srv/weather", True), ("mcp:srv/image", True)]  # fmt: skip
    assert events[-2].data["content"] == "Clear in Oslo." and events[-1].type == "done"

    first, second = (request["body"] for request in model_requests(stack)[-2:])
    assert sorted(tool["function"]["name"] for tool in first["tools"]) == [
        "mcp__srv__echo", "mcp__srv__image", "mcp__srv__weather"]  # fmt: skip
    weather = next(t for t in first["tools"] if t["function"]["name"] == "mcp__srv__weather")["function"]
    assert weather["parameters"]["properties"]["city"]["type"] == "string"
    echo, forecast, image = (message["content"] for message in _tool_messages(second))
    assert echo == "héllo"
    assert json.loads(forecast) == {"city": "Oslo", "celsius": 21.5, "sky": "clear"}
    sent_images = [part["image_url"]["url"] for message in second["messages"] if isinstance(message["content"], list)
                   for part in message["content"] if part.get("type") == "image_url"]  # fmt: skip
    assert sent_images == ["data:image/png;base64," + base64.b64encode(PNG_1X1).decode()]
    assert image == "(the tool returned 1 image(s): they follow)"


def test_failing_hanging_and_unreachable_servers_give_the_model_failed_results(stack: Any, mcp_server: Any) -> None:
    stack.env.update({**LOOPBACK_ALLOWED, "PARLEY_MCP_TIMEOUT_S": "1"})
    stack.start_web()
    stack.start_workers()
    _script(
        stack,
        {"tool_calls": [{"name": "mcp__srv__fail", "arguments": {"reason": "no such city"}},
                        {"name": "mcp__srv__hang", "arguments": {"seconds": 60}},
                        {"name": "mcp__down__echo", "arguments": {"text": "x"}},
                        {"name": "mcp__srv__large", "arguments": {"size": 3_000_000}}]},
        {"reply": "The tools failed; sorry."},
    )  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        _register(http, "srv", f"{mcp_server.url}/mcp")
        # A server that answered once and is gone now: its record, written as the API would.
        stack.redis().hset(keys.mcp_servers("alice"), "down", json.dumps(
            {"url": "http://127.0.0.1:9/mcp", "headers": {}, "allowed_tools": None, "created_at": 1}))
        create_agent(http, response_shape=None, tools=["mcp:srv/*", "mcp:down/echo"])
        started = time.monotonic()
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "try", "session_id": "f"})
        took = time.monotonic() - started
    results = {e.data["tool_name"]: e.data for e in events if e.type == "tool_result"}
    assert sorted(results) == ["mcp:down/echo", "mcp:srv/fail", "mcp:srv/hang", "mcp:srv/large"]
    assert not any(result["ok"] for result in results.values())
    assert events[-2].type == "response" and events[-2].data["content"] == "The tools failed; sorry."
    assert took < 20, took  # the hang ended at PARLEY_MCP_TIMEOUT_S, not at its 60 s

    said = {m["tool_call_id"]: m["content"] for m in _tool_messages(model_requests(stack)[-1]["body"])}
    calls = {e.data["call_id"]: e.data["tool_name"] for e in events if e.type == "tool_execution"}
    by_name = {calls[call_id]: content for call_id, content in said.items() if call_id in calls}
    assert by_name["mcp:srv/fail"] == "error: Error executing tool fail: no such city"
    assert by_name["mcp:srv/hang"].startswith("error: the MCP server at ") and "within 1 s" in by_name["mcp:srv/hang"]
    assert by_name["mcp:down/echo"].startswith("error: mcp:down/echo cannot be called: its server's tools could "
                                               "not be listed")  # fmt: skip
    assert by_name["mcp:srv/large"] == "error: the server's answer is larger than 1000000 bytes"
