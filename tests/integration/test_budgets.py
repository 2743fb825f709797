"""Budgets end to end (real Redis, web, worker and the scripted model server, which reports the token counts a
step gives): a tenant at its PARLEY_TENANT_BUDGETS is refused with 429 `budget_exceeded` on every chat route while
another tenant goes on; a turn that crosses the budget mid-loop ends `failed` before its next model call; an
agent's `max_tool_steps` and `max_turn_tokens` stop its loop with an answer."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, messages, model_requests, wait_job
from tests.sse_client import collect

DAY_S = 86_400


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _to_midnight() -> int:
    return DAY_S - int(time.time()) % DAY_S


def _spent(stack: Any, tenant: str) -> int:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    with stack.redis() as r:
        return int(r.get(f"parley:budget-spent:{tenant}:{day}") or 0)


def _calc(expression: str) -> dict[str, Any]:
    return {"name": "calculator", "arguments": {"expression": expression}}


def test_a_tenant_at_its_budget_is_refused_on_every_route_while_another_goes_on(stack) -> None:
    stack.start_web(2, env={"PARLEY_TENANT_BUDGETS": "alice:100,*:100000"})
    stack.start_workers(env={"PARLEY_TENANT_BUDGETS": "alice:100,*:100000"})
    _script(stack, {"reply": "first answer", "usage": {"prompt_tokens": 80, "completion_tokens": 30}})
    one, two = stack.web_urls
    with client(one, "key-alice") as alice, client(two, "key-alice") as alice2, client(two, "key-bob") as bob:
        create_agent(alice)
        create_agent(bob)
        first = alice.post("/api/v1/chat", json={"message": "hello", "session_id": "a"})
        assert first.status_code == 200 and first.json()["response"] == "first answer"
        assert _spent(stack, "alice") == 110  # what the model reported, counted as the call ended
        served = len(model_requests(stack))
        sessions = alice.get("/api/v1/sessions").json()["data"]

        for http, route, body in [
            (alice, "/api/v1/chat", {"message": "again", "session_id": "a"}),
            (alice2, "/api/v1/chat/jobs", {"message": "again", "session_id": "new"}),
            (alice2, "/api/v1/chat/stream", {"message": "again"}),
        ]:  # fmt: skip
            refused = http.post(route, json=body)
            assert refused.status_code == 429, (route, refused.text)
            assert refused.json()["error"]["code"] == "budget_exceeded", route
            assert "spent" in refused.json()["error"]["message"]
            assert abs(int(refused.headers["retry-after"]) - _to_midnight()) <= 5, route

        openai = alice2.post("/v1/chat/completions", json={"model": "Chef", "messages": [
            {"role": "user", "content": "hi"}]})  # fmt: skip
        assert openai.status_code == 429, openai.text
        assert openai.json()["error"]["code"] == "budget_exceeded"
        assert abs(int(openai.headers["retry-after"]) - _to_midnight()) <= 5

        a2a = alice.post("/a2a/Chef", json={"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {
            "message": {"kind": "message", "messageId": "m", "role": "user", "parts": [{"kind": "text",
                                                                                       "text": "hi"}]}}})  # fmt: skip
        assert a2a.status_code == 429 and int(a2a.headers["retry-after"]) > 0
        assert a2a.json()["error"]["code"] == -32603

        report = alice.post("/api/v1/sessions/a/summary")  # a summary report calls the model too
        assert report.status_code == 429 and report.json()["error"]["code"] == "budget_exceeded", report.text
        assert abs(int(report.headers["retry-after"]) - _to_midnight()) <= 5

        assert len(model_requests(stack)) == served  # nothing reached the model
        assert alice.get("/api/v1/sessions").json()["data"] == sessions  # nothing was created

        other = bob.post("/api/v1/chat", json={"message": "bob goes on", "session_id": "b"})
        assert other.status_code == 200, other.text
        assert other.json()["response"] == "echo: bob goes on"

        metrics = alice.get("/metrics").text
        assert 'parley_budget_stops_total{reason="refused"}' in metrics


def test_a_turn_that_crosses_the_budget_mid_loop_fails_before_its_next_model_call(stack) -> None:
    stack.start_web(env={"PARLEY_TENANT_BUDGETS": "alice:100"})
    stack.start_workers(env={"PARLEY_TENANT_BUDGETS": "alice:100"})
    _script(stack,
            {"tool_calls": [_calc("2+3")], "usage": {"prompt_tokens": 70, "completion_tokens": 40}},
            {"reply": "never asked"})  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["calculator"])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "sum it", "session_id": "m"})
        assert len(model_requests(stack)) == 1  # the second model call never happened
        kinds = [event.type for event in events if event.type not in ("delta", "status")]
        assert kinds == ["session", "tool_execution", "tool_result", "error", "done"]
        error = events[-2].data
        assert error["code"] == "budget_exceeded" and "110 of 100" in error["message"]
        job = wait_job(http, events[0].data["job_id"])
        assert job["status"] == "failed" and "spent" in job["error"]
        assert [m["role"] for m in messages(http, "m")] == ["assistant"]  # only the first message: nothing committed
        assert _spent(stack, "alice") == 110

        waited = http.post("/api/v1/chat", json={"message": "more", "session_id": "m2"})
        assert waited.status_code == 429 and waited.json()["error"]["code"] == "budget_exceeded"
        assert 'parley_budget_stops_total{reason="stopped"}' in http.get("/metrics").text


def test_a_turn_accepted_under_the_budget_fails_at_its_first_model_call_once_the_day_is_spent(stack) -> None:
    """Between accept and run another turn (here: the test) spent the day: the turn never calls the model, and the
    `/api/v1/chat` request waiting for it gets the 429 a refused request gets."""
    stack.start_web(env={"PARLEY_TENANT_BUDGETS": "alice:100"})  # no worker yet: the turns stay queued
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        queued = http.post("/api/v1/chat/jobs", json={"message": "one", "session_id": "x"})
        assert queued.status_code == 202
        r = stack.redis()
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(http.post, "/api/v1/chat", json={"message": "two", "session_id": "y"})
            wait_until(lambda: r.llen("rq:queue:parley-turns") == 2, timeout=10)
            r.set(f"parley:budget-spent:alice:{time.strftime('%Y-%m-%d', time.gmtime())}", 100)
            stack.start_workers(env={"PARLEY_TENANT_BUDGETS": "alice:100"})
            job = wait_job(http, queued.json()["job_id"])
            answer = waiting.result(timeout=30)
        assert job["status"] == "failed" and "100 of 100" in job["error"]
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "budget_exceeded"
        assert abs(int(answer.headers["retry-after"]) - _to_midnight()) <= 5
        assert model_requests(stack) == []
        assert 'parley_budget_stops_total{reason="stopped"}' in http.get("/metrics").text


def test_an_agent_s_max_tool_steps_is_honoured(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_TOOL_STEPS": "8"})
    stack.start_workers(env={"PARLEY_MAX_TOOL_STEPS": "8"})
    with client(stack.web_url, stack.api_key) as http:
        for bad in (0, 101, "many"):
            refused = http.post("/api/v1/agents", json={"name": f"bad-{bad}", "max_tool_steps": bad})
            assert refused.status_code == 422, refused.text
        agent = create_agent(http, tools=["calculator"], max_tool_steps=2)
        assert agent["max_tool_steps"] == 2
        assert http.patch("/api/v1/agents/Chef", json={"max_tool_steps": 0}).status_code == 422
        _script(stack, {"tool_calls": [_calc("1+1")]}, {"tool_calls": [_calc("2+2")]},
                {"tool_calls": [_calc("3+3")]}, {"reply": "too late"})  # fmt: skip
        answer = http.post("/api/v1/chat", json={"message": "loop", "session_id": "s"})
        assert answer.status_code == 200, answer.text
        assert "more than 2 tool steps" in answer.json()["response"]
        assert len(model_requests(stack)) == 2
        assert http.patch("/api/v1/agents/Chef", json={"max_tool_steps": 3}).json()["max_tool_steps"] == 3
        stack.model_server.control("reset", {})
        _script(stack, {"tool_calls": [_calc("1+1")]}, {"tool_calls": [_calc("2+2")]}, {"reply": "done in three"})
        assert http.post("/api/v1/chat", json={"message": "loop", "session_id": "s2"}).json()["response"] == \
            "done in three"  # fmt: skip
        assert len(model_requests(stack)) == 3


def test_max_turn_tokens_stops_a_loop_with_an_answer(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        for bad in (0, -1, 10**10):
            assert http.post("/api/v1/agents", json={"name": "x", "max_turn_tokens": bad}).status_code == 422
        create_agent(http, tools=["calculator"], max_turn_tokens=100)
        _script(stack,
                {"tool_calls": [_calc("1+1")], "usage": {"prompt_tokens": 70, "completion_tokens": 10}},
                {"tool_calls": [_calc("2+2")], "usage": {"prompt_tokens": 30, "completion_tokens": 10}},
                {"reply": "never asked"})  # fmt: skip
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "loop", "session_id": "c"})
        assert len(model_requests(stack)) == 2
        response = events[-2]
        assert response.type == "response" and "used 120 tokens, past the 100" in response.data["content"]
        assert response.data["usage"]["prompt_tokens"] == 100 and response.data["usage"]["completion_tokens"] == 20
        job = wait_job(http, events[0].data["job_id"])
        assert job["status"] == "finished"
        history = messages(http, "c")
        assert [m["role"] for m in history] == ["assistant", "user", "assistant", "tool", "assistant", "tool",
                                                "assistant"]  # fmt: skip
        assert history[-1]["content"] == response.data["content"]  # the session's memory is whole
        assert 'parley_budget_stops_total{reason="turn_cap"}' in http.get("/metrics").text
