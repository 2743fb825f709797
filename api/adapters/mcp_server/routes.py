"""`/mcp`: Streamable HTTP for both revisions, stateless, behind Parley's Bearer keys.

Authentication and the request rate are Parley's (`Tenant`: 401 JSON with `WWW-Authenticate: Bearer`); then
the request is handed, as ASGI, to the official SDK's transports, one per request, with its caller as the
server's lifespan state:
- 2026-07-28 (an `MCP-Protocol-Version` header naming a 2026 revision): the SDK's single-exchange entry, SSE
  mode, so that closing the response stream cancels the call.
- 2025-11-25 and older: the SDK's transport as its stateless mode builds it (no session kept: any web process
  answers any request). Its answers carry an `Mcp-Session-Id` all the same: a random connection token that
  names nothing stored here but lets a later `notifications/cancelled` find the call's turn (server.py).
"""

from __future__ import annotations

import json
import re
import secrets

import anyio
from anyio.abc import TaskStatus
from fastapi import APIRouter, Request
from mcp.server._streamable_http_modern import handle_modern_request
from mcp.server.connection import Connection
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import DEFAULT_NEGOTIATED_VERSION
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ...deps import ApiKey, Runtime, Tenant
from ...errors import documented
from . import server as mcp
from .server import Caller

router = APIRouter(tags=["MCP server"], responses=documented(401, 413, 429))

SERVER = mcp.build()
TOKEN = re.compile(r"^[A-Za-z0-9-]{16,64}$")
"""What a connection token (`Mcp-Session-Id`) this server hands out looks like."""


@router.api_route("/mcp", methods=["GET", "POST", "DELETE"], response_model=None)
async def mcp_endpoint(request: Request, rt: Runtime, tenant: Tenant, key: ApiKey) -> Response:
    """Parley as an MCP server: each agent this key can see is a tool (`tools/list`, `tools/call`)."""
    if request.method != "POST":
        # No server-initiated messages and no sessions to end: the revisions' answer for that is 405.
        return Response(status_code=405, headers={"Allow": "POST"})
    version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
    if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return Exchange(Caller(rt, tenant, key), modern=True)
    sent = request.headers.get(MCP_SESSION_ID_HEADER)
    token = (sent if TOKEN.match(sent) else None) if sent is not None else new_token()
    return Exchange(Caller(rt, tenant, key, token), modern=False, version=version)


def new_token() -> str:
    """A new connection token: random, so no caller can guess another's."""
    return secrets.token_hex(16)


class Exchange(Response):
    """The route's answer: the SDK's transport serving this one HTTP request (it reads the body itself)."""

    def __init__(self, caller: Caller, *, modern: bool, version: str | None = None) -> None:
        super().__init__()
        self.caller, self.modern, self.version = caller, modern, version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.modern:
            await handle_modern_request(SERVER, None, False, self.caller, scope, receive, send)
            return
        body, receive = await _buffered(receive)
        await _on_cancel_notification(self.caller, body)
        await _serve_legacy(self.caller, self.version, scope, receive, _with_token(send, self.caller.token))


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The request's body (bounded by the app's BodyGuard), and a `receive` that gives it again to the SDK."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", _replaying([message], receive)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    return body, _replaying([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replaying(first: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        return first.pop(0) if first else await receive()

    return replay


async def _on_cancel_notification(caller: Caller, body: bytes) -> None:
    """A 2025-11-25 `notifications/cancelled`: cancel its call's turn here, before the SDK acknowledges it (the
    SDK would run its handler after this request's transport is already gone)."""
    if b"notifications/cancelled" not in body:
        return
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return
    if isinstance(message, dict) and message.get("method") == "notifications/cancelled":
        params = message.get("params")
        await mcp.cancel_call(caller, params.get("requestId") if isinstance(params, dict) else None)


def _with_token(send: Send, token: str | None) -> Send:
    """`send` that names the connection token on every successful answer (the client keeps and resends it)."""
    if token is None:
        return send

    async def tokened(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] < 400:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != MCP_SESSION_ID_HEADER.encode()]
            message = {**message, "headers": [*headers, (MCP_SESSION_ID_HEADER.encode(), token.encode())]}
        await send(message)

    return tokened


async def _serve_legacy(caller: Caller, version: str | None, scope: Scope, receive: Receive, send: Send) -> None:
    """One request at 2025-11-25 (or older) as the SDK's stateless mode serves it, with a task group of its own
    (the SDK's session manager would need the app's lifespan, and keeps nothing we need)."""
    transport = StreamableHTTPServerTransport(mcp_session_id=None, is_json_response_enabled=False, event_store=None,
                                              security_settings=None)  # fmt: skip

    async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with transport.connect() as (read_stream, write_stream):
            task_status.started()
            dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                read_stream, write_stream, inline_methods=frozenset({"initialize"}),
                transport_builder=lambda _md: TransportContext(kind="streamable-http", can_send_request=False),
            )  # fmt: skip
            connection = Connection.from_envelope(version or DEFAULT_NEGOTIATED_VERSION, None, None)
            await serve_connection(SERVER, dispatcher, connection=connection, lifespan_state=caller)

    async with anyio.create_task_group() as group:
        await group.start(run)
        try:
            await transport.handle_request(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await transport.terminate()
