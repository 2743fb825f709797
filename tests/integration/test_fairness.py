"""Fair between tenants (issue 11): one tenant's backlog waits in its own line, not in front of
another tenant's turns; each tenant has its own limit of open streams per web; and a turn script
given what Redis cannot decode writes nothing (real Redis, whose cjson refuses lone surrogates)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import httpx
import pytest
import redis
import redis.asyncio

from parley.local.redis_server import RedisServer
from parley.shared import events
from parley.shared.events import EventType
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.turns import TurnStore
from parley.shared.store.worker_turns import WorkerTurns
from tests.integration.helpers import client, create_agent, wait_job


def _started(http: httpx.Client, job_id: str) -> datetime:
    job = wait_job(http, job_id)
    assert job["status"] == "finished", job
    return datetime.fromisoformat(job["started_at"].replace("Z", "+00:00"))


def test_a_tenant_past_its_cap_does_not_hold_up_another(stack) -> None:
    env = {"PARLEY_TENANT_CONCURRENCY": "2"}
    stack.start_web(env=env)
    stack.start_workers(env={**env, "PARLEY_WORKER_CONCURRENCY": "2"})
    stack.model_server.control("options", {"first_chunk_delay_ms": 1500})
    r = stack.redis()
    with client(stack.web_url, "key-alice") as alice, client(stack.web_url, "key-bob") as bob:
        create_agent(alice)
        create_agent(bob)
        alice_jobs = [alice.post("/api/v1/chat/jobs", json={"message": f"alice {i}", "session_id": f"a{i}"})
                      .json()["job_id"] for i in range(8)]  # fmt: skip
        assert r.llen(keys.tenant_line("alice")) >= 4  # past its 2 places, alice's turns wait in her line
        bob_job = bob.post("/api/v1/chat/jobs", json={"message": "bob's one", "session_id": "b"}).json()["job_id"]
        bob_started = _started(bob, bob_job)
        alice_started = [_started(alice, job_id) for job_id in alice_jobs]
    assert bob_started < min(alice_started[2:]), (bob_started, alice_started)
    for tenant in ("alice", "bob"):
        assert int(r.get(keys.tenant_admitted(tenant)) or 0) == 0
        assert r.llen(keys.tenant_line(tenant)) == 0
        assert int(r.get(keys.inflight(tenant)) or 0) == 0


def _open(http: httpx.Client, path: str, **kwargs) -> httpx.Response:
    return http.send(http.build_request("GET", path, **kwargs), stream=True)


def test_streams_per_tenant_per_web(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_STREAMS_PER_TENANT": "2"})  # no worker: the turns stay queued, streams open
    r = stack.redis()
    with client(stack.web_url, "key-alice") as alice, client(stack.web_url, "key-bob") as bob:
        create_agent(alice)
        create_agent(bob)
        job = alice.post("/api/v1/chat/jobs", json={"message": "hi", "session_id": "s"}).json()["job_id"]
        bob_job = bob.post("/api/v1/chat/jobs", json={"message": "hi", "session_id": "s"}).json()["job_id"]
        held = [_open(alice, f"/api/v1/jobs/{job}/events") for _ in range(2)]
        try:
            assert [response.status_code for response in held] == [200, 200]
            refused = alice.get(f"/api/v1/jobs/{job}/events")
            assert refused.status_code == 429
            assert refused.headers["retry-after"].isdigit()
            assert refused.json()["error"]["code"] == "too_many_requests"
            # A chat stream past the limit is refused before its turn is queued.
            in_flight = r.get(keys.inflight("alice"))
            refused = alice.post("/api/v1/chat/stream", json={"message": "one more", "session_id": "new"})
            assert refused.status_code == 429
            assert r.get(keys.inflight("alice")) == in_flight
            assert r.exists(keys.session("alice", "new")) == 0
            # So is a streamed OpenAI-format completion.
            refused = alice.post("/v1/chat/completions", headers={"X-Parley-Session": "newer"}, json={
                "model": "Chef", "stream": True, "messages": [{"role": "user", "content": "one more"}]})  # fmt: skip
            assert refused.status_code == 429
            assert r.get(keys.inflight("alice")) == in_flight
            assert r.exists(keys.session("alice", "newer")) == 0
            # Bob is not limited by alice's streams.
            with bob.stream("GET", f"/api/v1/jobs/{bob_job}/events") as bobs:
                assert bobs.status_code == 200
            # Closing one of alice's streams frees its place.
            held.pop().close()
            deadline = time.monotonic() + 10
            while True:
                again = _open(alice, f"/api/v1/jobs/{job}/events")
                if again.status_code == 200 or time.monotonic() > deadline:
                    break
                again.close()
                time.sleep(0.1)
            held.append(again)
            assert again.status_code == 200
        finally:
            for response in held:
                response.close()


async def _start(turns: TurnStore, url: str, job_id: str) -> tuple[str, int, dict[str, str]]:
    """The worker's START_TURN of `job_id`, as a worker runs it (on its own event loop's client)."""
    aio = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        return await WorkerTurns(turns, aio).start("acme", job_id)
    finally:
        await aio.aclose()


def test_finish_given_a_lone_surrogate_writes_nothing_on_real_redis(redis_server: RedisServer,
                                                                     monkeypatch) -> None:  # fmt: skip
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    text = redis.Redis.from_url(redis_server.url, decode_responses=True)
    raw = redis.Redis.from_url(redis_server.url)
    try:
        raw.flushall()
        turns = TurnStore(RedisClients(text=text, raw=raw), Settings())  # type: ignore[call-arg]
        chef = {"id": "agent-chef", "name": "Chef", "first_message": "Hello"}
        job_id = turns.accept(tenant="acme", agent=chef, session_id="s", message="hi", images=[],
                              idempotency_key=None, request_hash="h").job_id  # fmt: skip
        raw.lrem(keys.rq_queue(turns.settings.queue_name), 0, job_id)
        _, attempt, _ = asyncio.run(_start(turns, redis_server.url, job_id))
        before = {key: (raw.type(key), raw.dump(key)) for key in raw.keys("*")}
        with pytest.raises(redis.ResponseError) as raised:
            turns.finish("acme", job_id, status="finished", attempt=attempt, result={"response": "ok"},
                         messages=['{"role": "assistant", "content": "ok"}'],
                         events_out=[events.encode(EventType.RESPONSE, content="ok\udc80"),
                                     events.encode(EventType.DONE)])  # fmt: skip
        after = {key: (raw.type(key), raw.dump(key)) for key in raw.keys("*")}
        assert after == before  # no message committed, no status, no event, lane and counters as they were
        assert "bad argument" in str(raised.value)
        assert turns.finish("acme", job_id, status="failed", attempt=None, error="x", error_code="turn_failed",
                            events_out=[events.encode(EventType.DONE)]) is True  # fmt: skip
        assert raw.get(keys.inflight("acme")) == b"0"
    finally:
        text.close()
        raw.close()


def test_request_rate_per_tenant_across_two_webs_and_keys(stack) -> None:
    stack.api_keys["alice2"] = "key-alice-2"
    stack.env["PARLEY_API_KEYS"] += ",alice:key-alice-2"
    stack.start_web(2, env={"PARLEY_TENANT_REQUESTS_PER_S": "5"})
    with client(stack.web_urls[0], "key-alice") as one, client(stack.web_urls[1], "key-alice-2") as two, \
            client(stack.web_urls[0], "key-bob") as bob:  # fmt: skip
        codes = []
        deadline = time.monotonic() + 10
        while 429 not in codes and time.monotonic() < deadline:
            window = [(one if i % 2 else two).get("/api/v1/agents") for i in range(8)]  # two webs, two keys
            codes = [response.status_code for response in window]
        refused = next(response for response in window if response.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_requests"
        assert bob.get("/api/v1/agents").status_code == 200  # bob is not limited by alice
        time.sleep(1.1)
        assert one.get("/api/v1/agents").status_code == 200  # the next second has room again
