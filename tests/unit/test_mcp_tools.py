"""A turn's MCP tools (parley.worker.mcp): model names, which tools an agent gets, what a call gives the model,
and that a server's failure is an `ok=False` result, never an exception."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any

import fakeredis
import pytest
from mcp_types import CallToolResult, ImageContent, TextContent

from parley.shared.sealing import PLAIN
from parley.shared.settings import Settings
from parley.shared.store.connection import RedisClients
from parley.shared.store.mcp_servers import McpServer, McpServerStore
from parley.tools import ToolContext, mcp_client
from parley.tools.registry import MAX_RESULT_CHARS
from parley.worker.mcp import load_remote_tools, model_name, to_result

PNG_1X1 = base64.b64encode(base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)).decode()  # fmt: skip
VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@pytest.mark.parametrize(
    ("server", "tool", "expected"),
    [("github", "create_issue", "mcp__github__create_issue"), ("fs", "read-file", "mcp__fs__read-file")],
)
def test_model_names_are_readable_where_they_can_be(server: str, tool: str, expected: str) -> None:
    assert model_name(server, tool) == expected


def test_model_names_are_valid_unique_and_stable_for_any_names() -> None:
    pairs = [("a", "b__c"), ("a__b", "c"), ("gh", "v1.search"), ("gh", "v1_search"), ("x" * 64, "y" * 128),
             ("x" * 64, "y" * 127 + "z"), ("s", "t")]  # fmt: skip
    names = [model_name(server, tool) for server, tool in pairs]
    assert all(VALID.fullmatch(name) for name in names), names
    assert len(set(names)) == len(names)
    assert names == [model_name(server, tool) for server, tool in pairs]


def test_text_parts_are_joined_and_an_error_is_not_ok() -> None:
    result = to_result(CallToolResult(content=[TextContent(type="text", text="one"),
                                               TextContent(type="text", text="two")]), 1000)  # fmt: skip
    assert (result.ok, result.content, result.images) == (True, "one\ntwo", ())
    failed = to_result(CallToolResult(content=[TextContent(type="text", text="no such city")], is_error=True), 1000)
    assert (failed.ok, failed.content) == (False, "error: no such city")


def test_structured_content_reaches_the_model_once() -> None:
    forecast = {"city": "Oslo", "celsius": 21.5}
    alone = to_result(CallToolResult(content=[], structured_content=forecast), 1000)
    assert alone.ok and json.loads(alone.content) == forecast
    beside_its_text = to_result(CallToolResult(content=[TextContent(type="text", text=json.dumps(forecast))],
                                               structured_content=forecast), 1000)  # fmt: skip
    assert json.loads(beside_its_text.content) == forecast  # not said twice
    wrapped = to_result(CallToolResult(content=[TextContent(type="text", text="hi")],
                                       structured_content={"result": "hi"}), 1000)  # fmt: skip
    assert wrapped.content == "hi"
    other = to_result(CallToolResult(content=[TextContent(type="text", text="see data")],
                                     structured_content=forecast), 1000)  # fmt: skip
    assert other.content.splitlines()[0] == "see data" and json.loads(other.content.splitlines()[1]) == forecast


def test_images_become_data_uris_and_bad_ones_are_named_instead() -> None:
    result = to_result(CallToolResult(content=[
        ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
        ImageContent(type="image", data=base64.b64encode(b"not a png").decode(), mime_type="image/png"),
        ImageContent(type="image", data=PNG_1X1, mime_type="image/svg+xml"),
    ]), 1000)  # fmt: skip
    assert result.ok and result.images == (f"data:image/png;base64,{PNG_1X1}",)
    alone = to_result(CallToolResult(content=[ImageContent(type="image", data=PNG_1X1, mime_type="image/png")]), 1000)
    assert alone.content == "(the tool returned 1 image(s): they follow)" and len(alone.images) == 1
    assert "is not a PNG image" in result.content and "image/svg+xml" in result.content
    too_big = to_result(CallToolResult(content=[ImageContent(type="image", data=PNG_1X1, mime_type="image/png")]), 10)
    assert too_big.images == () and "larger than 10 bytes" in too_big.content


def test_a_long_result_is_cut() -> None:
    result = to_result(CallToolResult(content=[TextContent(type="text", text="x" * 50_000)]), 1000)
    assert len(result.content) == MAX_RESULT_CHARS and "cut:" in result.content


class Wire:
    """Stands in for the servers: tool lists by URL, and the calls made."""

    def __init__(self) -> None:
        self.lists: dict[str, list[dict[str, Any]] | str] = {}
        self.calls: list[tuple[str, str, dict[str, Any], str | None, dict[str, str]]] = []
        self.answer: CallToolResult | Exception = CallToolResult(content=[TextContent(type="text", text="done")])

    async def list_tools(self, endpoint: mcp_client.Endpoint, bounds: mcp_client.Bounds) -> mcp_client.Listing:
        tools = self.lists[endpoint.url]
        if isinstance(tools, str):
            raise mcp_client.McpFailure(tools)
        return mcp_client.Listing(tools=tools, revision="2025-11-25")

    async def call_tool(self, endpoint: mcp_client.Endpoint, bounds: mcp_client.Bounds, name: str,
                        arguments: dict[str, Any], revision: str | None = None) -> CallToolResult:  # fmt: skip
        self.calls.append((endpoint.url, name, arguments, revision, dict(endpoint.headers)))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": f"does {name}", "inputSchema": {"type": "object", "properties": {}}}


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    fake = Wire()
    monkeypatch.setattr(mcp_client, "list_tools", fake.list_tools)
    monkeypatch.setattr(mcp_client, "call_tool", fake.call_tool)
    return fake


@pytest.fixture
def aio(server: fakeredis.FakeServer) -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis(server=server, decode_responses=True)


def register(clients: RedisClients, name: str, url: str, **fields: Any) -> None:
    McpServerStore(clients.text, max_servers=20, sealer=PLAIN).create("alice", McpServer(name=name, url=url, **fields))


def test_no_mcp_names_no_remote_tools(aio: Any, settings: Settings) -> None:
    assert asyncio.run(load_remote_tools(aio, settings, "alice", [])) is None


def test_an_agent_gets_the_tools_it_names_that_allowed_tools_let_through(
        wire: Wire, aio: Any, clients: RedisClients, settings: Settings) -> None:  # fmt: skip
    wire.lists = {"https://gh/mcp": [tool("search"), tool("create_issue"), tool("delete_repo")],
                  "https://fs/mcp": [tool("read"), tool("write")], "https://down/mcp": "connection refused"}
    register(clients, "gh", "https://gh/mcp", allowed_tools=["search", "create_issue"])
    register(clients, "fs", "https://fs/mcp")
    register(clients, "down", "https://down/mcp")
    names = ["mcp:gh/*", "mcp:fs/read", "mcp:fs/gone", "mcp:gh/delete_repo", "mcp:down/x", "mcp:nowhere/y"]
    tools = asyncio.run(load_remote_tools(aio, settings, "alice", names))
    assert tools is not None
    offered = [spec["function"]["name"] for spec in tools.specs]
    assert offered == ["mcp__fs__read", "mcp__gh__create_issue", "mcp__gh__search"]  # by server, then tool
    assert tools.specs[0]["function"]["description"] == "[MCP server fs] does read"
    assert tools.specs[0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert tools.shown_name("mcp__gh__search") == "mcp:gh/search"
    assert tools.shown_name("calculator") is None
    ctx = ToolContext(tenant="alice", session_id="s", job_id="j", redis=clients.text, settings=settings)
    why = {name: asyncio.run(tools.run(model_name(*name.removeprefix("mcp:").split("/")), "{}", ctx)).content
           for name in ["mcp:fs/gone", "mcp:gh/delete_repo", "mcp:down/x", "mcp:nowhere/y"]}  # fmt: skip
    assert why == {
        "mcp:fs/gone": "error: mcp:fs/gone cannot be called: its server does not offer it",
        "mcp:gh/delete_repo": "error: mcp:gh/delete_repo cannot be called: its server's allowed_tools leave it out",
        "mcp:down/x": "error: mcp:down/x cannot be called: its server's tools could not be listed: connection refused",
        "mcp:nowhere/y": "error: mcp:nowhere/y cannot be called: no MCP server named 'nowhere' is registered",
    }
    assert wire.calls == []


def test_a_call_goes_to_its_server_with_its_headers_and_revision(
        wire: Wire, aio: Any, clients: RedisClients, settings: Settings) -> None:  # fmt: skip
    wire.lists = {"https://gh/mcp": [tool("search")]}
    register(clients, "gh", "https://gh/mcp", headers={"Authorization": "Bearer k"})
    tools = asyncio.run(load_remote_tools(aio, settings, "alice", ["mcp:gh/search"]))
    assert tools is not None
    ctx = ToolContext(tenant="alice", session_id="s", job_id="j", redis=clients.text, settings=settings)
    result = asyncio.run(tools.run("mcp__gh__search", '{"q": "bug"}', ctx))
    assert (result.ok, result.content) == (True, "done")
    assert wire.calls == [("https://gh/mcp", "search", {"q": "bug"}, "2025-11-25", {"Authorization": "Bearer k"})]


@pytest.mark.parametrize(
    ("arguments", "answer", "content"),
    [
        ("{not json", None, "error: the arguments are not valid JSON"),
        ("[1, 2]", None, "error: the arguments must be a JSON object"),
        ("{}", mcp_client.McpFailure("the MCP server at x did not answer within 1 s"),
         "error: the MCP server at x did not answer within 1 s"),
        ("{}", RuntimeError("the SDK choked"), "error: the MCP server failed: RuntimeError: the SDK choked"),
    ],
)  # fmt: skip
def test_a_failing_call_is_a_failed_result_never_an_exception(
        wire: Wire, aio: Any, clients: RedisClients, settings: Settings, arguments: str,
        answer: Exception | None, content: str) -> None:  # fmt: skip
    wire.lists = {"https://gh/mcp": [tool("search")]}
    register(clients, "gh", "https://gh/mcp")
    if answer is not None:
        wire.answer = answer
    tools = asyncio.run(load_remote_tools(aio, settings, "alice", ["mcp:gh/*"]))
    assert tools is not None
    ctx = ToolContext(tenant="alice", session_id="s", job_id="j", redis=clients.text, settings=settings)
    result = asyncio.run(tools.run("mcp__gh__search", arguments, ctx))
    assert not result.ok and result.content.startswith(content), result.content


def test_agents_may_name_well_formed_mcp_tools_only() -> None:
    from parley.tools.loading import unknown_tools

    named = ["calculator", "mcp:gh/*", "mcp:gh/create_issue", "mcp:g-h_1/v1.search", "mcp:later/anything"]
    malformed = ["mcp:gh/", "mcp:/x", "mcp:a b/x", "mcp:gh/a/b", "mcp:gh/*x", "mcp:gh", "mcp:" + "x" * 65 + "/t",
                 "mcp:gh/" + "t" * 129, "nosuch"]  # fmt: skip
    assert unknown_tools(named + malformed) == malformed
