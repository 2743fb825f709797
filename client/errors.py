"""The SDK's exceptions, and the one function that turns an HTTP error response into one of them.

    ParleyError                      anything this SDK raises on purpose
    ├── APIError                     the API answered with an error status (status, code, message, body)
    │   ├── ValidationError          400, 422 (`details`: [{field, message}])
    │   ├── AuthenticationError      401
    │   ├── NotFoundError            404
    │   ├── ConflictError            409
    │   ├── PayloadTooLargeError     413
    │   ├── RateLimitError           429 (`retry_after` seconds)
    │   ├── ModelError               502 (`job_id`)
    │   ├── UnavailableError         503 (`retry_after` seconds)
    │   └── GatewayTimeoutError      504 (`job_id`: the turn goes on; poll it)
    ├── ConnectionError              no answer: connect/read failures, timeouts, a stream that could not be resumed
    ├── StreamError                  a stream broke the protocol (an event that is not a JSON object with a type)
    └── WaitTimeoutError             `jobs.wait` gave up before the job ended (`job`: its last state)

`ConnectionError` is this SDK's class (it shadows the builtin inside `parley.client`); the
underlying httpx exception is its `__cause__`.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from parley.shared.schema import JobPublic


class ParleyError(Exception):
    """Base of every exception the SDK raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIError(ParleyError):
    """The API answered with an error status.

    `code` is the API's slug (`not_found`, `conflict`, ...), `message` its sentence for a person,
    `body` the parsed JSON body (or the raw text when it was not JSON), `headers` the response's.
    """

    def __init__(self, status: int, code: str, message: str, body: Any = None,
                 headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def error(self) -> dict[str, Any]:
        """The `error` object of the body (`{}` when the body had none)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"]  # type: ignore[no-any-return]
        return {}

    @property
    def job_id(self) -> str | None:
        """The turn's job id, where the API names one (502, 504, a canceled `/chat`)."""
        value = self.error.get("job_id")
        return value if isinstance(value, str) else None


class ValidationError(APIError):
    """400 (the body is not JSON) or 422 (a field is missing or wrong)."""

    @property
    def details(self) -> list[dict[str, Any]]:
        """`[{field, message}, ...]` for a 422; empty otherwise."""
        value = self.error.get("details")
        return list(value) if isinstance(value, list) else []


class AuthenticationError(APIError):
    """401: no API key, or one the service does not know."""


class NotFoundError(APIError):
    """404: unknown, or another tenant's."""


class ConflictError(APIError):
    """409: a name or session id taken, a session bound to another agent, an Idempotency-Key reused
    for a different request, a file agent changed, or a `/chat` turn that was canceled."""


class PayloadTooLargeError(APIError):
    """413: a message, image or body over its limit."""


class _RetryAfter(APIError):
    @property
    def retry_after(self) -> float | None:
        """Seconds the API asked to wait (`Retry-After`), or None when it named none."""
        return retry_after_seconds(self.headers)


class RateLimitError(_RetryAfter):
    """429: the queue is full or a limit of the key or tenant was reached. Nothing was enqueued."""


class ModelError(APIError):
    """502: the model failed after its retries (`job_id` names the failed turn)."""


class UnavailableError(_RetryAfter):
    """503: the service cannot reach its data store, or is not ready."""


class GatewayTimeoutError(APIError):
    """504: `/chat` waited too long, or the model timed out. The turn may go on: `client.jobs.wait(err.job_id)`."""


class ConnectionError(ParleyError):  # shadows the builtin on purpose: the documented name
    """No HTTP answer: the connection failed, timed out, or dropped (and could not be resumed)."""


class StreamError(ParleyError):
    """An event stream broke the protocol (an event whose data is not a JSON object with a `type`)."""


class WaitTimeoutError(ParleyError):
    """`jobs.wait` gave up before the job reached a final status; `job` is its last known state."""

    def __init__(self, message: str, job: JobPublic) -> None:
        super().__init__(message)
        self.job = job


_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
    502: ModelError,
    503: UnavailableError,
    504: GatewayTimeoutError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error response whose body has been read (`read()`/`aread()`).

    The class follows the status; `code` and `message` come from the API's
    `{"error": {"code", "message", ...}}` body, with fallbacks for bodies from elsewhere (a proxy's
    HTML page, an empty 502).
    """
    body: Any
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code")) if isinstance(error, dict) and error.get("code") else f"http_{response.status_code}"
    if isinstance(error, dict) and error.get("message"):
        message = str(error["message"])
    else:
        message = response.reason_phrase or (body if isinstance(body, str) and body else "error")
    cls = _BY_STATUS.get(response.status_code, APIError)
    return cls(response.status_code, code, message, body, response.headers)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
