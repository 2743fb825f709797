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
        job_id = queue(http, "hello 🌍, ünïcode and \"quotes\"")  # the echo model answers with it
        wait_job(http, job_id)
        wait_until(lambda: receiver.delivered(), timeout=15, message="a delivery")
        got = receiver.delivered()[0]
        assert got.headers["content-type"] == "application/json"
        assert got.signed_by(hook["secret"]) and not got.signed_by("whsec_other")
        assert abs(int(got.headers["parley-signature"].split(",")[0][2:]) - time.time()) < 30
        assert got.event == {"type": "turn.finished", "job": http.get(f"/api/v1/jobs/{job_id}").json()}
        assert "🌍" in got.event["job"]["result"]["response"]
        def recorded() -> list[dict[str, Any]] | None:  # just after the receiver answered
            found = http.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"]
            return found if found and found[0]["status"] != "pending" else None

        deliveries = wait_until(recorded, timeout=10, message="the delivery recorded")
        assert [(d["id"], d["type"], d["job_id"], d["status"]) for d in deliveries] == [
            (got.headers["parley-delivery-id"], "turn.finished", job_id, "delivered")]  # fmt: skip
        assert [a["status_code"] for a in deliveries[0]["attempts"]] == [204]
    time.sleep(1)
    assert len(receiver.all()) == 1  # once


TOOL_ENV = {"PARLEY_TOOL_MODULES": "tests.fixture_tools"}


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _status(http: httpx.Client, job_id: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(http.get(f"/api/v1/jobs/{job_id}").json())
        return found["status"] == status

    wait_until(reached, timeout=30, message=f"job {job_id} to be {status}: {found}")
    return found


def _events_for(receiver: Receiver, job_id: str) -> list[dict[str, Any]]:
    return [got.event for got in receiver.delivered() if got.event["job"]["job_id"] == job_id]


def test_every_turn_end_is_delivered_to_the_webhooks_that_want_it(stack: Any, receiver: Receiver) -> None:
    env = {**FAST, **TOOL_ENV}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["bump"], approval=["bump"])
        every = register(http, receiver.url)
        failures = register(http, receiver.url + "?only=failed", events=["turn.failed"])

        _script(stack, {"reply": "I will bump it.", "tool_calls": [{"name": "bump", "arguments": {}}]})
        waiting = queue(http, "bump it", "s1")
        shown = _status(http, waiting, "waiting")
        wait_until(lambda: _events_for(receiver, waiting), timeout=15, message="turn.waiting")
        assert _events_for(receiver, waiting) == [{"type": "turn.waiting", "job": shown}]
        assert shown["pending"] and shown["pending"][0]["tool_name"] == "bump"
        assert http.post(f"/api/v1/jobs/{waiting}/cancel").status_code == 202

        _script(stack, {"status": 400})
        failed = queue(http, "fail please", "s2")
        assert wait_job(http, failed)["status"] == "failed"

        _script(stack, {"reply": "slowly", "delay_ms": 1500})
        finished = queue(http, "take your time", "s3")
        behind = queue(http, "never mind", "s3")  # queued behind it in its session's lane
        assert http.post(f"/api/v1/jobs/{behind}/cancel").json()["canceled"] is True
        assert wait_job(http, finished)["status"] == "finished"

        expected = {waiting: ["turn.waiting", "turn.canceled"], failed: ["turn.failed"], finished: ["turn.finished"],
                    behind: ["turn.canceled"]}  # fmt: skip

        def all_in() -> bool:
            return all(len(_events_for(receiver, job)) >= len(types) + (job == failed)
                       for job, types in expected.items())  # fmt: skip

        wait_until(all_in, timeout=20, message="every event")
        time.sleep(1)  # nothing more comes
        by_url: dict[str, list[Any]] = {}
        for got in receiver.delivered():
            by_url.setdefault(got.path, []).append(got)
        assert {got.event["type"] for got in by_url["/hook?only=failed"]} == {"turn.failed"}
        assert len(by_url["/hook?only=failed"]) == 1
        assert all(got.signed_by(failures["secret"]) for got in by_url["/hook?only=failed"])
        for job, types in expected.items():
            sent = [got for got in by_url["/hook"] if got.event["job"]["job_id"] == job]
            assert [got.event["type"] for got in sent] == types, job
            assert all(got.signed_by(every["secret"]) for got in sent)
            if types[-1] != "turn.waiting":
                assert sent[-1].event["job"] == http.get(f"/api/v1/jobs/{job}").json()
        assert len(receiver.all()) == len(receiver.delivered()) == 6


def test_a_failing_receiver_gets_every_event_once_it_recovers_though_a_worker_died(
    stack: Any, receiver: Receiver
) -> None:
    stack.start_web(env=FAST)
    stack.start_workers(2, env=FAST)
    receiver.mode = "fail"
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        hook = register(http, receiver.url)
        jobs = [queue(http, f"hello {n}", f"s{n}") for n in range(4)]
        for job in jobs:
            wait_job(http, job)
        wait_until(lambda: len(receiver.all()) >= 8, timeout=20, message="failed attempts")
        stack.workers[0].kill()  # SIGKILL, with deliveries pending (and maybe one of them leased)
        jobs += [queue(http, f"hello {n}", f"s{n}") for n in range(4, 6)]
        for job in jobs[4:]:
            wait_job(http, job)
        receiver.down()  # now connections are refused
        time.sleep(2)
        receiver.up()

        def delivered_jobs() -> set[str]:
            return {got.event["job"]["job_id"] for got in receiver.delivered()}

        wait_until(lambda: delivered_jobs() == set(jobs), timeout=60, message="every job delivered")
        received = receiver.all()
        assert all(got.signed_by(hook["secret"]) for got in received)
        ids_of: dict[str, set[str]] = {}
        bodies: dict[str, set[bytes]] = {}
        for got in received:
            ids_of.setdefault(got.event["job"]["job_id"], set()).add(got.headers["parley-delivery-id"])
            bodies.setdefault(got.headers["parley-delivery-id"], set()).add(got.body)
        assert all(len(ids) == 1 for ids in ids_of.values()), ids_of  # a duplicate has the same delivery id
        assert all(len(sent) == 1 for sent in bodies.values())  # the same body on every attempt
        assert all(got.event["type"] == "turn.finished" for got in received)

        def all_recorded() -> list[dict[str, Any]] | None:  # a 2xx is recorded just after the receiver answers
            found = http.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"]
            return found if all(d["status"] == "delivered" for d in found) else None

        deliveries = wait_until(all_recorded, timeout=30, message="every delivery recorded as delivered")
        assert sorted(d["job_id"] for d in deliveries) == sorted(jobs)
        assert all(d["next_attempt_at"] is None for d in deliveries)
        first = {d["job_id"]: d for d in deliveries}[jobs[0]]
        codes = [attempt.get("status_code") for attempt in first["attempts"]]
        assert codes[0] == 500 and codes[-1] == 204 and len(codes) >= 3, first
        assert any("error" in attempt for attempt in first["attempts"][:-1])
        created = [d["created_at"] for d in deliveries]
        assert created == sorted(created, reverse=True)  # newest first


def test_a_delivery_gives_up_in_the_end_and_a_deleted_webhook_gets_nothing_more(
    stack: Any, receiver: Receiver
) -> None:
    env = {**FAST, "PARLEY_WEBHOOK_GIVE_UP_S": "6"}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    receiver.mode = "fail"
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        kept = register(http, receiver.url)
        deleted = register(http, receiver.url + "?deleted")
        job_id = queue(http)
        wait_job(http, job_id)

        def to_deleted() -> int:
            return sum(1 for got in receiver.all() if got.path.endswith("?deleted"))

        wait_until(lambda: to_deleted() >= 2, timeout=15, message="attempts to the doomed webhook")
        assert http.delete(f"/api/v1/webhooks/{deleted['id']}").status_code == 204
        time.sleep(0.5)  # an attempt under way when it was deleted may still land
        after = to_deleted()

        def given_up() -> dict[str, Any] | None:
            found = http.get(f"/api/v1/webhooks/{kept['id']}/deliveries").json()["data"]
            return found[0] if found and found[0]["status"] == "failed" else None

        delivery = wait_until(given_up, timeout=30, message="the delivery to give up")
        assert delivery["next_attempt_at"] is None and len(delivery["attempts"]) >= 3
        assert all(attempt["status_code"] == 500 for attempt in delivery["attempts"])
        settled = len(receiver.all())
        time.sleep(2)
        assert len(receiver.all()) == settled  # nothing more, to either
        assert to_deleted() == after


def test_a_steer_request_that_joins_a_running_turn_is_sent_as_finished(stack: Any, receiver: Receiver) -> None:
    env = {**FAST, **TOOL_ENV}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    _script(stack, {"reply": "", "tool_calls": [{"name": "slow", "arguments": {"seconds": 2}}]})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["slow"])
        hook = register(http, receiver.url, events=["turn.finished"])
        running = queue(http, "question")
        _status(http, running, "started")
        time.sleep(0.5)  # its tool runs: the steer joins before the next model call
        response = http.post("/api/v1/chat/jobs", json={"message": "more detail", "session_id": "s1",
                                                        "on_busy": "steer"})  # fmt: skip
        assert response.status_code == 202 and response.json()["steering"] == running, response.text
        steer = response.json()["job_id"]
        assert wait_job(http, steer)["steered_into"] == running
        wait_job(http, running)
        wait_until(lambda: {got.event["job"]["job_id"] for got in receiver.delivered()} == {running, steer},
                   timeout=20, message="both turns' ends")  # fmt: skip
        sent = {got.event["job"]["job_id"]: got for got in receiver.delivered()}
        assert sent[steer].event == {"type": "turn.finished", "job": http.get(f"/api/v1/jobs/{steer}").json()}
        assert all(got.signed_by(hook["secret"]) for got in sent.values())


def test_one_tenant_s_slow_receiver_does_not_hold_the_other_tenants_deliveries(stack: Any) -> None:
    """A worker with 4 places for attempts, a tenant cap of 2: alice's receiver holds every request it gets, yet
    bob's delivery goes out while alice's are held (without the cap, alice's 4 would take every place)."""
    env = {**LOOPBACK, "PARLEY_WEBHOOK_CONCURRENCY": "4", "PARLEY_WEBHOOK_TENANT_CONCURRENCY": "2",
           "PARLEY_WEBHOOK_TIMEOUT_S": "60"}  # fmt: skip
    stack.start_web(env=env)
    stack.start_workers(env=env)
    slow, fast = Receiver(), Receiver()
    slow.mode = "hold"
    try:
        with client(stack.web_url, stack.api_key) as alice, client(stack.web_url, stack.api_keys["bob"]) as bob:
            create_agent(alice)
            create_agent(bob)
            register(alice, slow.url)
            register(bob, fast.url)
            for n in range(4):
                wait_job(alice, queue(alice, f"alice {n}", session_id=f"a{n}"))
            wait_until(lambda: slow.held == 2, timeout=15, message="two of alice's deliveries held")
            wait_job(bob, queue(bob, "bob"))
            wait_until(lambda: fast.delivered(), timeout=15, message="bob's delivery while alice's are held")
            assert slow.held == 2 and len(slow.all()) == 0  # alice's other two wait for a place of hers
            slow.release()
            wait_until(lambda: len(slow.delivered()) == 4, timeout=30, message="alice's four, once released")
            assert len(fast.delivered()) == 1
    finally:
        slow.down()
        fast.down()
