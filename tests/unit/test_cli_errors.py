"""Exit codes and the one-line messages: every SDK error maps to the documented code, without I/O."""

from __future__ import annotations

import httpx
import pytest

from parley.cli import errors
from parley.cli.errors import AwaitingApproval, CLIError, TurnFailed, connection_reason, describe, exit_code
from parley.client import (
    APIError,
    AuthenticationError,
    ConflictError,
    ConnectionError,
    GatewayTimeoutError,
    ModelError,
    NotFoundError,
    RateLimitError,
    StreamError,
    UnavailableError,
    ValidationError,
    error_from_response,
)

URL = "http://127.0.0.1:8000"


def _response(status: int, body: object) -> APIError:
    response = httpx.Response(status, json=body, request=httpx.Request("GET", URL + "/api/v1/x"))
    return error_from_response(response)


def _connection_error(cause: Exception) -> ConnectionError:
    try:
        try:
            raise cause
        except Exception as error:
            raise ConnectionError(f"GET /api/v1/agents failed: {error!r}") from error
    except ConnectionError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (_response(401, {"error": {"code": "unauthorized", "message": "bad key"}}), errors.AUTH_FAILED),
        (_response(404, {"error": {"code": "not_found", "message": "no"}}), errors.NOT_FOUND),
        (_response(502, {"error": {"code": "model_failed", "message": "m", "job_id": "j"}}), errors.TURN_FAILED),
        (_response(504, {"error": {"code": "timeout", "message": "t", "job_id": "j"}}), errors.TURN_FAILED),
        (_response(409, {"error": {"code": "conflict", "message": "taken"}}), errors.API_ERROR),
        (_response(422, {"error": {"code": "invalid_request", "message": "bad"}}), errors.API_ERROR),
        (_response(429, {"error": {"code": "too_many_requests", "message": "slow"}}), errors.API_ERROR),
        (_response(503, {"error": {"code": "not_ready", "message": "later"}}), errors.API_ERROR),
        (_connection_error(httpx.ConnectError("[Errno 111] Connection refused")), errors.UNREACHABLE),
        (StreamError("bad event"), errors.API_ERROR),
        (TurnFailed("boom", "model_failed", "j1"), errors.TURN_FAILED),
        (CLIError("no such file", errors.USAGE), errors.USAGE),
        (AwaitingApproval("j1", "call_1", "http_get"), errors.AWAITING_APPROVAL),
    ],
)
def test_exit_codes(error: Exception, code: int) -> None:
    assert exit_code(error) == code


def test_the_sdk_classes_behind_the_codes() -> None:
    assert isinstance(_response(401, {}), AuthenticationError) and isinstance(_response(404, {}), NotFoundError)
    assert isinstance(_response(502, {}), ModelError) and isinstance(_response(504, {}), GatewayTimeoutError)
    assert isinstance(_response(409, {}), ConflictError) and isinstance(_response(429, {}), RateLimitError)
    assert isinstance(_response(503, {}), UnavailableError)


def test_codes_are_distinct_and_documented() -> None:
    assert sorted(errors.EXIT_CODES) == [0, 1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection refused"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (httpx.ConnectError("[Errno -2] Name or service not known"), "unknown host"),
        (httpx.ConnectTimeout("timed out"), "connection timed out"),
        (httpx.ReadTimeout("timed out"), "no answer in time"),
        (httpx.RemoteProtocolError("peer closed connection"), "connection closed by the server"),
    ],
)
def test_connection_reason_reads_the_cause(cause: Exception, reason: str) -> None:
    assert connection_reason(_connection_error(cause)) == reason


def test_unreachable_server_is_one_clear_line() -> None:
    error = _connection_error(httpx.ConnectError("[Errno 111] Connection refused"))
    assert describe(error, URL) == (
        "cannot reach http://127.0.0.1:8000 (connection refused); is the server running? set PARLEY_URL or --url"
    )
    lost = _connection_error(httpx.ReadTimeout("timed out"))
    assert describe(lost, URL) == "lost the connection to http://127.0.0.1:8000 (no answer in time)"


def test_api_errors_name_their_code_and_details() -> None:
    auth = describe(_response(401, {"error": {"code": "unauthorized", "message": "unknown API key"}}), URL)
    assert auth.startswith("authentication failed at http://127.0.0.1:8000 (unauthorized: unknown API key)")
    body = {"error": {"code": "invalid_request", "message": "invalid request",
                      "details": [{"field": "temperature", "message": "at most 2"}]}}  # fmt: skip
    invalid = _response(422, body)
    assert isinstance(invalid, ValidationError)
    assert describe(invalid, URL) == "422 invalid_request: invalid request (temperature: at most 2)"
    failed = describe(_response(502, {"error": {"code": "model_failed", "message": "gave up", "job_id": "j7"}}), URL)
    assert failed == "the turn failed (502 model_failed): gave up; follow it with `parley jobs show j7`"
    assert describe(CLIError("plain"), URL) == "plain"
    html = error_from_response(httpx.Response(500, text="<html>\nboom\n</html>", request=httpx.Request("GET", URL)))
    assert exit_code(html) == errors.API_ERROR
    assert describe(html, URL) == "500 http_500: Internal Server Error"
