"""Parley's MCP client: list and call the tools of a tenant's MCP server over Streamable HTTP, bounded.

Built on the official `mcp` SDK's `Client` over its `streamable_http_client` transport. The revision is
the SDK's own negotiation (`mode="auto"`): it probes `server/discover` at the stateless 2026-07-28
revision and falls back to the 2025-11-25 `initialize` handshake (with `Mcp-Session-Id`) on any refusal.
A listing tells which revision the server spoke; a call may pin it (`revision=`) and save the probe, and
falls back to negotiating when the pinned revision is refused.

What a tenant's server can do to the process that asks it is bounded here, on the HTTP layer the SDK uses
(an `httpx2` transport of our own, `_Guard`):

- every request (redirects the SDK follows too) goes to an address checked just before it connects
  (parley.tools.network: public, or named in PARLEY_PRIVATE_NETWORKS_ALLOWED), and to that very address
  (the `Host` header and TLS name keep the URL's host), so a DNS answer that changes cannot lead elsewhere;
- every response body is counted as it is read: past `max_bytes` the read fails and so does the call
  (the SDK buffers a JSON answer whole; it never gets more than that), and compressed bodies are refused
  (the client asks for `identity`), so a compression bomb has nothing to expand;
- the whole operation, connect included, ends within `timeout_s`: at the deadline the call is cancelled,
  which the SDK turns into `notifications/cancelled` (2025-11-25) or the closing of the call's response
  stream (2026-07-28), and the session is closed within `CLOSE_GRACE_S` more;
- proxies from the environment are ignored (`trust_env=False`).

Errors are `McpFailure`, whose message is for the model or a person: never the header values.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST, METHOD_NOT_FOUND, UNSUPPORTED_PROTOCOL_VERSION, CallToolResult, Implementation

from parley.tools import network

log = logging.getLogger("parley.mcp")

AUTO = "auto"
LEGACY = "legacy"
LEGACY_REVISION = "2025-11-25"
MODERN_REVISION = "2026-07-28"
CLOSE_GRACE_S = 2.0
"""How long closing a session (the 2025-11-25 DELETE, a cancel) may take after the deadline."""
MAX_PAGES = 10
"""Most `tools/list` pages read of one server."""
MAX_TOOLS = 128
"""Most tools kept of one server (OpenAI takes at most 128 tools in one request)."""
CLIENT_INFO = Implementation(name="parley", version="0.1.0")
NOT_RUN = (UNSUPPORTED_PROTOCOL_VERSION, INVALID_REQUEST, METHOD_NOT_FOUND)
"""JSON-RPC errors that say a request was refused before it ran (wrong revision, no session): safe to send again."""
PURPOSE = "MCP servers must be public unless PARLEY_PRIVATE_NETWORKS_ALLOWED names them"


class McpFailure(Exception):
    """The server could not be reached, refused, failed, was too slow or answered too much."""

    def __init__(self, message: str, *, timed_out: bool = False, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out
        self.code = code
        """The JSON-RPC error code when the server answered with an error."""


@dataclass(frozen=True)
class Endpoint:
    """Where a server is and what to send it: the stored URL and header values."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Bounds:
    """How far one operation on a server may go."""

    allowed: network.Allowlist
    timeout_s: float
    max_bytes: int


@dataclass(frozen=True)
class Listing:
    """A server's tools as `tools/list` gave them (raw dicts: name, description, inputSchema...)."""

    tools: list[dict[str, Any]]
    revision: str


class AnswerTooLarge(httpx2.StreamError):
    """A response body went past the byte bound (a StreamError: the SDK turns it into a failed request)."""


class Refused(httpx2.TransportError):
    """The guard would not send the request, or not read its answer (the operation fails with it)."""


class _Counted(httpx2.AsyncByteStream):
    """A response body that fails once more than `guard.max_bytes` bytes were read of it."""

    def __init__(self, stream: httpx2.AsyncByteStream, guard: _Guard) -> None:
        self.stream = stream
        self.guard = guard
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.read += len(chunk)
            if self.read > self.guard.max_bytes:
                self.guard.failure = f"the server's answer is larger than {self.guard.max_bytes} bytes"
                raise AnswerTooLarge(self.guard.failure)
            yield chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


class _Guard(httpx2.AsyncBaseTransport):
    """The HTTP transport under the SDK: checks and pins each request's address, counts each answer's bytes."""

    def __init__(self, bounds: Bounds) -> None:
        self.inner = httpx2.AsyncHTTPTransport(trust_env=False, retries=0)
        self.allowed = bounds.allowed
        self.max_bytes = bounds.max_bytes
        self.failure: str | None = None
        """Why the operation failed, where the SDK's own error would hide it (a refusal, a bound)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        addresses = await self._checked(url)
        if url.scheme == "https" and not _is_ip(url.host):
            request.extensions = {**request.extensions, "sni_hostname": url.host}  # TLS keeps the name
        failure: Exception | None = None
        for address in addresses:
            request.url = url.copy_with(host=address)  # the Host header was set from the name already
            try:
                response = await self.inner.handle_async_request(request)
            except httpx2.ConnectError as error:
                failure = error
                continue
            finally:
                request.url = url
            return await self._bounded(response)
        raise httpx2.ConnectError(f"cannot connect to {url.host}: {failure}", request=request)

    async def _checked(self, url: httpx2.URL) -> list[str]:
        try:
            addresses = await network.resolve_async(url.host, url.port or (443 if url.scheme == "https" else 80))
            network.check_host(url.host, addresses, self.allowed, purpose=PURPOSE)
        except (network.PrivateAddress, network.Unresolvable) as error:
            self.failure = str(error)
            raise Refused(str(error)) from error
        return addresses

    async def _bounded(self, response: httpx2.Response) -> httpx2.Response:
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            await response.aclose()
            self.failure = f"the MCP server sent a compressed answer ({coding}); Parley asks for identity"
            raise Refused(self.failure)
        response.stream = _Counted(response.stream, self)  # type: ignore[arg-type]
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@asynccontextmanager
async def _client(endpoint: Endpoint, guard: _Guard, bounds: Bounds, mode: str) -> AsyncIterator[Client]:
    """An open SDK client on `endpoint`, every byte through `guard`."""
    headers = {**endpoint.headers, "Accept-Encoding": "identity"}
    timeout = httpx2.Timeout(bounds.timeout_s + CLOSE_GRACE_S)  # the deadline below ends the call, not httpx
    http = httpx2.AsyncClient(transport=guard, headers=headers, timeout=timeout,
                              trust_env=False, follow_redirects=False)  # fmt: skip
    async with http:
        transport = streamable_http_client(endpoint.url, http_client=http, max_sse_event_size=bounds.max_bytes)
        async with Client(transport, mode=mode, cache=None, client_info=CLIENT_INFO,
                          read_timeout_seconds=bounds.timeout_s + CLOSE_GRACE_S) as client:  # fmt: skip
            yield client


def _message(error: BaseException, guard: _Guard, endpoint: Endpoint, timeout_s: float) -> McpFailure:
    """The failure as a person should read it: what the guard saw first, else the SDK's words."""
    if guard.failure:
        return McpFailure(guard.failure)
    if isinstance(error, TimeoutError | httpx2.TimeoutException):
        return McpFailure(f"the MCP server at {endpoint.url} did not answer within {timeout_s:g} s", timed_out=True)
    if isinstance(error, BaseExceptionGroup):
        inner = error.exceptions[0] if error.exceptions else error
        return _message(inner, guard, endpoint, timeout_s)
    if isinstance(error, MCPError):
        return McpFailure(f"the MCP server at {endpoint.url} refused: {error}", code=error.code)
    detail = str(error) or type(error).__name__
    return McpFailure(f"the MCP server at {endpoint.url} failed: {detail}")


async def _bounded(endpoint: Endpoint, bounds: Bounds, mode: str, work: Any) -> Any:
    """Run `work(client)` on an open client within the bounds; McpFailure for anything that goes wrong."""
    guard = _Guard(bounds)
    try:
        async with asyncio.timeout(bounds.timeout_s + CLOSE_GRACE_S):  # the close after the deadline, bounded too
            async with _client(endpoint, guard, bounds, mode) as client:
                async with asyncio.timeout(bounds.timeout_s):
                    return await work(client), client.protocol_version
    except McpFailure:
        raise
    except (Exception, TimeoutError) as error:  # noqa: BLE001  (a hostile server may raise anything)
        raise _message(error, guard, endpoint, bounds.timeout_s) from None


async def list_tools(endpoint: Endpoint, bounds: Bounds) -> Listing:
    """The server's tools (at most `MAX_TOOLS`, from at most `MAX_PAGES` pages) and the revision it spoke."""

    async def work(client: Client) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools += [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in page.tools]
            cursor = page.next_cursor
            if not cursor or len(tools) >= MAX_TOOLS:
                break
        return tools[:MAX_TOOLS]

    tools, revision = await _bounded(endpoint, bounds, AUTO, work)
    return Listing(tools=tools, revision=revision)


async def call_tool(endpoint: Endpoint, bounds: Bounds, name: str, arguments: dict[str, Any],
                    revision: str | None = None) -> CallToolResult:  # fmt: skip
    """Call one tool. `revision` (from the listing) skips the probe; when the server refuses that revision
    (an error that says the call was not run), the call negotiates again within what is left of the time."""

    async def work(client: Client) -> CallToolResult:
        return await client.call_tool(name, arguments)

    mode = _mode(revision)
    started = time.monotonic()
    try:
        result, _ = await _bounded(endpoint, bounds, mode, work)
    except McpFailure as failure:
        left = bounds.timeout_s - (time.monotonic() - started)
        if mode == AUTO or failure.code not in NOT_RUN or left <= 0:
            raise
        log.info("MCP server at %s refused revision %s (%s); negotiating again", endpoint.url, revision, failure.code)
        result, _ = await _bounded(endpoint, replace(bounds, timeout_s=left), AUTO, work)
    return result  # type: ignore[no-any-return]


def _mode(revision: str | None) -> str:
    """The SDK `mode` for a revision a server spoke before."""
    if revision == LEGACY_REVISION:
        return LEGACY
    if revision == MODERN_REVISION:
        return MODERN_REVISION
    return AUTO
