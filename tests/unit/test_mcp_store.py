"""A tenant's MCP servers in Redis (parley.shared.store.mcp_servers): the record, its limits, header values
never shown, and the tool-list cache (kept for its TTL, not used for another URL or headers, failures kept
briefly)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from parley.shared.errors import Conflict, NotFound, TooManyMcpServers
from parley.shared.sealing import PLAIN
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store import mcp_servers as store
from parley.shared.store.connection import RedisClients
from parley.shared.store.mcp_servers import McpServer, McpServerStore
from parley.tools import mcp_client

SECRET = "Bearer very-secret-value"


def gh(**change: Any) -> McpServer:
    fields: dict[str, Any] = {"name": "github", "url": "https://mcp.example.com/mcp",
                              "headers": {"Authorization": SECRET}, "allowed_tools": None}  # fmt: skip
    return McpServer(**{**fields, **change})


def test_create_list_get_update_delete(clients: RedisClients, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1_000, 2_000))  # two creates may fall in one millisecond; "oldest first" needs two
    monkeypatch.setattr(store, "now_ms", lambda: next(clock))
    servers = McpServerStore(clients.text, max_servers=5, sealer=PLAIN)
    created = servers.create("alice", gh())
    servers.create("alice", gh(name="fs", url="http://fs.example/mcp", headers={}))
    assert created.created_at > 0
    assert [s.name for s in servers.list("alice")] == ["github", "fs"]
    assert servers.list("bob") == [] and servers.find("bob", "github") is None  # per tenant
    assert servers.get("alice", "github").headers == {"Authorization": SECRET}
    servers.update("alice", gh(allowed_tools=["search"], created_at=created.created_at))
    assert servers.get("alice", "github").allowed_tools == ["search"]
    servers.delete("alice", "github")
    with pytest.raises(NotFound):
        servers.get("alice", "github")
    with pytest.raises(NotFound):
        servers.delete("alice", "github")
    with pytest.raises(NotFound):
        servers.update("alice", gh())
    with pytest.raises(NotFound):
        servers.get("alice", "bad name/../x")


def test_a_duplicate_name_and_one_server_too_many_are_conflicts(clients: RedisClients) -> None:
    servers = McpServerStore(clients.text, max_servers=2, sealer=PLAIN)
    servers.create("alice", gh())
    with pytest.raises(Conflict, match="already exists"):
        servers.create("alice", gh(url="https://other.example/mcp"))
    servers.create("alice", gh(name="two"))
    with pytest.raises(TooManyMcpServers) as caught:
        servers.create("alice", gh(name="three"))
    assert caught.value.status == 409 and caught.value.code == "too_many_mcp_servers"
    servers.create("bob", gh(name="three"))  # another tenant's limit is its own
    assert [s.name for s in servers.list("alice")] == ["github", "two"]


def test_header_values_are_never_shown(clients: RedisClients) -> None:
    server = McpServerStore(clients.text, max_servers=5, sealer=PLAIN).create("alice", gh())
    assert server.public() == {"name": "github", "url": "https://mcp.example.com/mcp",
                               "header_names": ["Authorization"], "allowed_tools": None}  # fmt: skip
    assert SECRET not in repr(server) and SECRET not in json.dumps(server.public())


def test_the_worker_reads_servers_through_async_redis(clients: RedisClients, server: fakeredis.FakeServer) -> None:
    McpServerStore(clients.text, max_servers=5, sealer=PLAIN).create("alice", gh())
    clients.text.hset(keys.mcp_servers("alice"), "broken", "{not json")
    aio = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    found = asyncio.run(store.read_servers(aio, "alice", ["github", "broken", "missing", "bad/name"], PLAIN))
    assert list(found) == ["github"] and found["github"].headers == {"Authorization": SECRET}


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (store.check_name, "has space"), (store.check_name, "x" * 65), (store.check_name, ""),
        (store.check_url, "ftp://example.com/"), (store.check_url, "file:///etc/passwd"),
        (store.check_url, "https://user:pw@example.com/mcp"), (store.check_url, "example.com/mcp"),
        (store.check_url, "https://example.com/" + "a" * 3000), (store.check_url, "http://[::1/"),
        (store.check_headers, {"Host": "evil"}), (store.check_headers, {"Mcp-Session-Id": "x"}),
        (store.check_headers, {"X-Key": "a\r\nInjected: 1"}), (store.check_headers, {"Bad Name": "x"}),
        (store.check_headers, {"X-Key": "a", "x-key": "b"}), (store.check_headers, {"X-Key": "\ud800"}),
        (store.check_headers, {"X-Key": "caf\u00e9"}), (store.check_headers, {"X-Key": "a\x7fb"}),
        (store.check_allowed_tools, ["ok", "not ok"]),
    ],
)  # fmt: skip
def test_what_a_registration_may_not_hold(check: Callable[[Any], Any], value: Any) -> None:
    with pytest.raises(ValueError):
        check(value)


def test_offered_keeps_valid_names_once_with_clean_text_and_an_object_schema() -> None:
    raw: list[dict[str, Any]] = [
           {"name": "ok", "description": "fine \ud800", "inputSchema": {"type": "object", "properties": {}}},
           {"name": "ok", "description": "a second one of the same name"},
           {"name": "bad name"}, {"name": 7}, {"description": "no name"},
           {"name": "weird_schema", "description": "x" * 5000, "inputSchema": {"type": "array"}}]  # fmt: skip
    assert store.offered(raw) == [
        {"name": "ok", "description": "fine \ufffd", "parameters": {"type": "object", "properties": {}}},
        {"name": "weird_schema", "description": "x" * store.MAX_DESCRIPTION_CHARS,
         "parameters": {"type": "object", "properties": {}}},
    ]  # fmt: skip


class FakeLister:
    """Stands in for the wire: counts `tools/list` calls, answers with `tools` or fails."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: str | None = None

    async def __call__(self, endpoint: mcp_client.Endpoint, bounds: mcp_client.Bounds) -> mcp_client.Listing:
        self.calls.append(endpoint.url)
        if self.fail:
            raise mcp_client.McpFailure(self.fail)
        return mcp_client.Listing(tools=[{"name": "echo", "description": "says it back",
                                          "inputSchema": {"type": "object"}}], revision="2026-07-28")  # fmt: skip


@pytest.fixture
def lister(monkeypatch: pytest.MonkeyPatch) -> FakeLister:
    fake = FakeLister()
    monkeypatch.setattr(mcp_client, "list_tools", fake)
    return fake


def tools_of(aio: Any, settings: Settings, *servers: McpServer) -> dict[str, store.ServerTools]:
    return asyncio.run(store.server_tools(aio, settings, "alice", servers))


def test_tool_lists_are_cached_for_their_ttl_and_per_url_and_headers(
        lister: FakeLister, make_settings: Callable[..., Settings], server: fakeredis.FakeServer) -> None:  # fmt: skip
    settings = make_settings(PARLEY_MCP_TOOLS_TTL_S="300")
    aio = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    first = tools_of(aio, settings, gh())["github"]
    assert first.tools[0]["name"] == "echo" and first.revision == "2026-07-28" and first.error is None
    tools_of(aio, settings, gh())
    assert len(lister.calls) == 1  # the second read came from the cache
    assert 0 < asyncio.run(aio.ttl(keys.mcp_tools("alice", "github"))) <= 300
    tools_of(aio, settings, gh(headers={"Authorization": "another key"}))
    tools_of(aio, settings, gh(url="https://moved.example/mcp"))
    assert len(lister.calls) == 3  # a list fetched with other headers or another URL is not used


def test_a_failed_listing_is_kept_briefly_and_a_ttl_of_zero_caches_nothing(
        lister: FakeLister, make_settings: Callable[..., Settings], server: fakeredis.FakeServer) -> None:  # fmt: skip
    aio = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    lister.fail = "the MCP server at x failed: down"
    failed = tools_of(aio, make_settings(PARLEY_MCP_TOOLS_TTL_S="300"), gh())["github"]
    assert failed.tools == [] and failed.error == "the MCP server at x failed: down"
    assert 0 < asyncio.run(aio.ttl(keys.mcp_tools("alice", "github"))) <= store.FAILURE_TTL_S
    tools_of(aio, make_settings(PARLEY_MCP_TOOLS_TTL_S="300"), gh())
    assert len(lister.calls) == 1
    asyncio.run(aio.delete(keys.mcp_tools("alice", "github")))
    lister.fail = None
    settings = make_settings(PARLEY_MCP_TOOLS_TTL_S="0")
    tools_of(aio, settings, gh())
    tools_of(aio, settings, gh())
    assert len(lister.calls) == 3 and asyncio.run(aio.exists(keys.mcp_tools("alice", "github"))) == 0
