"""Processes dying, Redis going away: nothing a client was told is lost."""

from __future__ import annotations

import json
import threading
import time

import httpx
import redis
from rq import Queue

from parley.shared.store import keys
from tests.integration.helpers import client, create_agent, messages, model_requests, wait_job
from tests.sse_client import Event, collect, iter_events


def _stream_in_thread(http: httpx.Client, url: str, events: list[Event], **kwargs) -> threading.Thread:
    def read() -> None:
        try:
            with http.stream("GET", url, **kwargs) as response:
                for event in iter_events(response):
                    events.append(event)
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_worker_killed_mid_turn_is_retried_and_commits_once(stack) -> None:
    stack.start_web()
    [worker] = stack.start_workers()
    stack.model_server.control("options", {"chunk_delay_ms": 150})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        assert http.post("/api/v1/chat", json={"message": "remember me", "session_id": "k"}).status_code == 200
        job = http.post("/api/v1/chat/jobs", json={"message": "a slow answer with many words", "session_id": "k"})
        job_id = job.json()["job_id"]
        events: list[Event] = []
        reader = _stream_in_thread(http, f"/api/v1/jobs/{job_id}/events", events)
        _wait_for(lambda: any(e.type == "delta" for e in events))
        worker.kill()
        started = time.monotonic()
        stack.start_workers()
        reader.join(timeout=60)
        assert not reader.is_alive()
        assert time.monotonic() - started < 60
        types = [e.type for e in events]
        assert types[-2:] == ["response", "done"]
        retry = next(e for e in events if e.type == "status" and e.data["message"] == "retrying")
        assert retry.data["attempt"] == 2
        after_retry = events[events.index(retry) + 1:]
        assert "".join(e.data["content"] for e in after_retry if e.type == "delta") == events[-2].data["content"]
        record = wait_job(http, job_id)
        assert record["status"] == "finished"
        history = messages(http, "k")
        assert [m["content"] for m in history if m["job_id"] == job_id] == [
            "a slow answer with many words", "echo: a slow answer with many words | earlier: remember me",
        ]  # fmt: skip
        nxt = http.post("/api/v1/chat", json={"message": "next", "session_id": "k"}).json()
        assert nxt["response"] == "echo: next | earlier: remember me / a slow answer with many words"


def test_a_turn_taken_by_a_worker_that_died_before_starting_it_runs_in_its_place(stack) -> None:
    """rq's dequeue moves a job to the queue's intermediate list, and the worker starts it a moment later: a worker
    SIGKILLed in between leaves it there. This test's own process plays that worker (rq's own dequeue, then nothing).
    The turn must still run, once, and the turn behind it in the session after it, with the tenant's places given
    back. (rq alone fails such a job after a minute without telling Parley, and the session was stuck for good.)"""
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        dropped = http.post("/api/v1/chat/jobs", json={"message": "taken, then dropped", "session_id": "d"})
        dropped_id = dropped.json()["job_id"]
        raw = redis.Redis.from_url(stack.redis_url)
        try:
            taken = Queue.dequeue_any([Queue("parley-turns", connection=raw)], None, connection=raw)
            assert taken is not None and taken[0].id == dropped_id
        finally:
            raw.close()
        behind = http.post("/api/v1/chat/jobs", json={"message": "the next one", "session_id": "d"}).json()["job_id"]
        stack.start_workers(env={"PARLEY_MAINTENANCE_INTERVAL_S": "1", "PARLEY_HEARTBEAT_TTL_S": "3"})
        for job_id in (dropped_id, behind):
            assert wait_job(http, job_id, timeout=30)["status"] == "finished", job_id
        history = messages(http, "d")
        assert [m["content"] for m in history if m["role"] == "user"] == ["taken, then dropped", "the next one"]
        assert stack.redis().get(keys.tenant_admitted("alice")) in (None, "0")


def test_web_killed_mid_stream_client_resumes_on_another_web(stack) -> None:
    web_one, web_two = stack.start_web(2)
    stack.start_workers()
    stack.model_server.control("options", {"chunk_delay_ms": 100})
    with client(web_one.url, stack.api_key) as one, client(web_two.url, stack.api_key) as two:
        create_agent(one)
        seen: list[Event] = []
        try:
            story = {"message": "tell me a long story about the sea", "session_id": "w"}
            with one.stream("POST", "/api/v1/chat/stream", json=story) as response:
                for event in iter_events(response):
                    seen.append(event)
                    if sum(e.type == "delta" for e in seen) == 3:
                        web_one.kill()
        except httpx.HTTPError:
            pass
        assert sum(e.type == "delta" for e in seen) >= 3
        job_id = seen[0].data["job_id"]
        rest = collect(two, "GET", f"/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": seen[-1].id})
        whole = collect(two, "GET", f"/api/v1/jobs/{job_id}/events")
        assert [(e.id, e.data) for e in seen + rest] == [(e.id, e.data) for e in whole]
        assert whole[-1].type == "done"


def test_memory_survives_every_process_killed_and_restarted(stack) -> None:
    [web] = stack.start_web()
    [worker] = stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        assert http.post("/api/v1/chat", json={"message": "my name is Ana", "session_id": "m"}).status_code == 200
    stack.redis_server.wait_aof_written()  # everysec may hold writes while a slow fsync runs
    web.kill()
    worker.kill()
    stack.redis_server.kill()
    stack.redis_server.start()
    web.restart()
    worker.restart()
    with client(stack.web_url, stack.api_key) as http:
        answer = http.post("/api/v1/chat", json={"message": "what is my name?", "session_id": "m"}).json()
        assert answer["response"] == "echo: what is my name? | earlier: my name is Ana"
        assert len(messages(http, "m")) == 5


def test_redis_stopped_mid_run_gives_prompt_503s_then_recovers(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key, timeout=10) as http:
        create_agent(http)
        assert http.post("/api/v1/chat", json={"message": "before", "session_id": "r"}).status_code == 200
        stack.redis_server.stop()
        try:
            for method, path, body in [
                ("GET", "/api/v1/agents", None),
                ("GET", "/api/v1/sessions/r/messages", None),
                ("POST", "/api/v1/chat", {"message": "during", "session_id": "r"}),
                ("POST", "/api/v1/chat/stream", {"message": "during", "session_id": "r"}),
                ("POST", "/api/v1/chat/jobs", {"message": "during", "session_id": "r"}),
                ("GET", "/readyz", None),
            ]:
                started = time.monotonic()
                response = http.request(method, path, json=body)
                assert response.status_code == 503, (path, response.status_code, response.text)
                assert "error" in response.json()
                assert time.monotonic() - started < 5, path
            assert http.get("/healthz").status_code == 200
        finally:
            stack.redis_server.start()
        _wait_for(lambda: http.get("/readyz").status_code == 200)
        answer = http.post("/api/v1/chat", json={"message": "after", "session_id": "r"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"] == "echo: after | earlier: before"
        assert [m["content"] for m in messages(http, "r") if m["role"] == "user"] == ["before", "after"]
        assert len(model_requests(stack)) == 2


def test_open_stream_ends_when_redis_goes_away_and_resumes_after(stack) -> None:
    stack.start_web()
    stack.start_workers()
    stack.model_server.control("options", {"chunk_delay_ms": 300})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        job = http.post("/api/v1/chat/jobs", json={"message": "one two three four five six", "session_id": "o"})
        job_id = job.json()["job_id"]
        seen: list[Event] = []
        lines: list[str] = []
        event_id = ""
        with http.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
            started = None
            try:
                for line in response.iter_lines():  # one reader for the whole stream
                    lines.append(line)
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: ") and started is None:
                        seen.append(Event(event_id, json.loads(line[6:])))
                        if seen[-1].type == "delta":
                            stack.redis_server.stop()
                            started = time.monotonic()
            except httpx.HTTPError:
                pass
            assert started is not None and time.monotonic() - started < 20, "the stream hung after Redis went away"
        assert any("event store is unavailable" in line for line in lines)
        stack.redis_server.start()
        _wait_for(lambda: http.get("/readyz").status_code == 200)
        rest = collect(http, "GET", f"/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": seen[-1].id})
        assert rest[-1].type == "done"
        ids = [e.id for e in seen + rest]
        assert len(ids) == len(set(ids))


def test_sigterm_lets_a_short_turn_finish_and_hands_a_long_one_back(stack) -> None:
    stack.start_web()
    drain = {"PARLEY_DRAIN_GRACE_S": "1.5"}
    [first] = stack.start_workers(env=drain)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        # A turn shorter than the grace period finishes on the draining worker.
        stack.model_server.control("options", {"chunk_delay_ms": 100})
        short = http.post("/api/v1/chat/jobs", json={"message": "short one", "session_id": "d1"}).json()
        _wait_for(lambda: http.get(f"/api/v1/jobs/{short['job_id']}").json()["status"] == "started")
        first.terminate(timeout=15)
        assert wait_job(http, short["job_id"])["status"] == "finished"
        assert not any(e.type == "status" and e.data["message"] == "retrying"
                       for e in collect(http, "GET", f"/api/v1/jobs/{short['job_id']}/events"))  # fmt: skip

        # A turn longer than the grace period is handed back and finished by another worker.
        [second] = stack.start_workers(env=drain)
        stack.model_server.control("options", {"chunk_delay_ms": 0})
        stack.model_server.control("script", [{"hang": True}])  # the first attempt never ends by itself
        long = http.post("/api/v1/chat/jobs", json={"message": "a long answer with many words", "session_id": "d2"})
        job_id = long.json()["job_id"]
        _wait_for(lambda: stack.model_server.control("stats")["open_streams"] >= 1)
        [third] = stack.start_workers(env=drain)
        started = time.monotonic()
        second.terminate(timeout=15)
        assert time.monotonic() - started < 10
        record = wait_job(http, job_id, timeout=60)
        assert record["status"] == "finished"
        assert time.monotonic() - started < 30  # handed back, not left to be found abandoned
        events = collect(http, "GET", f"/api/v1/jobs/{job_id}/events")
        retry = next(e for e in events if e.type == "status" and e.data["message"] == "retrying")
        assert retry.data["attempt"] == 2
        history = messages(http, "d2")
        assert [m["content"] for m in history if m["job_id"] == job_id] == [
            "a long answer with many words", "echo: a long answer with many words",
        ]  # fmt: skip
        assert third.alive


def test_sigterm_to_web_ends_streams_so_clients_resume_on_another_web(stack) -> None:
    web_one, web_two = stack.start_web(2)
    stack.start_workers()
    stack.model_server.control("options", {"chunk_delay_ms": 300})
    with client(str(web_one.url), stack.api_key) as one, client(str(web_two.url), stack.api_key) as two:
        create_agent(one)
        seen: list[Event] = []
        lines: list[str] = []
        event_id = ""
        stopped_at = None
        story = {"message": "tell me a long story about the sea and ships", "session_id": "t"}
        with one.stream("POST", "/api/v1/chat/stream", json=story) as response:
            for line in response.iter_lines():
                lines.append(line)
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    seen.append(Event(event_id, json.loads(line[6:])))
                    if seen[-1].type == "delta" and stopped_at is None:
                        stopped_at = time.monotonic()
                        threading.Thread(target=web_one.terminate, daemon=True).start()
        assert stopped_at is not None and time.monotonic() - stopped_at < 5, "the stream outlived the SIGTERM"
        assert "retry: 500" in lines and any("shutting down" in line for line in lines)
        assert seen[-1].type != "done"
        events_url = f"/api/v1/jobs/{seen[0].data['job_id']}/events"
        rest = collect(two, "GET", events_url, headers={"Last-Event-ID": seen[-1].id})
        whole = collect(two, "GET", events_url)
        assert [(e.id, e.data) for e in seen + rest] == [(e.id, e.data) for e in whole]
        deadline = time.monotonic() + 10
        while web_one.alive:
            assert time.monotonic() < deadline, "the web process did not exit after draining"
            time.sleep(0.1)
