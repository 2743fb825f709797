"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and slows streaming responses)."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.shared import telemetry

from .errors import error_body


class BodyLimitAndMetrics:
    """Refuse bodies over `max_body_bytes` (413) and count every answer by route and status (telemetry)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await _send_json(send, 413, error_body("too_large", f"request body is over {self.max_body_bytes} bytes"))
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_measure(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                route = getattr(scope.get("route"), "path", "unmatched")
                telemetry.http_request(scope["method"], route, message["status"], time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_and_measure)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
