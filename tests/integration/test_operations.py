"""Timeouts, keep-alives, streams that go away, worker death with no retries left, metrics, OpenAPI."""

from __future__ import annotations

import json
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import client, create_agent, messages, model_requests, wait_job
from tests.sse_client import collect


def test_chat_that_takes_too_long_answers_504_and_the_turn_goes_on(stack) -> None:
    stack.start_web(env={"PARLEY_CHAT_TIMEOUT_S": "0.5"})
    stack.start_workers()
    stack.model_server.control("script", [{"delay_ms": 1500}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        response = http.post("/api/v1/chat", json={"message": "slow", "session_id": "t"})
        assert response.status_code == 504
        error = response.json()["error"]
        assert error["code"] == "timeout" and error["job_id"]
        job = wait_job(http, error["job_id"])
        assert job["status"] == "finished" and job["result"]["response"] == "echo: slow"


def test_idle_stream_gets_pings_and_a_gone_client_frees_its_subscription(stack) -> None:
    stack.start_web()
    stack.start_workers()
    stack.model_server.control("script", [{"hang": True}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        lines: list[str] = []
        with http.stream("POST", "/api/v1/chat/stream", json={"message": "wait", "session_id": "p"}) as response:
            for line in response.iter_lines():
                lines.append(line)
                if line == ": ping":
                    break
        assert ": ping" in lines

        def active_streams() -> float:
            families = text_string_to_metric_families(http.get("/metrics").text)
            return next(s.value for f in families if f.name == "parley_active_streams" for s in f.samples)

        deadline = time.monotonic() + 10
        while active_streams() != 0:
            assert time.monotonic() < deadline, "the closed stream still holds its subscription"
            time.sleep(0.1)
        subscribers = stack.redis().pubsub_numsub(*[c for c in stack.redis().pubsub_channels("parley:live:*")])
        assert all(count == 0 for _, count in subscribers)


def test_worker_killed_with_no_retries_left_fails_the_turn_within_a_minute(stack) -> None:
    stack.start_web(env={"PARLEY_TURN_RETRIES": "0"})  # the retry budget is set when web queues the turn
    [worker] = stack.start_workers()
    stack.model_server.control("script", [{"hang": True}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        job = http.post("/api/v1/chat/jobs", json={"message": "doomed", "session_id": "d"}).json()
        deadline = time.monotonic() + 20
        while stack.model_server.control("stats")["open_streams"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker.kill()
        killed_at = time.monotonic()
        stack.start_workers()
        events = collect(http, "GET", f"/api/v1/jobs/{job['job_id']}/events", timeout=70)
        assert time.monotonic() - killed_at < 60
        assert [e.type for e in events][-2:] == ["error", "done"]
        assert wait_job(http, job["job_id"])["status"] == "failed"
        assert [m["role"] for m in messages(http, "d")] == ["assistant"]
        # The session is not stuck: its next turn runs.
        again = http.post("/api/v1/chat", json={"message": "again", "session_id": "d"})
        assert again.json()["response"] == "echo: again"


def test_ten_turns_sent_within_a_second_through_two_webs_run_in_order(stack) -> None:
    webs = stack.start_web(2)
    stack.start_workers(3)
    stack.model_server.control("options", {"chunk_delay_ms": 5})
    clients = [client(str(w.url), stack.api_key) for w in webs]
    try:
        create_agent(clients[0], first_message="")
        started = time.monotonic()
        jobs = [clients[i % 2].post("/api/v1/chat/jobs", json={"message": f"n{i}", "session_id": "o"}).json()
                for i in range(10)]  # fmt: skip
        assert time.monotonic() - started < 1.0
        for job in jobs:
            assert wait_job(clients[0], job["job_id"])["status"] == "finished"
        assert [m["content"] for m in messages(clients[0], "o") if m["role"] == "user"] == [f"n{i}" for i in range(10)]
        # context, instructions, the history so far, the new message
        assert [len(r["body"]["messages"]) for r in model_requests(stack)] == [2 + 2 * i + 1 for i in range(10)]
    finally:
        for c in clients:
            c.close()


def test_metrics_and_openapi(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        http.post("/api/v1/chat", json={"message": "count me"})
        families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
        expected = {"parley_http_requests", "parley_queue_depth", "parley_active_streams", "parley_redis_up"}
        assert expected <= set(families)
        chats = [s for s in families["parley_http_requests"].samples
                 if s.labels.get("route") == "/api/v1/chat" and s.labels.get("status") == "200"]  # fmt: skip
        assert chats and chats[0].value >= 1
        spec = http.get("/openapi.json").json()
        for path in ["/api/v1/agents", "/api/v1/agents/{agent}", "/api/v1/sessions", "/api/v1/sessions/{session_id}",
                     "/api/v1/sessions/{session_id}/messages", "/api/v1/chat", "/api/v1/chat/stream",
                     "/api/v1/chat/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/events",
                     "/api/v1/jobs/{job_id}/cancel", "/healthz", "/readyz", "/metrics", "/agents/create-agent",
                     "/agents/chat-agent", "/agents/get-messages"]:  # fmt: skip
            assert path in spec["paths"], path
        assert http.get("/docs").status_code == 200


def test_seed_javascript_style_reader_sees_each_event_on_one_data_line(stack) -> None:
    """The seed's JS client splits on newlines and JSON-parses every `data: ` line."""
    stack.start_web()
    stack.start_workers()
    stack.model_server.control("script", [{"reply": "line one\nline two\n\n  indented"}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        with http.stream("POST", "/api/v1/chat/stream", json={"message": "x"}) as response:
            raw = response.read().decode()
        parsed = [json.loads(line[6:]) for line in raw.split("\n") if line.startswith("data: ")]
        assert parsed[-1] == {"type": "done"}
        assert next(p for p in parsed if p["type"] == "response")["content"] == "line one\nline two\n\n  indented"




def test_browser_pages_on_other_origins_may_call_the_api(stack) -> None:
    stack.start_web()
    with client(stack.web_url, None) as http:
        preflight = http.options("/api/v1/chat/stream", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
        })  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] in ("*", "http://localhost:3000")
        assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
        denied = http.get("/api/v1/agents", headers={"Origin": "http://localhost:3000"})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"]
