"""Chat turns end to end: real Redis, web, workers and the scripted model server."""

from __future__ import annotations

import threading
import time

from tests.integration.helpers import (
    client,
    create_agent,
    messages,
    model_requests,
    user_contents,
    wait_job,
)
from tests.sse_client import Event, collect, iter_events


def test_memory_across_turns_and_context_shape(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        agent = create_agent(http)
        first = http.post("/api/v1/chat", json={"message": "I like basil", "session_id": "s1"})
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["response"] == "echo: I like basil"
        assert body["session_id"] == "s1" and body["agent_id"] == agent["id"] and body["agent_name"] == "Chef"
        second = http.post("/api/v1/chat", json={"message": "and tomatoes", "session_id": "s1"}).json()
        assert second["response"] == "echo: and tomatoes | earlier: I like basil"

        sent = model_requests(stack)[-1]["body"]["messages"]
        assert sent[0] == {"role": "system", "content": "You are a chef."}
        assert sent[1]["role"] == "system" and sent[1]["content"].startswith("Keep it short.")
        assert sent[2] == {"role": "assistant", "content": "Hello, I am your chef."}
        assert [m["content"] for m in sent[3:]] == [
            "I like basil", "echo: I like basil", "and tomatoes",
        ]  # fmt: skip

        history = messages(http, "s1")
        assert [(m["role"], m["content"]) for m in history] == [
            ("assistant", "Hello, I am your chef."),
            ("user", "I like basil"),
            ("assistant", "echo: I like basil"),
            ("user", "and tomatoes"),
            ("assistant", "echo: and tomatoes | earlier: I like basil"),
        ]
        assert history[0]["job_id"] is None and history[1]["job_id"] == first.json()["job_id"]
        assert [m["id"] for m in history] == [f"msg_{i}" for i in range(5)]
        session = http.get("/api/v1/sessions/s1").json()
        assert session["message_count"] == 5 and session["agent_name"] == "Chef"


def test_stream_events_and_late_subscriber_gets_whole_stream(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        live = collect(http, "POST", "/api/v1/chat/stream", json={"message": "one two three", "session_id": "s"})
        types = [e.type for e in live]
        assert types[0] == "session" and types[-1] == "done" and types[-2] == "response"
        assert types[1:3] == ["status", "status"]
        assert "".join(e.data["content"] for e in live if e.type == "delta") == "echo: one two three"
        assert live[-2].data["content"] == "echo: one two three" and live[-2].data["session_id"] == "s"
        ids = [e.id for e in live]
        assert len(set(ids)) == len(ids)
        assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
        job_id = live[0].data["job_id"]
        assert http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "finished"
        with http.stream("POST", "/api/v1/chat/stream", json={"message": "again", "session_id": "s"}) as response:
            assert response.headers["x-parley-session"] == "s"
            named = response.headers["x-parley-job"]
            assert next(iter_events(response)).data["job_id"] == named

        late = collect(http, "GET", f"/api/v1/jobs/{job_id}/events")
        assert [(e.id, e.data) for e in late] == [(e.id, e.data) for e in live]
        resumed = collect(http, "GET", f"/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": ids[3]})
        assert [e.id for e in resumed] == ids[4:]


def test_job_route_polling_and_result(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        accepted = http.post("/api/v1/chat/jobs", json={"message": "poll me"})
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["status"] == "queued" and body["status_url"] == f"/api/v1/jobs/{body['job_id']}"
        job = wait_job(http, body["job_id"])
        assert job["status"] == "finished" and job["error"] is None
        assert job["result"]["response"] == "echo: poll me" and job["result"]["session_id"] == body["session_id"]
        assert job["enqueued_at"] <= job["started_at"] <= job["ended_at"]


def test_five_turns_sent_at_once_run_strictly_in_order_with_three_workers(stack) -> None:
    stack.start_web()
    stack.start_workers(3)
    stack.model_server.control("options", {"chunk_delay_ms": 20})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, first_message="")
        jobs = [http.post("/api/v1/chat/jobs", json={"message": f"turn {i}", "session_id": "order"}).json()
                for i in range(5)]  # fmt: skip
        records = [wait_job(http, job["job_id"]) for job in jobs]
        assert all(record["status"] == "finished" for record in records)
        for earlier, later in zip(records, records[1:], strict=False):
            assert earlier["ended_at"] <= later["started_at"], (earlier, later)
        history = messages(http, "order")
        assert [m["content"] for m in history if m["role"] == "user"] == [f"turn {i}" for i in range(5)]
        seen = [user_contents(r["body"]) for r in model_requests(stack)]
        assert seen == [[f"turn {j}" for j in range(i + 1)] for i in range(5)]


def test_idempotency_key_returns_same_job_and_stores_message_once(stack) -> None:
    stack.start_web(2)
    stack.start_workers()
    with client(stack.web_urls[0], stack.api_key) as one, client(stack.web_urls[1], stack.api_key) as two:
        create_agent(one)
        request = {"message": "only once", "session_id": "idem"}
        headers = {"Idempotency-Key": "retry-123"}
        first = one.post("/api/v1/chat", json=request, headers=headers)
        again = two.post("/api/v1/chat", json=request, headers=headers)
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()
        queued = two.post("/api/v1/chat/jobs", json=request, headers=headers).json()
        assert queued["job_id"] == first.json()["job_id"] and queued["status"] == "finished"
        assert [m["content"] for m in messages(one, "idem")].count("only once") == 1
        other = one.post("/api/v1/chat", json={**request, "message": "different"}, headers=headers)
        assert other.status_code == 409
        assert len(model_requests(stack)) == 1


def test_model_429_and_500_are_retried(stack) -> None:
    stack.start_web()
    stack.start_workers()
    stack.model_server.control("script", [{"status": 429, "retry_after": 0}, {"status": 500}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        response = http.post("/api/v1/chat", json={"message": "are you there"})
        assert response.status_code == 200, response.text
        assert response.json()["response"] == "echo: are you there"
        assert [r["status"] for r in model_requests(stack)] == [429, 500, 200]


def test_model_failing_for_good_fails_the_turn_and_commits_nothing(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_MODEL_MAX_RETRIES": "1"})
    stack.model_server.control("script", [{"status": 500}, {"status": 500}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        response = http.post("/api/v1/chat", json={"message": "fail", "session_id": "f"})
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "model_failed"
        job_id = response.json()["error"]["job_id"]
        assert http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "failed"
        events = collect(http, "GET", f"/api/v1/jobs/{job_id}/events")
        assert [e.type for e in events][-2:] == ["error", "done"]
        assert [m["role"] for m in messages(http, "f")] == ["assistant"]  # only the first message


def test_cancel_stops_a_running_turn_and_closes_the_model_connection(stack) -> None:
    stack.start_web()
    stack.start_workers()
    stack.model_server.control("script", [{"hang": True}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        events: list[Event] = []

        def read() -> None:
            with http.stream("POST", "/api/v1/chat/stream", json={"message": "hang", "session_id": "c"}) as response:
                for event in iter_events(response):
                    events.append(event)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 20
        while not (events and stack.model_server.control("stats")["open_streams"] >= 1):
            assert time.monotonic() < deadline, "the turn never reached the model"
            time.sleep(0.05)
        job_id = events[0].data["job_id"]
        cancel = http.post(f"/api/v1/jobs/{job_id}/cancel")
        assert cancel.status_code == 202
        reader.join(timeout=20)
        assert not reader.is_alive()
        assert [e.type for e in events][-2:] == ["error", "done"]
        assert http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "canceled"
        assert [m["role"] for m in messages(http, "c")] == ["assistant"]
        deadline = time.monotonic() + 10
        while stack.model_server.control("stats")["disconnects"] < 1:
            assert time.monotonic() < deadline, "the model connection was not closed"
            time.sleep(0.1)
        # The session goes on: the next turn runs and remembers nothing of the canceled one.
        after = http.post("/api/v1/chat", json={"message": "next", "session_id": "c"}).json()
        assert after["response"] == "echo: next"


def test_cancel_a_queued_turn(stack) -> None:
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        job = http.post("/api/v1/chat/jobs", json={"message": "never run"}).json()
        assert http.post(f"/api/v1/jobs/{job['job_id']}/cancel").status_code == 202
        events = collect(http, "GET", f"/api/v1/jobs/{job['job_id']}/events")
        assert [e.type for e in events] == ["session", "status", "error", "done"]
        stack.start_workers()
        follow = http.post("/api/v1/chat", json={"message": "runs", "session_id": job["session_id"]})
        assert follow.status_code == 200 and follow.json()["response"] == "echo: runs"
        assert len(model_requests(stack)) == 1


def test_model_stream_breaking_off_fails_the_turn_cleanly(stack) -> None:
    stack.start_web()
    stack.start_workers()
    stack.model_server.control("script", [{"drop_after_chunks": 2}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "one two three four", "session_id": "b"})
        assert [e.type for e in events][-2:] == ["error", "done"]
        assert events[-2].data["code"] == "model_failed"
        assert http.get(f"/api/v1/jobs/{events[0].data['job_id']}").json()["status"] == "failed"
        assert [m["role"] for m in messages(http, "b")] == ["assistant"]
        assert http.post("/api/v1/chat", json={"message": "fine now", "session_id": "b"}).json()["response"] == (
            "echo: fine now"
        )
