"""Chat routes refuse with 429 and Retry-After, queueing nothing, past each limit; limits hold
across web processes because they live in Redis."""

from __future__ import annotations

from tests.integration.helpers import client, create_agent, wait_job

COUNTERS = ("parley:rate:", "parley:metric:", "parley:web-streams")
"""Not what a refused request creates: the rate window, and metrics each web writes once a second."""


def _keys(stack) -> set[str]:
    return {key for key in stack.redis().scan_iter(match="parley:*", count=1000) if not key.startswith(COUNTERS)}


def test_queue_depth_limit(stack) -> None:
    stack.start_web(2, env={"PARLEY_MAX_QUEUE_DEPTH": "2"})  # no worker: turns stay queued
    one, two = (client(url, stack.api_key) for url in stack.web_urls)
    with one, two:
        create_agent(one)
        queued = [one.post("/api/v1/chat/jobs", json={"message": "a", "session_id": "a"}),
                  two.post("/api/v1/chat/jobs", json={"message": "b", "session_id": "b"})]  # fmt: skip
        assert [response.status_code for response in queued] == [202, 202]
        before = _keys(stack)
        for http, route in [(one, "/api/v1/chat/jobs"), (two, "/api/v1/chat"), (one, "/api/v1/chat/stream")]:
            refused = http.post(route, json={"message": "c", "session_id": "c"})
            assert refused.status_code == 429, route
            assert refused.headers["retry-after"].isdigit()
            assert refused.json()["error"]["code"] == "too_many_requests"
        assert _keys(stack) == before
        stack.start_workers()
        for response in queued:  # the queue has room once the worker took them
            wait_job(one, response.json()["job_id"])
        assert one.post("/api/v1/chat", json={"message": "c", "session_id": "c"}).status_code == 200


def test_turns_in_flight_per_tenant(stack) -> None:
    stack.start_web(2, env={"PARLEY_MAX_TURNS_IN_FLIGHT": "2"})
    stack.start_workers()
    stack.model_server.control("options", {"chunk_delay_ms": 200})
    with client(stack.web_urls[0], "key-alice") as alice, client(stack.web_urls[1], "key-alice") as alice2, \
            client(stack.web_urls[1], "key-bob") as bob:  # fmt: skip
        create_agent(alice)
        create_agent(bob)
        jobs = [alice.post("/api/v1/chat/jobs", json={"message": "slow one", "session_id": f"s{i}"}).json()
                for i in range(2)]  # fmt: skip
        refused = alice2.post("/api/v1/chat/jobs", json={"message": "third", "session_id": "s3"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert bob.post("/api/v1/chat/jobs", json={"message": "bob is not limited by alice"}).status_code == 202
        for job in jobs:
            wait_job(alice, job["job_id"])
        assert alice2.post("/api/v1/chat/jobs", json={"message": "third", "session_id": "s3"}).status_code == 202


def test_rate_limit_per_key_across_two_webs(stack) -> None:
    stack.start_web(2, env={"PARLEY_RATE_LIMIT_TURNS": "3", "PARLEY_RATE_WINDOW_S": "30"})
    with client(stack.web_urls[0], "key-alice") as one, client(stack.web_urls[1], "key-alice") as two, \
            client(stack.web_urls[0], "key-bob") as bob:  # fmt: skip
        create_agent(one)
        create_agent(bob)
        codes = [(one if i % 2 else two).post("/api/v1/chat/jobs", json={"message": f"m{i}"}).status_code
                 for i in range(5)]  # fmt: skip
        assert codes == [202, 202, 202, 429, 429]
        refused = one.post("/api/v1/chat/jobs", json={"message": "again"})
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert bob.post("/api/v1/chat/jobs", json={"message": "other key"}).status_code == 202
