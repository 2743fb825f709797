"""Webhooks end to end on real Redis, web and worker processes, with a real HTTP receiver on 127.0.0.1
(tests/webhook_receiver.py): registration (the secret shown once, validation, private addresses, tenants, the
cap), every turn end delivered signed with the job as `GET /api/v1/jobs/{id}` shows it, and at-least-once
delivery through a receiver that fails and a worker that is SIGKILLed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, wait_job
from tests.webhook_receiver import Receiver

LOOPBACK = {"PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1"}
FAST = {**LOOPBACK, "PARLEY_WEBHOOK_BACKOFF_S": "0.2", "PARLEY_WEBHOOK_BACKOFF_CAP_S": "1",
        "PARLEY_WEBHOOK_TIMEOUT_S": "2", "PARLEY_MODEL_MAX_RETRIES": "0"}  # fmt: skip
EVENTS = ["turn.finished", "turn.failed", "turn.canceled", "turn.waiting"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.down()


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return response.status_code, body["error"]["code"]


def register(http: httpx.Client, url: str, **extra: Any) -> dict[str, Any]:
    created = http.post("/api/v1/webhooks", json={"url": url, **extra})
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


def queue(http: httpx.Client, message: str = "hello", session_id: str = "s1") -> str:
    response = http.post("/api/v1/chat/jobs", json={"message": message, "session_id": session_id})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def test_registration_shows_the_secret_once_and_refuses_what_it_must(stack: Any, receiver: Receiver) -> None:
    stack.start_web(env={**LOOPBACK, "PARLEY_MAX_WEBHOOKS": "2"})
    with client(stack.web_url, stack.api_key) as http:
        created = register(http, receiver.url)
        assert set(created) == {"id", "url", "events", "secret", "created_at"}
        assert created["events"] == EVENTS and created["url"] == receiver.url
        assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
        shown = {key: value for key, value in created.items() if key != "secret"}
        assert http.get(f"/api/v1/webhooks/{created['id']}").json() == shown
        assert http.get("/api/v1/webhooks").json() == {"data": [shown]}
        assert created["secret"] not in http.get("/api/v1/webhooks").text
        assert http.get(f"/api/v1/webhooks/{created['id']}/deliveries").json() == {"data": []}

        second = register(http, receiver.url, events=["turn.failed", "turn.failed"])
        assert second["events"] == ["turn.failed"] and second["secret"] != created["secret"]
        assert error(http.post("/api/v1/webhooks", json={"url": receiver.url})) == (409, "too_many_webhooks")

        cases: list[tuple[dict[str, Any], tuple[int, str]]] = [
            ({"url": receiver.url, "events": ["turn.started"]}, (422, "invalid_request")),
            ({"url": receiver.url, "events": []}, (422, "invalid_request")),
            ({"url": receiver.url, "events": "turn.finished"}, (422, "invalid_request")),
            ({"url": "ftp://example.com/hook"}, (422, "invalid_request")),
            ({"url": "not a url"}, (422, "invalid_request")),
            ({"url": "https://user:pw@example.com/hook"}, (422, "invalid_request")),
            ({"url": receiver.url, "secret": "mine"}, (422, "invalid_request")),
            ({}, (422, "invalid_request")),
        ]  # fmt: skip
        for body, expected in cases:
            assert error(http.post("/api/v1/webhooks", json=body)) == expected, body
        assert len(http.get("/api/v1/webhooks").json()["data"]) == 2

        assert http.delete(f"/api/v1/webhooks/{second['id']}").status_code == 204
        assert error(http.get(f"/api/v1/webhooks/{second['id']}")) == (404, "not_found")
        assert error(http.delete(f"/api/v1/webhooks/{second['id']}")) == (404, "not_found")
        assert error(http.get(f"/api/v1/webhooks/{second['id']}/deliveries")) == (404, "not_found")

    with client(stack.web_url, stack.api_keys["bob"]) as http:  # another tenant sees none of it
        assert http.get("/api/v1/webhooks").json() == {"data": []}
        assert error(http.get(f"/api/v1/webhooks/{created['id']}")) == (404, "not_found")
        assert error(http.delete(f"/api/v1/webhooks/{created['id']}")) == (404, "not_found")
        assert error(http.get(f"/api/v1/webhooks/{created['id']}/deliveries")) == (404, "not_found")
        register(http, receiver.url)  # and its cap is its own


def test_private_addresses_are_refused_unless_allowed(stack: Any, receiver: Receiver) -> None:
    stack.start_web()  # no private networks allowed
    with client(stack.web_url, stack.api_key) as http:
        for url in (receiver.url, f"http://localhost:{receiver.port}/hook", "http://169.254.169.254/latest",
                    "http://10.0.0.1/hook", "http://[::ffff:127.0.0.1]:1/hook"):  # fmt: skip
            assert error(http.post("/api/v1/webhooks", json={"url": url})) == (422, "private_network"), url
        assert error(http.post("/api/v1/webhooks", json={"url": "http://no-such-host.invalid/hook"})) == (
            422, "unresolvable_host")  # fmt: skip
        assert http.get("/api/v1/webhooks").json() == {"data": []}


def test_a_finished_turn_is_delivered_signed_with_the_job_as_the_api_shows_it(stack: Any, receiver: Receiver) -> None:
    stack.start_web(env=FAST)
    stack.start_workers(env=FAST)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        hook = register(http, receiver.url)
        job_id = queue(http)
        wait_job(http, job_id)
        wait_until(lambda: receiver.delivered(), timeout=15, message="a delivery")
        got = receiver.delivered()[0]
        assert got.headers["content-type"] == "application/json"
        assert got.signed_by(hook["secret"]) and not got.signed_by("whsec_other")
        assert abs(int(got.headers["parley-signature"].split(",")[0][2:]) - time.time()) < 30
        assert got.event == {"type": "turn.finished", "job": http.get(f"/api/v1/jobs/{job_id}").json()}
        deliveries = http.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"]
        assert [(d["id"], d["type"], d["job_id"], d["status"]) for d in deliveries] == [
            (got.headers["parley-delivery-id"], "turn.finished", job_id, "delivered")]  # fmt: skip
        assert [a["status_code"] for a in deliveries[0]["attempts"]] == [204]
    time.sleep(1)
    assert len(receiver.all()) == 1  # once
