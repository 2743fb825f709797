"""The project's own MCP server for tests: a real Streamable HTTP server built with the official `mcp` SDK
(its `MCPServer`), speaking both the 2025-11-25 revision (`initialize`, `Mcp-Session-Id`) and the stateless
2026-07-28 one, with tools that misbehave as a hostile or broken server would.

    python -m tests.mcp_server --port 8765          # serves http://127.0.0.1:8765/mcp

Tools: `echo` (its text back), `fail` (a tool error), `hang` (sleeps, for timeouts and cancel), `large`
(a result of `size` characters), `image` (a 1x1 PNG as image content), `weather` (structured content).
"""

from __future__ import annotations

import argparse
import asyncio
import base64

import uvicorn
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
"""The smallest PNG: one pixel."""

server = MCPServer("parley-test-tools")


class Forecast(BaseModel):
    city: str
    celsius: float
    sky: str


@server.tool()
def echo(text: str) -> str:
    """Say `text` back."""
    return text


@server.tool()
def fail(reason: str = "on purpose") -> str:
    """Always fails, with `reason` (a tool error the client sees)."""
    raise ToolError(reason)


@server.tool()
async def hang(seconds: float = 3600.0) -> str:
    """Sleep `seconds` before answering (for timeouts and cancel)."""
    await asyncio.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool()
def large(size: int = 1_000_000) -> str:
    """A text result of `size` characters."""
    return "x" * size


@server.tool()
def image() -> Image:
    """A one-pixel PNG, as image content."""
    return Image(data=PNG_1X1, format="png")


@server.tool()
def weather(city: str) -> Forecast:
    """The weather in `city`, as structured content."""
    return Forecast(city=city, celsius=21.5, sky="clear")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    print(f"mcp-server listening on http://{args.host}:{args.port}/mcp", flush=True)
    uvicorn.run(server.streamable_http_app(host=args.host), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
