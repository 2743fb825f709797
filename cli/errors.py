"""Exit codes and the one-line messages the CLI prints for what went wrong. No I/O here."""

from __future__ import annotations

import errno
import socket

import httpx

from parley.client import (
    APIError,
    AuthenticationError,
    GatewayTimeoutError,
    ModelError,
    NotFoundError,
    ParleyError,
    ValidationError,
)
from parley.client import ConnectionError as ParleyConnectionError

OK = 0
API_ERROR = 1
USAGE = 2
AUTH_FAILED = 3
NOT_FOUND = 4
UNREACHABLE = 5
TURN_FAILED = 6
AWAITING_APPROVAL = 7

EXIT_CODES: dict[int, str] = {
    OK: "success",
    API_ERROR: "the API refused the request (the message names its error code), or another error",
    USAGE: "usage error: a wrong option or argument, or an unreadable agent file",
    AUTH_FAILED: "authentication failed (401): no API key, or one the service does not know",
    NOT_FOUND: "not found (404): no such agent, session or job for this key",
    UNREACHABLE: "cannot reach the server (connection refused, timed out, or lost)",
    TURN_FAILED: "the turn failed: the model failed (502), timed out (504), or the stream ended with an error",
    AWAITING_APPROVAL: "the turn waits for a person to approve a tool call, and there is no terminal to ask on",
}


class CLIError(Exception):
    """A problem the CLI found itself: printed as `parley: <message>`, exits with `code`."""

    def __init__(self, message: str, code: int = API_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class TurnFailed(CLIError):
    """A turn's stream ended with an `error` event."""

    def __init__(self, message: str, error_code: str | None, job_id: str | None) -> None:
        where = f" (job {job_id})" if job_id else ""
        super().__init__(f"the turn failed{where}: {message} [{error_code or 'error'}]", TURN_FAILED)
        self.error_code = error_code
        self.job_id = job_id


class AwaitingApproval(CLIError):
    """A tool call waits for a decision and nobody can be asked here: the turn is left waiting on the service."""

    def __init__(self, job_id: str | None, call_id: str | None, tool_name: str | None) -> None:
        super().__init__(
            f"job {job_id} waits for your approval of {tool_name} (call {call_id}): decide with "
            f"`parley jobs approve {job_id} {call_id}` or `parley jobs deny {job_id} {call_id}`, "
            "or run `parley chat` with --approve-all or --deny-all",
            AWAITING_APPROVAL,
        )
        self.job_id = job_id
        self.call_id = call_id


def exit_code(error: BaseException) -> int:
    """The exit code for an exception the SDK or the CLI raised."""
    if isinstance(error, CLIError):
        return error.code
    if isinstance(error, AuthenticationError):
        return AUTH_FAILED
    if isinstance(error, NotFoundError):
        return NOT_FOUND
    if isinstance(error, ModelError | GatewayTimeoutError):
        return TURN_FAILED
    if isinstance(error, ParleyConnectionError):
        return UNREACHABLE
    return API_ERROR


def connection_reason(error: BaseException) -> str:
    """A few words on why no answer came, read from the httpx/OS exceptions under the SDK's error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or getattr(current, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(current, socket.gaierror):
            return "unknown host"
        if isinstance(current, httpx.ConnectTimeout):
            return "connection timed out"
        if isinstance(current, httpx.TimeoutException):
            return "no answer in time"
        if isinstance(current, httpx.RemoteProtocolError):
            return "connection closed by the server"
        if isinstance(current, httpx.ConnectError):
            text = str(current).lower()
            if "refused" in text:
                return "connection refused"
            if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
                return "unknown host"
            return str(current) or "connection failed"
        current = current.__cause__ or current.__context__
    return "connection lost"


def describe(error: BaseException, base_url: str) -> str:
    """The one line (without the `parley: ` prefix) that explains `error` to a person."""
    if isinstance(error, CLIError):
        return error.message
    if isinstance(error, AuthenticationError):
        return (f"authentication failed at {base_url} ({error.code}: {error.message}); "
                "check PARLEY_API_KEY or --api-key")  # fmt: skip
    if isinstance(error, ParleyConnectionError):
        reason = connection_reason(error)
        if reason in ("connection refused", "unknown host", "connection timed out"):
            return f"cannot reach {base_url} ({reason}); is the server running? set PARLEY_URL or --url"
        return f"lost the connection to {base_url} ({reason})"
    if isinstance(error, ModelError | GatewayTimeoutError):
        job = f"; follow it with `parley jobs show {error.job_id}`" if error.job_id else ""
        return f"the turn failed ({error.status} {error.code}): {error.message}{job}"
    if isinstance(error, APIError):
        text = f"{error.status} {error.code}: {error.message}"
        details = error.details if isinstance(error, ValidationError) else []
        if details:
            text += " (" + "; ".join(f"{d.get('field')}: {d.get('message')}" for d in details) + ")"
        return text
    if isinstance(error, ParleyError):
        return str(error)
    return f"{type(error).__name__}: {error}"
