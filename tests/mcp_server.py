"""The project's own MCP server for tests: a real Streamable HTTP server built with the official `mcp` SDK
(its `MCPServer`), speaking both the 2025-11-25 revision (`initialize`, `Mcp-Session-Id`) and the stateless
2026-07-28 one, with tools that misbehave as a hostile or broken server would.

    python -m tests.mcp_server --port 8765          # serves http://127.0.0.1:8765/mcp

Tools: `echo` (its text back), `fail` (a tool error), `hang` (sleeps, for timeouts and cancel), `large`
(a result of `size` characters), `image` (a 1x1 PNG as image content), `weather` (structured content),
`hangs` (how many `hang` calls were cancelled before they ended, and how many run now), `trace_context` (the
`traceparent` and `tracestate` the call carried in its `_meta`).

The same tools are served at other paths, each a server that behaves differently (`Variants`):

- `/mcp`: both revisions;
- `/legacy/mcp`: 2025-11-25 only (a request at a 2026 revision is answered as an older server does: 400,
  "Missing session ID"), so a client must fall back to `initialize`;
- `/modern/mcp`: 2026-07-28 only (a request without a 2026 `MCP-Protocol-Version` is refused, 400);
- `/private/mcp`: both revisions, for a caller sending `X-Test-Secret: s3cret` only (401 otherwise);
- `/gzip/mcp`: both revisions, every answer gzip-compressed whatever the client asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
"""The smallest PNG: one pixel."""

SECRET_HEADER = ("x-test-secret", "s3cret")
"""What `/private/mcp` wants to see on every request."""

server = MCPServer("parley-test-tools")
hang_counts = {"cancelled": 0, "running": 0}


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
    hang_counts["running"] += 1
    try:
        await asyncio.sleep(seconds)
    except BaseException:
        hang_counts["cancelled"] += 1
        raise
    finally:
        hang_counts["running"] -= 1
    return f"slept {seconds:g} s"


@server.tool()
def hangs() -> dict[str, int]:
    """How many `hang` calls were cancelled (the client gave up: a cancel notification or a closed stream)."""
    return dict(hang_counts)


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


@server.tool()
def trace_context(ctx: Context) -> dict[str, str]:
    """The W3C trace context the call carried in its `_meta` (SEP-414: `traceparent`, `tracestate`), or {}."""
    meta = ctx.request_context.meta or {}
    return {name: str(meta[name]) for name in ("traceparent", "tracestate") if name in meta}  # type: ignore[literal-required]


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Variants:
    """The one MCP app at several paths, each a server that speaks only one revision or wants a header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        variant, _, rest = scope["path"].lstrip("/").partition("/")
        if variant not in ("legacy", "modern", "private", "gzip") or rest != "mcp":
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        version = headers.get("mcp-protocol-version")
        if variant == "legacy" and version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return await _refuse(send, 400, -32600, "Bad Request: Missing session ID")
        if variant == "modern" and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS):
            return await _refuse(send, 400, -32022, "this server speaks 2026-07-28 only",
                                 {"supported": ["2026-07-28"], "requested": version})  # fmt: skip
        if variant == "private" and headers.get(SECRET_HEADER[0]) != SECRET_HEADER[1]:
            return await _refuse(send, 401, -32001, "missing or wrong X-Test-Secret")
        scope = {**scope, "path": "/mcp", "raw_path": b"/mcp"}
        return await self.app(scope, receive, _gzipped(send) if variant == "gzip" else send)


def _gzipped(send: Any) -> Any:
    """`send` with every response body gzip-compressed, chunk by chunk (a flush after each)."""
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)

    async def gzip_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
            message = {**message, "headers": [*headers, (b"content-encoding", b"gzip")]}
        elif message["type"] == "http.response.body":
            data = compressor.compress(message.get("body", b""))
            data += compressor.flush(zlib.Z_SYNC_FLUSH if message.get("more_body") else zlib.Z_FINISH)
            message = {**message, "body": data}
        await send(message)

    return gzip_send


async def _refuse(send: Any, status: int, code: int, message: str, data: Any = None) -> None:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    print(f"mcp-server listening on http://{args.host}:{args.port}/mcp", flush=True)
    app = Variants(server.streamable_http_app(host=args.host))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
