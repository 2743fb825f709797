"""`POST /api/v1/sessions/{id}/summary` within the chat routes' limits, one at a time per session, on the
real stack: past the queue depth, the tenant's turns in flight or the key's rate it answers 429 with
Retry-After; while the session's summary runs, 409 `summary_running`. A refused request queues nothing."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import redis

from parley.shared.settings import Settings
from parley.shared.store import keys
from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, wait_job

QUEUE = keys.rq_queue(Settings.model_fields["queue_name"].default)
TIMEOUT_S = Settings.model_fields["summary_timeout_s"].default


def _session(http: httpx.Client, session_id: str) -> None:
    response = http.post("/api/v1/sessions", json={"agent": "Chef", "session_id": session_id})
    assert response.status_code == 201, response.text


def _state(r: redis.Redis) -> dict[str, Any]:
    """What admitting a summary writes: RQ's queue and jobs, the report locks, the rate and in-flight counters."""
    counters = {key: r.get(key) for pattern in ("parley:summary-report:*", "parley:rate:*", "parley:inflight:*")
                for key in r.scan_iter(match=pattern)}  # fmt: skip
    return {"queue": r.lrange(QUEUE, 0, -1), "jobs": set(r.scan_iter(match="rq:job:*")), **counters}


def _refused(http: httpx.Client, r: redis.Redis, session_id: str, status: int, code: str) -> httpx.Response:
    """POST the summary, expect a refusal, and show that it changed nothing."""
    before = _state(r)
    response = http.post(f"/api/v1/sessions/{session_id}/summary")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert _state(r) == before  # nothing queued, counted or locked
    return response


def _admitted(pool: ThreadPoolExecutor, http: httpx.Client, r: redis.Redis, tenant: str,
              session_id: str) -> Future[httpx.Response]:  # fmt: skip
    """POST the summary in the background; returns once its job is admitted (it holds the session's lock)."""
    future = pool.submit(http.post, f"/api/v1/sessions/{session_id}/summary")
    deadline = time.monotonic() + 10
    while not r.exists(keys.summary_report(tenant, session_id)):
        assert not future.done(), future.result().text
        assert time.monotonic() < deadline, "the summary was not admitted"
        time.sleep(0.02)
    return future


def test_refused_while_the_queue_is_full(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_QUEUE_DEPTH": "2"})  # no worker: turns stay queued
    r = stack.redis()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        jobs = [http.post("/api/v1/chat/jobs", json={"message": "hi", "session_id": s}).json() for s in "ab"]
        assert r.llen(QUEUE) == 2
        refused = _refused(http, r, "a", 429, "too_many_requests")
        assert refused.headers["retry-after"] == "2"
        stack.start_workers()
        for job in jobs:
            wait_job(http, job["job_id"])
        assert http.post("/api/v1/sessions/a/summary").status_code == 200


def test_refused_while_the_tenant_has_too_many_turns_in_flight_and_others_are_not(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_TURNS_IN_FLIGHT": "1"})  # no worker yet: alice's turn stays in flight
    r = stack.redis()
    with client(stack.web_url, "key-alice") as alice, client(stack.web_url, "key-bob") as bob, \
            ThreadPoolExecutor(1) as pool:  # fmt: skip
        create_agent(alice)
        create_agent(bob)
        job = alice.post("/api/v1/chat/jobs", json={"message": "hi", "session_id": "a"}).json()
        refused = _refused(alice, r, "a", 429, "too_many_requests")
        assert refused.headers["retry-after"] == "1"
        _session(bob, "b")
        bobs = _admitted(pool, bob, r, "bob", "b")  # bob's limit is his own
        stack.start_workers()
        assert bobs.result(timeout=60).status_code == 200
        wait_job(alice, job["job_id"])
        assert alice.post("/api/v1/sessions/a/summary").status_code == 200


def test_counts_against_the_keys_rate_like_a_turn(stack) -> None:
    stack.start_web(env={"PARLEY_RATE_LIMIT_TURNS": "2", "PARLEY_RATE_WINDOW_S": "30"})
    stack.start_workers()
    r = stack.redis()
    with client(stack.web_url, "key-alice") as alice, client(stack.web_url, "key-bob") as bob:
        create_agent(alice)
        create_agent(bob)
        _session(alice, "a")
        assert alice.post("/api/v1/sessions/a/summary").status_code == 200  # 1 of 2
        job = alice.post("/api/v1/chat/jobs", json={"message": "hi", "session_id": "a"}).json()  # 2 of 2
        wait_job(alice, job["job_id"])
        refused = _refused(alice, r, "a", 429, "too_many_requests")
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert alice.post("/api/v1/chat/jobs", json={"message": "again", "session_id": "a"}).status_code == 429
        _session(bob, "b")
        assert bob.post("/api/v1/sessions/b/summary").status_code == 200  # another key, its own count


def test_one_summary_per_session_at_a_time(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_MODEL_MAX_RETRIES": "0"})
    r = stack.redis()
    with client(stack.web_url, stack.api_key) as http, ThreadPoolExecutor(1) as pool:
        create_agent(http)
        _session(http, "s1")
        _session(http, "s2")
        stack.model_server.control("script", {"delay_ms": 3000, "reply": "The first summary."})
        first = _admitted(pool, http, r, "alice", "s1")
        lock_ms = r.pttl(keys.summary_report("alice", "s1"))
        # s1's job holds the scripted (slow) answer before s2's job can ask the model
        wait_until(lambda: stack.model_server.control("stats")["requests"] >= 1, timeout=10)
        assert TIMEOUT_S * 1000 < lock_ms <= (TIMEOUT_S + 60) * 1000  # expires by itself if its job dies
        _refused(http, r, "s1", 409, "summary_running")
        assert http.post("/api/v1/sessions/s2/summary").status_code == 200  # another session is not held
        answer = first.result(timeout=60)
        assert answer.status_code == 200 and answer.json()["summary"] == {"text": "The first summary."}
        assert r.exists(keys.summary_report("alice", "s1")) == 0  # released when its job ended
        assert http.post("/api/v1/sessions/s1/summary").status_code == 200
        stack.model_server.control("script", {"status": 500})
        assert http.post("/api/v1/sessions/s1/summary").status_code == 502
        assert http.post("/api/v1/sessions/s1/summary").status_code == 200  # a failed job frees it too
