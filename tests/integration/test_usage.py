"""`GET /api/v1/usage` on the real stack: after turns answered by the scripted model, the counters equal the tokens
the model reported (by agent, session and day), a failed turn counts the tokens it spent, the cost follows
PARLEY_MODEL_PRICES, one tenant never sees another's usage, and hostile parameters get 422 and change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.integration.helpers import client, create_agent, model_requests, wait_job
from tests.integration.test_failures import _stream_in_thread, _wait_for
from tests.sse_client import Event

MODEL = "test-model"
PRICES = {"PARLEY_MODEL_PRICES": f"{MODEL}=2.5/10/1.25,other/model:x=1/1", "PARLEY_CURRENCY": "EUR",
          "PARLEY_MODEL_MAX_RETRIES": "0"}  # fmt: skip


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _chat(http: httpx.Client, agent: str, session_id: str, message: str = "hello") -> dict[str, Any]:
    accepted = http.post("/api/v1/chat/jobs", json={"message": message, "agent": agent, "session_id": session_id})
    assert accepted.status_code == 202, accepted.text
    return wait_job(http, accepted.json()["job_id"])


def _usage(http: httpx.Client, **params: Any) -> dict[str, Any]:
    response = http.get("/api/v1/usage", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _cost(prompt: int, completion: int, cached: int) -> float:
    """PRICES' cost of one turn of MODEL, in micro-units rounded, as units."""
    micros = Decimal(prompt - cached) * Decimal("2.5") + Decimal(cached) * Decimal("1.25") + completion * Decimal(10)
    return int(micros.to_integral_value()) / 1_000_000


def test_usage_equals_the_tokens_the_model_reported(stack: Any) -> None:
    stack.start_web(env=PRICES)
    stack.start_workers(env=PRICES)
    today = datetime.now(UTC).date().isoformat()
    with client(stack.web_url, stack.api_key) as http, client(stack.web_url, stack.api_keys["bob"]) as bob:
        chef = create_agent(http, model=MODEL, tools=["calculator"])
        baker = create_agent(http, name="Baker", model=MODEL)
        assert _usage(http)["data"] == []

        _script(stack, {"reply": "one", "usage": {"prompt_tokens": 1000, "completion_tokens": 50,
                                                  "cached_tokens": 400}})  # fmt: skip
        first = _chat(http, "Chef", "s1")
        _script(stack, {"reply": "two", "usage": {"prompt_tokens": 300, "completion_tokens": 20}})
        second = _chat(http, "Chef", "s2")
        # A turn that fails after a tool step: the tokens of its first model step were spent, and count.
        _script(stack, {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}],
                        "usage": {"prompt_tokens": 700, "completion_tokens": 30}},
                {"status": 500})  # fmt: skip
        failed = _chat(http, "Chef", "s1")
        _script(stack, {"reply": "three", "usage": {"prompt_tokens": 500, "completion_tokens": 10}})
        third = _chat(http, "Baker", "s3")
        assert [job["status"] for job in (first, second, failed, third)] == ["finished", "finished", "failed",
                                                                             "finished"]  # fmt: skip
        assert third["result"]["usage"]["prompt_tokens"] == 500
        # cached_tokens: what the provider adapter reads from the model's usage (the job's result shows it)
        cached = first["result"]["usage"].get("cached_tokens", 0)

        by_day = _usage(http)
        totals = {"turns": 4, "prompt_tokens": 2500, "completion_tokens": 110, "cached_tokens": cached}
        day_cost = _cost(1000, 50, cached) + _cost(300, 20, 0) + _cost(700, 30, 0) + _cost(500, 10, 0)
        assert by_day["data"] == [{"key": today, **totals, "cost": pytest.approx(day_cost, abs=1e-9)}]
        assert {k: v for k, v in by_day["total"].items() if k != "cost"} == totals
        assert by_day["currency"] == "EUR" and by_day["group_by"] == "day" and by_day["until"] == today
        assert by_day["since"] == (datetime.now(UTC).date() - timedelta(days=29)).isoformat()
        assert by_day["next_cursor"] is None

        by_agent = _usage(http, group_by="agent")["data"]
        assert [(row["key"], row["name"], row["turns"], row["prompt_tokens"], row["completion_tokens"])
                for row in by_agent] == sorted([(chef["id"], "Chef", 3, 2000, 100),
                                                (baker["id"], "Baker", 1, 500, 10)])  # fmt: skip
        by_session = _usage(http, group_by="session", since=today, until=today)["data"]
        assert [(row["key"], row["turns"], row["prompt_tokens"], row["cached_tokens"]) for row in by_session] == [
            ("s1", 2, 1700, cached), ("s2", 1, 300, 0), ("s3", 1, 500, 0)]  # fmt: skip
        assert by_session[1]["cost"] == pytest.approx(_cost(300, 20, 0), abs=1e-9)

        page = _usage(http, group_by="session", limit=2)
        assert [row["key"] for row in page["data"]] == ["s1", "s2"] and page["next_cursor"] == "s2"
        rest = _usage(http, group_by="session", limit=2, cursor=page["next_cursor"])
        assert [row["key"] for row in rest["data"]] == ["s3"] and rest["next_cursor"] is None

        # Another tenant: its own (empty) usage, though it uses the same session ids.
        assert _usage(bob)["data"] == [] and _usage(bob, group_by="session")["data"] == []
        assert _usage(bob)["total"]["turns"] == 0


def test_a_summary_s_tokens_count_in_usage_without_a_turn(stack: Any) -> None:
    stack.start_web(env=PRICES)
    stack.start_workers(env=PRICES)
    with client(stack.web_url, stack.api_key) as http:
        chef = create_agent(http, model=MODEL)
        _script(stack, {"reply": "one", "usage": {"prompt_tokens": 100, "completion_tokens": 10}})
        _chat(http, "Chef", "s1")
        _script(stack, {"reply": "They said hello.", "usage": {"prompt_tokens": 400, "completion_tokens": 30}})
        summary = http.post("/api/v1/sessions/s1/summary")
        assert summary.status_code == 200, summary.text
        assert summary.json()["summary"] == {"text": "They said hello."}

        totals = {"turns": 1, "prompt_tokens": 500, "completion_tokens": 40, "cached_tokens": 0}
        (row,) = _usage(http, group_by="session")["data"]
        assert row == {"key": "s1", **totals, "cost": pytest.approx(_cost(100, 10, 0) + _cost(400, 30, 0), abs=1e-9)}
        (row,) = _usage(http, group_by="agent")["data"]
        assert row["key"] == chef["id"] and row["prompt_tokens"] == 500 and row["turns"] == 1


def test_a_turn_canceled_mid_loop_counts_the_tokens_it_spent_once(stack: Any) -> None:
    stack.start_web(env=PRICES)
    stack.start_workers(env=PRICES)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=MODEL, tools=["calculator"])
        _script(stack, {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}],
                        "usage": {"prompt_tokens": 800, "completion_tokens": 40}},
                {"hang": True})  # fmt: skip
        accepted = http.post("/api/v1/chat/jobs", json={"message": "work", "session_id": "c1"})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        _wait_for(lambda: stack.model_server.control("stats")["open_streams"] >= 1 and len(model_requests(stack)) == 2)
        assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
        assert wait_job(http, job_id)["status"] == "canceled"
        # The worker finds the cancel (its watch), stops the hanging call and counts the first call's tokens.
        _wait_for(lambda: _usage(http)["total"]["turns"] == 1, timeout=20)
        totals = {"turns": 1, "prompt_tokens": 800, "completion_tokens": 40, "cached_tokens": 0}
        assert _usage(http, group_by="session")["data"] == [{"key": "c1", **totals,
                                                              "cost": pytest.approx(_cost(800, 40, 0), abs=1e-9)}]
        # A second cancel changes nothing, and the session's next turn counts as one more.
        assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code in (202, 409)
        _script(stack, {"reply": "done", "usage": {"prompt_tokens": 100, "completion_tokens": 5}})
        assert _chat(http, "Chef", "c1")["status"] == "finished"
        assert {k: v for k, v in _usage(http)["total"].items() if k != "cost"} == {
            "turns": 2, "prompt_tokens": 900, "completion_tokens": 45, "cached_tokens": 0}


def test_usage_without_prices_shows_no_cost(stack: Any) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=MODEL)
        _script(stack, {"reply": "ok", "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
        assert _chat(http, "Chef", "s1")["status"] == "finished"
        body = _usage(http, group_by="agent", since=datetime.now(UTC).isoformat())
        assert "currency" not in body and "cost" not in body["total"]
        assert [{k: v for k, v in row.items() if k not in ("key",)} for row in body["data"]] == [
            {"name": "Chef", "turns": 1, "prompt_tokens": 12, "completion_tokens": 3, "cached_tokens": 0}]


def test_a_turn_retried_after_its_worker_died_counts_once(stack: Any) -> None:
    """The attempt cut short by the kill commits nothing and counts nothing; the attempt that ends the turn counts
    once, with the tokens the model reported to it."""
    stack.start_web()
    [worker] = stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=MODEL)
        _script(stack, {"reply": "a slow answer with many words", "chunk_delay_ms": 300,
                        "usage": {"prompt_tokens": 111, "completion_tokens": 11}},
                {"reply": "the answer", "usage": {"prompt_tokens": 222, "completion_tokens": 22}})  # fmt: skip
        job_id = http.post("/api/v1/chat/jobs", json={"message": "hi", "session_id": "k"}).json()["job_id"]
        events: list[Event] = []
        reader = _stream_in_thread(http, f"/api/v1/jobs/{job_id}/events", events)
        _wait_for(lambda: any(e.type == "delta" for e in events))
        worker.kill()
        stack.start_workers()
        assert wait_job(http, job_id)["status"] == "finished"
        reader.join(timeout=30)
        assert any(e.type == "status" and e.data.get("message") == "retrying" for e in events)
        rows = _usage(http, group_by="session")["data"]
        assert [(row["key"], row["turns"], row["prompt_tokens"], row["completion_tokens"]) for row in rows] == [
            ("k", 1, 222, 22)]  # fmt: skip


HOSTILE: list[dict[str, Any]] = [
    {"group_by": "tenant"}, {"group_by": ""}, {"since": "yesterday"}, {"since": "2026-13-01"},
    {"until": "2026-02-30"}, {"since": "2026-01-10", "until": "2026-01-09"},
    {"since": "2024-01-01", "until": "2026-01-01"},
    {"since": "0001-01-01T00:00:00+01:00"}, {"until": "9999-12-31T23:00:00-05:00"}, {"since": "2026-01-01\x00"},
    {"since": "9" * 70}, {"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"cursor": "x" * 300},
]  # fmt: skip


def test_hostile_parameters_get_422(stack: Any) -> None:
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        for params in HOSTILE:
            response = http.get("/api/v1/usage", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["error"]["code"], params
        assert http.get("/api/v1/usage?since=%ED%A0%80&until=%FF").status_code == 422  # a lone surrogate, not UTF-8
        assert http.get("/api/v1/usage", params={"since": "2025-01-01", "until": "2026-01-01"}).status_code == 200
        assert http.get("/api/v1/usage", params={"since": "0001-01-01"}).status_code == 422  # 366 days at most
        assert http.get("/api/v1/usage", params={"since": "0001-01-01", "until": "0001-01-05"}).status_code == 200
    with client(stack.web_url, None) as anonymous:
        assert anonymous.get("/api/v1/usage").status_code == 401
