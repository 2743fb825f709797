"""`/metrics` shows the whole deployment: values only a worker can know (queue wait, turn outcomes,
time to first token, tokens, model errors) and values each web knows (HTTP requests, open
streams), read through prometheus_client's own parser from a web that did not serve the turns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import client, create_agent, wait_job

MODEL = "test-model"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `url`'s /metrics as {(sample name, sorted labels): value}."""
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(read: Callable[[], Any], expected: Any, timeout: float = 10.0) -> None:
    """Wait until `read()` equals `expected` (webs report their own share once a second)."""
    deadline = time.monotonic() + timeout
    while (got := read()) != expected:
        assert time.monotonic() < deadline, f"expected {expected!r}, still {got!r}"
        time.sleep(0.1)


def test_metrics_of_web_and_worker_reach_every_web(stack) -> None:
    stack.start_web(2)
    first, second = stack.web_urls
    with client(first, stack.api_key) as http:
        create_agent(http, model=MODEL)

        # No worker yet: the turn waits in the queue, and the queue gauges say so.
        waiting = http.post("/api/v1/chat/jobs", json={"message": "queued", "session_id": "q"}).json()
        time.sleep(1.2)
        before = scrape(second)
        assert value(before, "parley_redis_up") == 1
        assert value(before, "parley_queue_depth") == 1
        assert 1.0 <= value(before, "parley_queue_oldest_job_age_seconds") < 30
        assert value(before, "parley_jobs_total", outcome="finished") == 0

        stack.start_workers(env={"PARLEY_MODEL_MAX_RETRIES": "0"})
        usages = [wait_job(http, waiting["job_id"])["result"]["usage"]]
        answers = [http.post("/api/v1/chat", json={"message": f"turn {n}", "session_id": "m"}) for n in range(3)]
        assert [answer.status_code for answer in answers] == [200, 200, 200]
        usages += [answer.json()["usage"] for answer in answers]
        stack.model_server.control("script", [{"status": 500}])
        failed = http.post("/api/v1/chat", json={"message": "boom", "session_id": "m"})
        assert failed.status_code == 502

    after = scrape(second)  # the web that served none of the turns
    assert value(after, "parley_queue_depth") == 0
    assert value(after, "parley_queue_oldest_job_age_seconds") == 0
    assert value(after, "parley_jobs_total", outcome="finished") == 4
    assert value(after, "parley_jobs_total", outcome="failed") == 1
    assert value(after, "parley_turn_seconds_count", outcome="finished") == 4
    assert value(after, "parley_turn_seconds_count", outcome="failed") == 1
    # Queue wait: every first start, the one that waited a second or more among them.
    assert value(after, "parley_queue_wait_seconds_count") == 5
    assert value(after, "parley_queue_wait_seconds_bucket", le="0.5") <= 4
    assert value(after, "parley_queue_wait_seconds_sum") >= 1.0
    assert value(after, "parley_queue_wait_seconds_bucket", le="+Inf") == 5
    assert value(after, "parley_turn_seconds_sum", outcome="finished") >= value(after, "parley_queue_wait_seconds_sum")
    # What the worker saw of the model: first text of every answer, tokens as the model counted them, the 500.
    assert value(after, "parley_time_to_first_token_seconds_count") == 4
    assert 0 < value(after, "parley_time_to_first_token_seconds_sum") < value(after, "parley_turn_seconds_sum",
                                                                              outcome="finished")  # fmt: skip
    # By direction only: agent and model names are tenants' data (PARLEY_METRICS_AGENT_LABELS is off).
    assert value(after, "parley_tokens_total", direction="in") == sum(
        usage["prompt_tokens"] for usage in usages) > 0  # fmt: skip
    assert value(after, "parley_tokens_total", direction="out") == sum(
        usage["completion_tokens"] for usage in usages) > 0  # fmt: skip
    assert value(after, "parley_model_errors_total", status="500") == 1

    # The web's own counts: web 1 served the chats; web 2 sees them once web 1 has reported (<= 1 s).
    eventually(lambda: value(scrape(second), "parley_http_requests_total", method="POST", route="/api/v1/chat",
                             status="200"), 3)  # fmt: skip
    eventually(lambda: value(scrape(second), "parley_http_requests_total", method="POST", route="/api/v1/chat",
                             status="502"), 1)  # fmt: skip
    assert value(scrape(second), "parley_http_request_seconds_count", method="POST", route="/api/v1/chat") == 4


def test_active_streams_are_summed_over_webs(stack) -> None:
    stack.start_web(2)
    stack.start_workers()
    first, second = stack.web_urls
    stack.model_server.control("script", [{"hang": True}])
    with client(first, stack.api_key) as http:
        create_agent(http)
        assert value(scrape(second), "parley_active_streams") == 0
        with http.stream("POST", "/api/v1/chat/stream", json={"message": "wait", "session_id": "s"}) as response:
            assert response.status_code == 200
            job_id = response.headers["X-Parley-Job"]
            eventually(lambda: value(scrape(second), "parley_active_streams"), 1)
            assert value(scrape(first), "parley_active_streams") == 1
            assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
            for _ in response.iter_lines():  # the stream ends with the cancel's `done`
                pass
        eventually(lambda: value(scrape(second), "parley_active_streams"), 0)
        assert value(scrape(second), "parley_jobs_total", outcome="canceled") == 1


def test_metrics_without_redis_say_so(stack) -> None:
    stack.start_web()
    stack.redis_server.stop()
    try:
        samples = scrape(stack.web_url)
        assert value(samples, "parley_redis_up") == 0
        assert ("parley_jobs_total", (("outcome", "finished"),)) not in samples
    finally:
        stack.redis_server.start()


def json_log(proc: Any) -> list[dict[str, Any]]:
    """A process's log lines as JSON objects (the harness's own `=== harness:` lines aside);
    a line that is not one JSON object fails the test."""
    lines = [line for line in proc.read_log().splitlines() if line and not line.startswith("=== harness:")]
    return [json.loads(line) for line in lines]


def test_json_logs_carry_the_request_tenant_session_and_job(stack) -> None:
    env = {"PARLEY_LOG_FORMAT": "json"}
    [web] = stack.start_web(env=env)
    [worker] = stack.start_workers(env=env)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        answer = http.post("/api/v1/chat", json={"message": "log me", "session_id": "logged"},
                           headers={"X-Request-ID": "req-42"})  # fmt: skip
        assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "req-42"
        job_id = answer.json()["job_id"]
    deadline = time.monotonic() + 10
    while not [line for line in json_log(web) if line.get("request_id") == "req-42"]:
        assert time.monotonic() < deadline, "no log line of the request"
        time.sleep(0.1)
    web_lines = json_log(web)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in web_lines)
    [access] = [line for line in web_lines if line.get("request_id") == "req-42"]  # uvicorn's access line
    assert access["logger"] == "uvicorn.access" and "/api/v1/chat" in access["msg"]
    assert (access["tenant"], access["session_id"], access["job_id"]) == ("alice", "logged", job_id)
    worker_lines = json_log(worker)
    model_call = [line for line in worker_lines if line["logger"] == "httpx2"]  # the worker's call to the model
    assert model_call and all((line.get("tenant"), line.get("session_id"), line.get("job_id")) ==
                              ("alice", "logged", job_id) for line in model_call)  # fmt: skip
    assert all(line.get("job_id") in (None, job_id) for line in worker_lines)
