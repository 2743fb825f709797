"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming responses)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.shared import logs, telemetry, tracing
from parley.shared.text import clean_json

from .errors import error_body

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""An incoming X-Request-ID is kept when it looks like an id (so it is safe in logs and headers)."""

BODY_GRACE_S = 10.0
BODY_MIN_RATE_BPS = 16 * 1024
"""A body must arrive within BODY_GRACE_S plus one second per BODY_MIN_RATE_BPS bytes received so far:
a client trickling a body (or sending none) cannot hold a connection and its buffer for ever (408)."""
MAX_JSON_DEPTH = 100
"""JSON bodies nested deeper are refused (400): what is accepted must be storable (Lua's cjson stops at
1000 levels), validatable and servable back (recursion limits) on every route."""
THREAD_BODY_BYTES = 64 * 1024
"""JSON bodies larger than this are checked in a thread, so one large body does not stall the event loop."""

_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A `\\uD800`-`\\uDFFF` escape: the only way a strictly UTF-8 decoded body can carry a lone surrogate."""
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


class HttpMetrics:
    """Count every answer by method, route template and status (telemetry), answers made before routing
    (413, 408, 400 from BodyGuard, 404 of unknown paths) as route `unmatched`: never the raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_and_measure(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", None)
                route = route if isinstance(route, str) else "unmatched"
                telemetry.http_request(scope["method"], route, message["status"], time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_and_measure)


class TraceRequests:
    """An OpenTelemetry server span around each POST request (every route that accepts a turn is a POST), joined
    to the caller's trace by its `traceparent` header: the turn's spans on the worker join it through the job
    (shared/tracing.py). Installed only when tracing is on; other methods pass through untraced."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.request_span(scope["method"], scope.get("headers") or []) as span:
            try:
                await self.app(scope, receive, send_and_note)
            finally:
                if span is not None:
                    route = getattr(scope.get("route"), "path", None)
                    span.answered(route if isinstance(route, str) else None, status)


class BodyRefused(Exception):
    """A request body the edge answers itself, before routing and authentication."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class BodyGuard:
    """Read each request body before routing and authentication, bounded in size and time, and make JSON
    bodies safe for every route in one place.

    - Bytes are counted as they arrive, whatever the framing (Content-Length or chunked): past
      `max_body_bytes` the answer is 413 at once and the rest is never read; a body that arrives slower
      than BODY_MIN_RATE_BPS (after BODY_GRACE_S) is 408.
    - A JSON body must be UTF-8 and parse, and nest at most MAX_JSON_DEPTH levels (400 `invalid_json`
      otherwise, never a RecursionError's 500); lone UTF-16 surrogates in its strings (`"\\ud800"`) become
      U+FFFD and the body is re-serialised, so no route, model or Lua script ever sees one.
    The app then receives the checked body as one message; later `receive` calls (disconnect) pass through.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
            if body is None:
                return  # the client left while sending
            if body and _is_json(scope):
                body = await _check_json(body)
        except BodyRefused as refused:
            await _send_json(send, refused.status, _refusal_body(scope, refused), close=True)
            return
        if body or _header(scope, b"content-length") or _header(scope, b"transfer-encoding"):
            _set_length(scope, len(body))
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body; BodyRefused past the size or time bound; None when the client disconnected."""
        length = _header(scope, b"content-length")
        if length.isdigit() and (len(length) > 18 or int(length) > self.max_body_bytes):  # int() of 5000 digits raises
            raise BodyRefused(413, "too_large", f"request body is over {self.max_body_bytes} bytes")
        loop = asyncio.get_running_loop()
        started, chunks, size = loop.time(), bytearray(), 0
        while True:
            deadline = started + BODY_GRACE_S + size / BODY_MIN_RATE_BPS
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyRefused(408, "request_timeout", "the request body arrived too slowly") from None
            if message["type"] == "http.disconnect":
                return None
            piece = message.get("body", b"")
            size += len(piece)
            if size > self.max_body_bytes:
                raise BodyRefused(413, "too_large", f"request body is over {self.max_body_bytes} bytes")
            chunks += piece
            if not message.get("more_body", False):
                return bytes(chunks)


JSON_RPC_PATHS = re.compile(r"/mcp/?|/a2a/.*")
"""Endpoints whose clients read JSON-RPC errors only (A2A, MCP): a refused body is answered in that shape."""
JSON_RPC_CODES = {"invalid_json": -32700}
"""JSON-RPC's code for a refusal (parse error); any other refusal is -32600 (invalid request)."""


def _refusal_body(scope: Scope, refused: BodyRefused) -> dict[str, Any]:
    """Parley's error body, or on a JSON-RPC endpoint a JSON-RPC error (id null: the request was not read),
    keeping Parley's code in its `data`."""
    path = scope.get("path", "")
    if JSON_RPC_PATHS.fullmatch(path) is None:
        return error_body(refused.code, refused.message)
    error = {"code": JSON_RPC_CODES.get(refused.code, -32600), "message": refused.message,
             "data": {"code": refused.code}}  # fmt: skip
    return {"jsonrpc": "2.0", "id": None, "error": error}


async def _check_json(body: bytes) -> bytes:
    if len(body) > THREAD_BODY_BYTES:
        return await run_in_threadpool(_checked_json, body)
    return _checked_json(body)


def _checked_json(body: bytes) -> bytes:
    """`body` when it is sound JSON without lone surrogates; re-serialised with them replaced; BodyRefused
    (400 `invalid_json`) when it is not UTF-8, not JSON, or nested too deep."""
    try:
        text = body.decode("utf-8")  # strict: refuses encoded surrogates too, which json.loads(bytes) would take
        value = json.loads(text)
    except UnicodeDecodeError:
        raise BodyRefused(400, "invalid_json", "the request body is not UTF-8") from None
    except RecursionError:
        raise BodyRefused(400, "invalid_json", f"the request body nests more than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:  # JSONDecodeError, or an integer too long to convert
        raise BodyRefused(400, "invalid_json", f"the request body is not valid JSON: {error}") from None
    if _too_deep(body):
        raise BodyRefused(400, "invalid_json", f"the request body nests more than {MAX_JSON_DEPTH} levels")
    if _LONE_SURROGATE_ESCAPE.search(text) is None:
        return body
    return json.dumps(clean_json(value), ensure_ascii=False, separators=(",", ":")).encode()


def _too_deep(body: bytes) -> bool:
    """True when valid JSON `body` nests more than MAX_JSON_DEPTH arrays/objects (C-speed passes only)."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return False
    skeleton = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):  # each pass removes at least the innermost level
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"").replace(b"{}", b"")
    return bool(skeleton)


def _is_json(scope: Scope) -> bool:
    """A body FastAPI would parse as JSON (`application/json`, `application/*+json`), and any other
    content type naming json: a superset, so no JSON body reaches a route unchecked."""
    return any(name == b"content-type" and b"json" in value.lower() for name, value in scope.get("headers") or [])


def _header(scope: Scope, name: bytes) -> bytes:
    return dict(scope.get("headers") or []).get(name, b"")


def _set_length(scope: Scope, length: int) -> None:
    """The body's real length in `content-length` (in place: routing fills this same scope)."""
    headers = [(k, v) for k, v in scope.get("headers") or [] if k not in (b"content-length", b"transfer-encoding")]
    scope["headers"] = [*headers, (b"content-length", str(length).encode())]


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # a streaming response waits here for the disconnect

    return replay


class RequestContext:
    """Give every HTTP request an id (the client's `X-Request-ID` when it sent a sane one), put it in
    the log context for everything the request logs, and echo it in the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        logs.set_context(request_id=request_id)  # this request's task only
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _send_json(send: Send, status: int, body: dict[str, Any], close: bool = False) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:  # the rest of the body was never read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
