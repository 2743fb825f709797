"""api/errors.py: every failure leaves as `{"error": {"code", "message"}}` with the right status
and headers. A tiny app gets the handlers (`errors.install`) and routes that raise; the real app
is not built, since its lifespan connects to Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi import FastAPI, HTTPException, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from parley.api import errors
from parley.shared.errors import (
    Conflict,
    InvalidInput,
    ModelFailed,
    NotFound,
    NotReady,
    ParleyError,
    TimedOut,
    TooLarge,
    TooManyRequests,
    Unauthorized,
)  # fmt: skip


class Item(BaseModel):
    name: str
    count: int = Field(0, ge=0)
    tags: list[str] = Field(default_factory=list)


RAISED: dict[str, Exception] = {
    "not_found": NotFound("agent 'x' not found"),
    "conflict": Conflict("already there", job_id="job_1"),
    "invalid": InvalidInput("cursor is not one this API returned", field="cursor"),
    "unauthorized": Unauthorized("missing or unknown API key"),
    "too_many": TooManyRequests("the turn queue is full", retry_after_s=7),
    "too_large": TooLarge("too big"),
    "model_failed": ModelFailed("the model answered 500"),
    "not_ready": NotReady("not yet"),
    "timed_out": TimedOut("slow", job_id="job_2", status_url="/api/v1/jobs/job_2"),
    "base": ParleyError("plain"),
    "redis_connection": redis.ConnectionError("Connection refused"),
    "redis_timeout": redis.TimeoutError("Timeout reading from socket"),
    "redis_response": redis.ResponseError("OOM command not allowed"),
    "unexpected": RuntimeError("a bug"),
    "http_403": HTTPException(403, "no"),
    "http_418": HTTPException(418, "teapot"),
}


def build_app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/raise/{kind}")
    def raise_it(kind: str) -> None:
        raise RAISED[kind]

    @app.get("/araise/{kind}")
    async def araise_it(kind: str) -> None:
        raise RAISED[kind]

    @app.post("/items")
    def create_item(item: Item) -> dict[str, Any]:
        return item.model_dump()

    @app.get("/items")
    def list_items(limit: int = Query(10, ge=1, le=100)) -> dict[str, int]:
        return {"limit": limit}

    return app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(build_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("not_found", 404, "not_found"), ("conflict", 409, "conflict"), ("invalid", 422, "invalid_request"),
        ("unauthorized", 401, "unauthorized"), ("too_many", 429, "too_many_requests"),
        ("too_large", 413, "too_large"), ("model_failed", 502, "model_failed"), ("not_ready", 503, "not_ready"),
        ("timed_out", 504, "timeout"), ("base", 400, "bad_request"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("prefix", ["/raise", "/araise"])
def test_parley_errors(client: TestClient, prefix: str, kind: str, status: int, code: str) -> None:
    response = client.get(f"{prefix}/{kind}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = _error(response)
    assert error["code"] == code
    assert error["message"] == RAISED[kind].message  # type: ignore[attr-defined]


def test_extra_fields_go_into_the_error(client: TestClient) -> None:
    assert _error(client.get("/raise/conflict")) == {"code": "conflict", "message": "already there", "job_id": "job_1"}
    assert _error(client.get("/raise/invalid"))["field"] == "cursor"
    timed_out = _error(client.get("/raise/timed_out"))
    assert (timed_out["job_id"], timed_out["status_url"]) == ("job_2", "/api/v1/jobs/job_2")


def test_401_asks_for_a_bearer_token(client: TestClient) -> None:
    response = client.get("/raise/unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "retry-after" not in response.headers


def test_429_says_when_to_retry(client: TestClient) -> None:
    response = client.get("/raise/too_many")
    assert response.headers["retry-after"] == "7"
    assert "www-authenticate" not in response.headers


def test_other_errors_have_neither_header(client: TestClient) -> None:
    response = client.get("/raise/conflict")
    assert "retry-after" not in response.headers and "www-authenticate" not in response.headers


@pytest.mark.parametrize("kind", ["redis_connection", "redis_timeout", "redis_response"])
@pytest.mark.parametrize("prefix", ["/raise", "/araise"])
def test_redis_errors_are_503_with_retry_after(client: TestClient, prefix: str, kind: str,
                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    response = client.get(f"{prefix}/{kind}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    error = _error(response)
    assert error["code"] == "redis_unavailable"
    assert "Connection refused" not in error["message"]  # internals stay in the log
    assert any("Redis unavailable" in record.getMessage() for record in caplog.records)


def test_unexpected_errors_are_500_without_details(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    response = client.get("/raise/unexpected")
    assert response.status_code == 500
    error = _error(response)
    assert error["code"] == "internal_error"
    assert "a bug" not in error["message"]
    assert any(record.exc_info for record in caplog.records if record.name == "parley.api")


def test_http_exceptions_and_routing_errors(client: TestClient) -> None:
    assert _error(client.get("/raise/http_403")) == {"code": "forbidden", "message": "no"}
    teapot = client.get("/raise/http_418")
    assert (teapot.status_code, _error(teapot)["code"]) == (418, "error")
    missing = client.get("/no/such/route")
    assert (missing.status_code, _error(missing)["code"]) == (404, "not_found")
    wrong_method = client.delete("/items")
    assert (wrong_method.status_code, _error(wrong_method)["code"]) == (405, "method_not_allowed")
    assert wrong_method.headers["allow"]  # the HTTPException's headers are passed on


def test_invalid_json_is_400(client: TestClient) -> None:
    response = client.post("/items", content=b'{"name": "x",', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert _error(response) == {"code": "invalid_json", "message": "the request body is not valid JSON"}


def test_valid_body_passes(client: TestClient) -> None:
    response = client.post("/items", json={"name": "x", "count": 2})
    assert response.status_code == 200
    assert response.json() == {"name": "x", "count": 2, "tags": []}


def test_body_validation_is_422_with_fields(client: TestClient) -> None:
    response = client.post("/items", json={"count": -1, "tags": ["ok", 5]})
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid_request"
    fields = [detail["field"] for detail in error["details"]]
    assert fields == ["name", "count", "tags.1"]
    assert all(detail["message"] for detail in error["details"])
    assert error["message"].startswith("name: ")
    assert "count: " in error["message"]


def test_body_that_is_not_an_object(client: TestClient) -> None:
    response = client.post("/items", json=["a list"])
    assert response.status_code == 422
    error = _error(response)
    assert error["code"] == "invalid_request"
    assert error["details"][0]["field"] == ""
    assert error["message"].startswith("body: ")


def test_query_validation_is_422(client: TestClient) -> None:
    response = client.get("/items", params={"limit": "0"})
    assert response.status_code == 422
    assert _error(response)["details"][0]["field"] == "query.limit"
