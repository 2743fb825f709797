"""Parley's MCP client (parley.tools.mcp_client) against the project's MCP server (tests/mcp_server.py), a real
Streamable HTTP server: both revisions and the fallback between them, header values sent, and the bounds a slow,
large or private server meets (time, bytes, addresses), the cancel reaching the server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from parley.tools import mcp_client, network
from tests.mcp_server import SECRET_HEADER

LOOPBACK = network.parse_allowlist("127.0.0.1")


def bounds(timeout_s: float = 10.0, max_bytes: int = 1_000_000, allowed: network.Allowlist = LOOPBACK
           ) -> mcp_client.Bounds:  # fmt: skip
    return mcp_client.Bounds(allowed=allowed, timeout_s=timeout_s, max_bytes=max_bytes)


def endpoint(mcp_server: Any, path: str = "mcp", **headers: str) -> mcp_client.Endpoint:
    return mcp_client.Endpoint(f"{mcp_server.url}/{path}", headers)


@pytest.mark.parametrize(("path", "revision"), [("mcp", "2026-07-28"), ("modern/mcp", "2026-07-28"),
                                                ("legacy/mcp", "2025-11-25")])  # fmt: skip
def test_the_tools_are_listed_in_the_revision_the_server_speaks(mcp_server: Any, path: str, revision: str) -> None:
    listing = asyncio.run(mcp_client.list_tools(endpoint(mcp_server, path), bounds()))
    assert listing.revision == revision
    assert sorted(tool["name"] for tool in listing.tools) == ["echo", "fail", "hang", "hangs", "image", "large",
                                                              "trace_context", "weather"]  # fmt: skip


@pytest.mark.parametrize("path", ["mcp", "modern/mcp", "legacy/mcp"])
@pytest.mark.parametrize("revision", [None, "2025-11-25", "2026-07-28"])
def test_a_call_works_in_either_revision_and_falls_back_when_the_pinned_one_is_refused(
        mcp_server: Any, path: str, revision: str | None) -> None:  # fmt: skip
    result = asyncio.run(mcp_client.call_tool(endpoint(mcp_server, path), bounds(), "echo", {"text": "héllo"},
                                              revision))  # fmt: skip
    assert not result.is_error and result.content[0].text == "héllo"  # type: ignore[union-attr]


def test_header_values_are_sent_and_a_refusal_without_them_says_so(mcp_server: Any) -> None:
    name, value = SECRET_HEADER
    listing = asyncio.run(mcp_client.list_tools(endpoint(mcp_server, "private/mcp", **{name: value}), bounds()))
    assert len(listing.tools) == 8
    with pytest.raises(mcp_client.McpFailure, match="missing or wrong X-Test-Secret"):
        asyncio.run(mcp_client.list_tools(endpoint(mcp_server, "private/mcp", **{name: "wrong"}), bounds()))


def hangs(mcp_server: Any) -> dict[str, int]:
    result = asyncio.run(mcp_client.call_tool(endpoint(mcp_server), bounds(), "hangs", {}))
    return result.structured_content  # type: ignore[return-value]


@pytest.mark.parametrize("path", ["modern/mcp", "legacy/mcp"])
def test_a_hanging_call_ends_at_the_deadline_and_the_server_is_told(mcp_server: Any, path: str) -> None:
    before = hangs(mcp_server)["cancelled"]
    started = time.monotonic()
    with pytest.raises(mcp_client.McpFailure) as caught:
        asyncio.run(mcp_client.call_tool(endpoint(mcp_server, path), bounds(timeout_s=1.0), "hang", {"seconds": 60}))
    took = time.monotonic() - started
    assert caught.value.timed_out and "did not answer within 1 s" in caught.value.message
    assert took < 1.0 + mcp_client.CLOSE_GRACE_S
    deadline = time.monotonic() + 5
    while hangs(mcp_server)["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hangs(mcp_server) == {"cancelled": before + 1, "running": 0}  # cancelled, not left running


@pytest.mark.parametrize("path", ["modern/mcp", "legacy/mcp"])
def test_an_answer_past_the_byte_bound_fails_the_call(mcp_server: Any, path: str) -> None:
    with pytest.raises(mcp_client.McpFailure, match="larger than 50000 bytes"):
        asyncio.run(mcp_client.call_tool(endpoint(mcp_server, path), bounds(max_bytes=50_000), "large",
                                         {"size": 200_000}))  # fmt: skip
    result = asyncio.run(mcp_client.call_tool(endpoint(mcp_server, path), bounds(max_bytes=50_000), "large",
                                              {"size": 1_000}))  # fmt: skip
    assert len(result.content[0].text) == 1_000  # type: ignore[union-attr]


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/mcp", "http://localhost:{port}/mcp"])
def test_a_private_address_is_refused_before_connecting_unless_allowed(mcp_server: Any, url: str) -> None:
    target = mcp_client.Endpoint(url.format(port=mcp_server.port))
    with pytest.raises(mcp_client.McpFailure, match=r"^refused: .* is a loopback address; MCP servers must be public"):
        asyncio.run(mcp_client.list_tools(target, bounds(allowed=network.Allowlist())))
    assert asyncio.run(mcp_client.list_tools(target, bounds(allowed=network.parse_allowlist("127.0.0.1,::1")))).tools


def test_a_compressed_answer_is_refused(mcp_server: Any) -> None:
    """Parley asks for identity; a server that compresses anyway could send a bomb that the byte count (taken on
    the wire) would not see grow, so the answer is not read."""
    with pytest.raises(mcp_client.McpFailure, match=r"compressed answer \(gzip\); Parley asks for identity"):
        asyncio.run(mcp_client.list_tools(endpoint(mcp_server, "gzip/mcp"), bounds()))


def test_every_request_goes_to_the_address_that_was_checked(mcp_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name is resolved and checked before each request, and the connection goes to the
    address checked, with the URL's name kept as the Host. `rebind.test` has no real DNS: the server is only
    reached through the pinned address, and it refuses the foreign Host (the SDK server's DNS-rebinding guard)."""
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # what a rebinding name answers once it was registered as public

    monkeypatch.setattr(network, "resolve_async", resolve)
    target = mcp_client.Endpoint(f"http://rebind.test:{mcp_server.port}/mcp")
    with pytest.raises(mcp_client.McpFailure, match=r"^refused: rebind.test resolves to 127.0.0.1, which is a loop"):
        asyncio.run(mcp_client.list_tools(target, bounds(allowed=network.Allowlist())))
    with pytest.raises(mcp_client.McpFailure, match="refused: Server returned an error response"):
        asyncio.run(mcp_client.list_tools(target, bounds(allowed=LOOPBACK)))  # reached, Host: rebind.test kept
