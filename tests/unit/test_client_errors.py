"""Error mapping and the retry policy of the SDK, against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from parley.client import (
    APIError,
    AsyncParley,
    AuthenticationError,
    ConflictError,
    ConnectionError,
    GatewayTimeoutError,
    ModelError,
    NotFoundError,
    Parley,
    ParleyError,
    PayloadTooLargeError,
    RateLimitError,
    UnavailableError,
    ValidationError,
    error_from_response,
)
from parley.client.errors import retry_after_seconds

Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, message: str = "nope", headers: dict[str, str] | None = None,
          **extra: Any) -> httpx.Response:  # fmt: skip
    return httpx.Response(status, json={"error": {"code": code, "message": message, **extra}}, headers=headers)


def make_client(handler: Handler, **options: Any) -> Parley:
    client = Parley("http://parley.test", "key", http_client=httpx.Client(transport=httpx.MockTransport(handler)),
                    **options)  # fmt: skip
    client.retry_backoff_s = 0.0
    return client


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every delay the sync client sleeps, without sleeping."""
    slept: list[float] = []
    monkeypatch.setattr("parley.client._sync.time.sleep", slept.append)
    return slept


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_json", ValidationError),
        (401, "unauthorized", AuthenticationError),
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (413, "too_large", PayloadTooLargeError),
        (422, "invalid_request", ValidationError),
        (429, "too_many_requests", RateLimitError),
        (502, "model_failed", ModelError),
        (503, "redis_unavailable", UnavailableError),
        (504, "timeout", GatewayTimeoutError),
        (500, "internal_error", APIError),
        (418, "teapot", APIError),
    ],
)
def test_each_status_maps_to_its_class(status: int, code: str, cls: type[APIError]) -> None:
    mapped = error_from_response(error(status, code, "the reason", job_id="job_1"))
    assert type(mapped) is cls and isinstance(mapped, APIError) and isinstance(mapped, ParleyError)
    assert (mapped.status, mapped.code, mapped.message) == (status, code, "the reason")
    assert mapped.body == {"error": {"code": code, "message": "the reason", "job_id": "job_1"}}
    assert mapped.job_id == "job_1" and str(mapped) == f"{status} {code}: the reason"


def test_validation_details_and_retry_after() -> None:
    details = [{"field": "name", "message": "too short"}]
    invalid = error_from_response(error(422, "invalid_request", details=details))
    assert isinstance(invalid, ValidationError) and invalid.details == details
    limited = error_from_response(error(429, "too_many_requests", headers={"Retry-After": "7"}))
    assert isinstance(limited, RateLimitError) and limited.retry_after == 7.0
    assert isinstance(error_from_response(error(503, "not_ready")), UnavailableError)
    assert error_from_response(error(503, "not_ready")).job_id is None


def test_a_body_that_is_not_the_api_shape_still_maps() -> None:
    html = error_from_response(httpx.Response(502, text="<html>Bad Gateway</html>"))
    assert isinstance(html, ModelError) and html.code == "http_502" and html.message == "Bad Gateway"
    assert html.body == "<html>Bad Gateway</html>"
    empty = error_from_response(httpx.Response(404))
    assert isinstance(empty, NotFoundError) and empty.message == "Not Found"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"Retry-After": "0.5"}) == 0.5
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (retry_after_seconds({"Retry-After": in_ten}) or 0) <= 10
    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert retry_after_seconds({"Retry-After": past}) == 0.0


def test_429_is_retried_after_the_delay_the_api_asked_for(sleeps: list[float]) -> None:
    answers = [error(429, "too_many_requests", headers={"Retry-After": "2"}),
               httpx.Response(200, json=[])]  # fmt: skip
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    with make_client(handler) as client:
        assert client.agents.list() == []
    assert len(seen) == 2 and sleeps == [2.0]


def test_503_without_retry_after_backs_off_and_gives_up_after_max_retries(sleeps: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(503, "redis_unavailable")

    with make_client(handler, max_retries=3) as client, pytest.raises(UnavailableError):
        client.jobs.get("job_1")
    assert calls == 4 and len(sleeps) == 3


def test_a_retry_after_beyond_the_bound_is_raised_at_once(sleeps: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(429, "too_many_requests", headers={"Retry-After": "3600"})

    with make_client(handler) as client, pytest.raises(RateLimitError) as raised:
        client.chat("hi")
    assert calls == 1 and sleeps == [] and raised.value.retry_after == 3600.0


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 422, 500, 502, 504])
def test_other_errors_are_not_retried(status: int, sleeps: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(status, "x")

    with make_client(handler) as client, pytest.raises(APIError) as raised:
        client.chat("hi")
    assert calls == 1 and raised.value.status == status


def test_chat_retries_keep_one_idempotency_key_and_calls_get_new_ones(sleeps: list[float]) -> None:
    keys: list[str] = []
    answers = [error(503, "not_ready", headers={"Retry-After": "0"})]

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if answers:
            return answers.pop(0)
        if len(keys) == 2:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json={"response": "echo: hi", "agent_id": "a", "agent_name": "A",
                                         "session_id": "s", "job_id": "job_1"})  # fmt: skip

    with make_client(handler) as client:
        assert client.chat("hi").response == "echo: hi"
        assert len(keys) == 3 and len(set(keys)) == 1
        client.chat("hi")
        client.chat("hi", idempotency_key="mine")
    assert len(set(keys)) == 3 and keys[-1] == "mine"


def test_a_read_failure_is_not_retried_for_a_create_but_a_connect_failure_is(sleeps: list[float]) -> None:
    failures = [httpx.ConnectError("refused")]
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        if calls == 2:
            return httpx.Response(201, json={"id": "a1", "name": "Chef", "model": "m", "created_at": "t"})
        raise httpx.ReadError("reset")

    with make_client(handler) as client:
        assert client.agents.create("Chef").id == "a1"
        assert calls == 2
        with pytest.raises(ConnectionError) as raised:
            client.agents.create("Chef")
        assert calls == 3 and isinstance(raised.value.__cause__, httpx.ReadError)


def test_transport_failures_of_reads_are_retried_then_raised_as_connection_error(sleeps: list[float]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("slow")

    with make_client(handler, max_retries=1) as client, pytest.raises(ConnectionError):
        client.sessions.get("s")
    assert calls == 2


def test_async_client_retries_and_maps_errors_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr("parley.client._async.anyio.sleep", fake_sleep)
    answers = [error(429, "too_many_requests", headers={"Retry-After": "1"}), error(404, "not_found", "no agent")]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    async def run() -> None:
        transport = httpx.MockTransport(handler)
        async with AsyncParley("http://parley.test", "key", http_client=httpx.AsyncClient(transport=transport)) as c:
            with pytest.raises(NotFoundError) as raised:
                await c.agents.get("nobody")
            assert raised.value.message == "no agent"

    asyncio.run(run())
    assert slept == [1.0]
