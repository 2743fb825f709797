"""The project's own MCP server (tests/mcp_server.py) as a real HTTP server, driven by the official `mcp`
client in both revisions Parley's MCP client must speak: 2025-11-25 (`initialize`, `Mcp-Session-Id`) and the
stateless 2026-07-28. Later tests point Parley's workers at it; this one checks it behaves as they assume."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from mcp import Client

from tests.mcp_server import PNG_1X1

REVISIONS = [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")]


def _run(url: str, mode: str, calls: Any) -> Any:
    async def session() -> Any:
        async with Client(url, mode=mode) as client:
            return client.protocol_version, await calls(client)

    return asyncio.run(session())


@pytest.mark.parametrize("mode, revision", REVISIONS)
def test_each_tool_answers_as_documented(mcp_server, mode: str, revision: str) -> None:
    async def calls(client: Client) -> dict[str, Any]:
        return {
            "tools": sorted(tool.name for tool in (await client.list_tools()).tools),
            "echo": await client.call_tool("echo", {"text": "héllo"}),
            "fail": await client.call_tool("fail", {"reason": "on purpose"}),
            "large": await client.call_tool("large", {"size": 200_000}),
            "image": await client.call_tool("image", {}),
            "weather": await client.call_tool("weather", {"city": "Oslo"}),
        }

    version, got = _run(f"{mcp_server.url}/mcp", mode, calls)
    assert version == revision
    assert got["tools"] == ["echo", "fail", "hang", "hangs", "image", "large", "trace_context", "weather"]
    assert [c.text for c in got["echo"].content] == ["héllo"] and not got["echo"].is_error
    assert got["fail"].is_error and "on purpose" in got["fail"].content[0].text
    assert len(got["large"].content[0].text) == 200_000
    assert got["image"].content[0].type == "image" and got["image"].content[0].mime_type == "image/png"
    assert got["image"].content[0].data == base64.b64encode(PNG_1X1).decode()
    assert got["weather"].structured_content == {"city": "Oslo", "celsius": 21.5, "sky": "clear"}


@pytest.mark.parametrize("mode, revision", REVISIONS)
def test_a_hanging_call_can_be_abandoned_and_the_server_serves_on(mcp_server, mode: str, revision: str) -> None:
    async def calls(client: Client) -> str | None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await client.call_tool("hang", {"seconds": 30})
        [said] = (await client.call_tool("echo", {"text": "still here"})).content
        return getattr(said, "text", None)

    assert _run(f"{mcp_server.url}/mcp", mode, calls) == (revision, "still here")
