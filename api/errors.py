"""Every error leaves as the contract's JSON: `{"error": {"code", "message"}}` with its status.

One function per kind of failure; `install` registers them all on the app. Redis failures
become 503 with Retry-After, so a client knows to come back, never a hang or a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from parley.shared.errors import ParleyError, TooManyRequests, Unauthorized
from parley.shared.schema import ErrorResponse

log = logging.getLogger("parley.api")

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 413: "too_large",
              415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
              502: "model_failed", 503: "not_ready", 504: "timeout"}  # fmt: skip


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all in the one error shape."""
    return {status: {"model": ErrorResponse, "description": HTTP_CODES.get(status, "error")} for status in statuses}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:  # fmt: skip
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


@contextmanager
def client_input(*prefix: str) -> Iterator[None]:
    """Around a model a route builds from what the client sent: its ValidationError is the client's 422
    (fields under `prefix`), like FastAPI's own body validation, never an unexpected 500."""
    try:
        yield
    except ValidationError as error:
        problems = [{**problem, "loc": (*prefix, *problem.get("loc", ()))} for problem in error.errors()]
        raise RequestValidationError(problems) from None


async def parley_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ParleyError)
    headers: dict[str, str] = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, TooManyRequests):
        headers["Retry-After"] = str(error.retry_after_s)
    return error_response(error.status, error.code, error.message, headers, **error.extra)


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return error_response(400, "invalid_json", "the request body is not valid JSON")
    details = [
        {"field": ".".join(str(part) for part in problem.get("loc", ()) if part != "body"),
         "message": problem.get("msg", "")}
        for problem in problems
    ]  # fmt: skip
    summary = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in details)
    return error_response(422, "invalid_request", summary, details=details)


async def http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = HTTP_CODES.get(error.status_code, "error")
    return error_response(error.status_code, code, str(error.detail), getattr(error, "headers", None))


async def redis_error(request: Request, error: Exception) -> JSONResponse:
    log.warning("Redis unavailable during %s %s: %s", request.method, request.url.path, error)
    return error_response(503, "redis_unavailable", "the data store is unavailable; try again shortly",
                          {"Retry-After": "2"})  # fmt: skip


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error during %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ParleyError, parley_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RedisError, redis_error)
    app.add_exception_handler(Exception, unexpected_error)
