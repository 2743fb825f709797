"""One worker process runs many turns at once: each is still a whole rq job (registries, heartbeats,
retries), a cancel stops only its own turn, a crash or a drain loses none of them."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import redis

from tests.integration.helpers import client, create_agent, messages, wait_job
from tests.sse_client import Event, collect, iter_events

QUEUE = "parley-turns"


def _wait_for(predicate, timeout: float = 30.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{message}: not met within {timeout:.0f} s"
        time.sleep(0.05)


def _open_streams(stack) -> int:
    return int(stack.model_server.control("stats")["open_streams"])


def _queue_jobs(http: httpx.Client, count: int, prefix: str) -> list[str]:
    ids = []
    for index in range(count):
        response = http.post("/api/v1/chat/jobs", json={"message": f"{prefix} {index} words to echo",
                                                        "session_id": f"{prefix}-{index}"})  # fmt: skip
        assert response.status_code == 202, response.text
        ids.append(response.json()["job_id"])
    return ids


def _worker_executions(r: redis.Redis, pid: int) -> set[str]:
    """Job ids of the executions rq's worker index shows for the worker with this pid."""
    for key in r.smembers("rq:workers"):
        if r.hget(key, "pid") == str(pid):
            return {member.split(":")[0] for member in r.smembers(f"{key}:executions")}
    return set()


def _started_registry(r: redis.Redis) -> set[str]:
    return {member.split(":")[0] for member in r.zrange(f"rq:wip:{QUEUE}", 0, -1)}


def _events(http: httpx.Client, job_id: str) -> list[Event]:
    return collect(http, "GET", f"/api/v1/jobs/{job_id}/events", timeout=70)


def _retried(events: list[Event]) -> bool:
    return any(e.type == "status" and e.data.get("message") == "retrying" for e in events)


def test_one_worker_runs_many_turns_at_once_and_rq_shows_each(stack) -> None:
    stack.start_web()
    [worker] = stack.start_workers(env={"PARLEY_WORKER_CONCURRENCY": "8"})
    stack.model_server.control("options", {"chunk_delay_ms": 600})
    r = stack.redis()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        ids = _queue_jobs(http, 10, "many")
        # Exactly 8 run at once (the limit); rq's registries and the worker's index show each.
        _wait_for(lambda: _open_streams(stack) == 8, message="8 model calls open at once")
        running = _worker_executions(r, worker.pid)
        assert len(running) == 8 and running <= set(ids)
        assert _started_registry(r) == running
        assert r.llen(f"rq:queue:{QUEUE}") == 2
        assert _open_streams(stack) == 8
        assert {r.hget(key, "state") for key in r.smembers("rq:workers")} == {"busy"}
        for job_id in ids:
            assert wait_job(http, job_id)["status"] == "finished"
        for index in range(10):
            assert [m["content"] for m in messages(http, f"many-{index}")][-1] == f"echo: many {index} words to echo"
    _wait_for(lambda: not _started_registry(r), message="rq's started registry empties")
    assert _worker_executions(r, worker.pid) == set()
    assert int(r.hget(next(iter(r.smembers("rq:workers"))), "successful_job_count")) == 10


def test_cancel_stops_one_turn_and_leaves_the_others_running(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_WORKER_CONCURRENCY": "8"})
    stack.model_server.control("options", {"chunk_delay_ms": 300})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        ids = _queue_jobs(http, 4, "cancel")
        _wait_for(lambda: _open_streams(stack) == 4, message="4 model calls open at once")
        assert http.post(f"/api/v1/jobs/{ids[1]}/cancel").status_code == 202
        _wait_for(lambda: stack.model_server.control("stats")["disconnects"] >= 1, timeout=5,
                  message="the canceled turn hangs up on the model")  # fmt: skip
        assert _open_streams(stack) == 3
        outcomes = [wait_job(http, job_id)["status"] for job_id in ids]
        assert outcomes == ["finished", "canceled", "finished", "finished"]
        assert [e.type for e in _events(http, ids[1])][-2:] == ["error", "done"]
        assert [m["role"] for m in messages(http, "cancel-1")] == ["assistant"]  # nothing committed
        assert stack.model_server.control("stats")["disconnects"] == 1


def test_worker_killed_holding_several_turns_each_is_retried_or_failed_within_a_minute(stack) -> None:
    retrying_web = stack.start_web()[0]
    final_web = stack.start_web(env={"PARLEY_TURN_RETRIES": "0"})[0]
    [worker] = stack.start_workers(env={"PARLEY_WORKER_CONCURRENCY": "8"})
    stack.model_server.control("script", [{"hang": True}] * 5)  # the first attempts never end by themselves
    with client(str(retrying_web.url), stack.api_key) as http, client(str(final_web.url), stack.api_key) as other:
        create_agent(http)
        retried = _queue_jobs(http, 3, "kept")
        failed = _queue_jobs(other, 2, "lost")
        _wait_for(lambda: _open_streams(stack) == 5, message="5 model calls open at once")
        worker.kill()
        killed_at = time.monotonic()
        stack.start_workers(env={"PARLEY_WORKER_CONCURRENCY": "8"})
        for job_id in retried:
            events = _events(http, job_id)
            assert [e.type for e in events][-2:] == ["response", "done"]
            assert _retried(events)
        for job_id in failed:
            assert [e.type for e in _events(http, job_id)][-2:] == ["error", "done"]
        assert time.monotonic() - killed_at < 60
        assert [wait_job(http, job_id)["status"] for job_id in retried] == ["finished"] * 3
        assert [wait_job(http, job_id)["status"] for job_id in failed] == ["failed"] * 2
        for index in range(3):
            assert [m["content"] for m in messages(http, f"kept-{index}")][-2:] == [
                f"kept {index} words to echo", f"echo: kept {index} words to echo",
            ]  # fmt: skip


def test_sigterm_with_several_turns_in_flight_fails_none(stack) -> None:
    stack.start_web()
    drain = {"PARLEY_WORKER_CONCURRENCY": "8", "PARLEY_DRAIN_GRACE_S": "3"}
    [first] = stack.start_workers(env=drain)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        # Two turns whose first attempt never ends, two that end within the grace period.
        stack.model_server.control("script", [{"hang": True}] * 2)
        long = _queue_jobs(http, 2, "long")
        _wait_for(lambda: _open_streams(stack) == 2, message="the 2 hanging calls open")
        stack.model_server.control("options", {"chunk_delay_ms": 200})
        short = _queue_jobs(http, 2, "short")
        _wait_for(lambda: _open_streams(stack) == 4, message="4 model calls open at once")
        [second] = stack.start_workers(env=drain)
        started = time.monotonic()
        assert first.terminate(timeout=15) == 0
        assert time.monotonic() - started < 3 + 5, "the drain outlived its grace period"
        for job_id in short:
            events = _events(http, job_id)
            assert [e.type for e in events][-2:] == ["response", "done"]
            assert not _retried(events), "a turn that could finish in the grace period was handed back"
        for job_id in long:
            events = _events(http, job_id)
            assert [e.type for e in events][-2:] == ["response", "done"]
            retry = next(e for e in events if e.type == "status" and e.data["message"] == "retrying")
            assert retry.data["attempt"] == 2
        assert [wait_job(http, job_id)["status"] for job_id in long + short] == ["finished"] * 4
        r = stack.redis()
        assert r.zcard(f"rq:failed:{QUEUE}") == 0
        # Handed back by the draining worker itself, not found abandoned later: no retry was used up.
        assert [r.hget(f"rq:job:{job_id}", "retries_left") for job_id in long] == ["2", "2"]
        assert "2 turn(s) still running after 3 s of drain: handing them back" in first.read_log()
        assert "could not hand" not in first.read_log()
        assert second.alive


def test_sigterm_to_a_web_under_load_every_stream_resumes_on_another_web(stack) -> None:
    web_one, web_two = stack.start_web(2)
    stack.start_workers(env={"PARLEY_WORKER_CONCURRENCY": "20"})
    stack.model_server.control("options", {"chunk_delay_ms": 250})
    count = 12
    seen: list[list[Event]] = [[] for _ in range(count)]
    ended: list[str] = ["" for _ in range(count)]

    def read(index: int) -> None:
        body = {"message": f"stream {index} with a few more words", "session_id": f"load-{index}"}
        with client(str(web_one.url), stack.api_key) as http:
            try:
                with http.stream("POST", "/api/v1/chat/stream", json=body) as response:
                    for event in iter_events(response):
                        seen[index].append(event)
                ended[index] = "closed"
            except httpx.HTTPError as error:
                ended[index] = f"error {error!r}"

    with client(str(web_one.url), stack.api_key) as http:
        create_agent(http)
    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(count)]
    for reader in readers:
        reader.start()
    _wait_for(lambda: all(any(e.type == "delta" for e in events) for events in seen),
              message="every stream has a delta")
    stopped_at = time.monotonic()
    web_one.send_signal(signal.SIGTERM)
    for reader in readers:
        reader.join(timeout=10)
    assert time.monotonic() - stopped_at < 10 and not any(r.is_alive() for r in readers)
    with client(str(web_two.url), stack.api_key) as two:
        for index, events in enumerate(seen):
            assert ended[index] == "closed"
            assert events[-1].type != "done", "a stream ended as if its turn were over"
            job_url = f"/api/v1/jobs/{events[0].data['job_id']}/events"
            rest = collect(two, "GET", job_url, headers={"Last-Event-ID": events[-1].id}, timeout=60)
            whole = collect(two, "GET", job_url, timeout=60)
            assert [(e.id, e.data) for e in events + rest] == [(e.id, e.data) for e in whole]
            assert whole[-1].type == "done"
            final: dict[str, Any] = whole[-2].data
            assert final["content"] == f"echo: stream {index} with a few more words"
    assert web_one.wait(10) is not None, "the web process did not exit after draining"


def test_a_full_worker_still_fails_a_dead_workers_turn_within_a_minute(stack) -> None:
    """A worker with every slot taken keeps running rq's maintenance, which ends the turns of a
    worker that died: a deployment whose workers are all full still keeps the minute."""
    stack.start_web(env={"PARLEY_TURN_RETRIES": "0"})
    [full] = stack.start_workers(env={"PARLEY_WORKER_CONCURRENCY": "1"})
    stack.model_server.control("script", [{"hang": True}] * 2)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        [held] = _queue_jobs(http, 1, "held")
        _wait_for(lambda: _open_streams(stack) == 1, message="the full worker holds its turn")
        [doomed] = stack.start_workers(env={"PARLEY_WORKER_CONCURRENCY": "1"})
        [lost] = _queue_jobs(http, 1, "lost")
        _wait_for(lambda: _open_streams(stack) == 2, message="the second worker holds the other turn")
        doomed.kill()
        killed_at = time.monotonic()
        assert [e.type for e in _events(http, lost)][-2:] == ["error", "done"]
        # TTL 4 s + 2 x 1 s maintenance here: well inside the minute, and well before the held
        # turn's model read times out (60 s), which would free the slot.
        assert time.monotonic() - killed_at < 30, "the full worker ran no maintenance"
        assert wait_job(http, lost)["status"] == "failed"
        assert http.get(f"/api/v1/jobs/{held}").json()["status"] == "started"
        assert full.alive
        assert http.post(f"/api/v1/jobs/{held}/cancel").status_code == 202


def test_a_turn_past_its_timeout_ends_and_the_others_go_on(stack) -> None:
    """rq's job timeout holds for turns run as tasks (an asyncio timeout raising rq's JobTimeoutException)."""
    stack.start_web(env={"PARLEY_TURN_TIMEOUT_S": "5", "PARLEY_TURN_RETRIES": "0"})
    stack.start_workers(env={"PARLEY_WORKER_CONCURRENCY": "4"})
    stack.model_server.control("script", [{"reply": " ".join(["slow"] * 40), "chunk_delay_ms": 400}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        [slow] = _queue_jobs(http, 1, "slow")
        _wait_for(lambda: _open_streams(stack) == 1, message="the slow turn streams")
        stack.model_server.control("options", {"chunk_delay_ms": 100})
        quick = _queue_jobs(http, 2, "quick")
        started = time.monotonic()
        record = wait_job(http, slow, timeout=30)
        assert record["status"] == "failed" and "JobTimeoutException" in record["error"]
        assert time.monotonic() - started < 10
        assert [e.type for e in _events(http, slow)][-2:] == ["error", "done"]
        assert [wait_job(http, job_id)["status"] for job_id in quick] == ["finished", "finished"]
