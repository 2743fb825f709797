"""Errors on the Responses and Conversations routes in OpenAI's format, `{"error": {"message", "type", "param",
"code"}}`, which keeps Parley's own `code` and `message` (and any extra field): one body both kinds of client read.

A route class rather than app handlers: the app's handlers answer every other route in Parley's shape, and the
errors of dependencies (401, 429) and of body validation (422) are raised inside the route's handler too."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from parley.shared.errors import ParleyError

from ... import errors

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error"}  # fmt: skip
"""OpenAI's error `type` for a status (5xx: `server_error`)."""

HANDLERS: tuple[tuple[type[Exception], Callable[[Request, Exception], Coroutine[Any, Any, JSONResponse]]], ...] = (
    (ParleyError, errors.parley_error), (RequestValidationError, errors.validation_error),
    (StarletteHTTPException, errors.http_error), (RedisError, errors.redis_error),
)  # fmt: skip


def openai_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """Parley's error body with OpenAI's `type` and `param` added (`param`: the field at fault, or null)."""
    error = dict(body.get("error") or {})
    details = error.get("details") or []
    param = error.get("field") or (details[0].get("field") if details and isinstance(details[0], dict) else None)
    error.setdefault("message", "error")
    error["type"] = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error["param"] = param or None
    return {"error": error}


async def openai_error(request: Request, error: Exception) -> JSONResponse:
    """The app's own answer to `error`, reshaped; an unexpected error goes on to the app's 500 handler."""
    for kind, handler in HANDLERS:
        if isinstance(error, kind):
            answer = await handler(request, error)
            body = openai_body(answer.status_code, json.loads(bytes(answer.body)))
            headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "content-type")}
            return JSONResponse(body, status_code=answer.status_code, headers=headers)
    raise error


class OpenAIErrorRoute(APIRoute):
    """A route whose errors leave in OpenAI's format (see the module's docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as error:  # noqa: BLE001 - openai_error re-raises what it does not know
                return await openai_error(request, error)

        return run
