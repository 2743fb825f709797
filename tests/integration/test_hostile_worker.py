"""A hostile model and hostile tools against the real stack (Redis, web, worker, scripted model server):
an idle or timed-out model stream ends the turn as a 504 without retries; lone surrogates from the model
or a tool never wedge a session; a tool's side effect survives a killed worker once; notes are
committed with their turn only, and a turn without a session has none."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.fixture_tools import BUMPS_KEY
from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, messages, model_requests, wait_job
from tests.sse_client import Event, collect

TOOL_ENV = {"PARLEY_TOOL_MODULES": "tests.fixture_tools"}
FFFD = "\ufffd"


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    """Steps as Python's json.dumps writes them: a lone surrogate as the escape `"\\ud800"`."""
    stack.model_server.control("script", list(steps))


def _no_surrogate(text: str) -> None:
    text.encode("utf-8")  # raises on a lone surrogate


def test_a_model_that_only_trickles_keep_alives_fails_the_turn_with_504_promptly_and_once(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_MODEL_IDLE_TIMEOUT_S": "1.5"})
    _script(stack, {"keepalive_ms": 100})
    with client(stack.web_url, stack.api_key, timeout=30) as http:
        create_agent(http)
        started = time.monotonic()
        response = http.post("/api/v1/chat", json={"message": "hello?", "session_id": "idle"})
        took = time.monotonic() - started
        assert response.status_code == 504, response.text
        body = response.json()["error"]
        assert "no content for 1.5 s" in body["message"]
        assert took < 10, f"the idle turn took {took:.1f} s"
        job = wait_job(http, body["job_id"])
        assert job["status"] == "failed"
        time.sleep(2)  # a retry would have asked the model again by now
        assert len(model_requests(stack)) == 1
        events = collect(http, "GET", f"/api/v1/jobs/{body['job_id']}/events")
        assert not any(e.type == "status" and e.data.get("message") == "retrying" for e in events)
        assert [(e.type, e.data.get("code")) for e in events[-2:]] == [("error", "model_timeout"), ("done", None)]
        assert stack.model_server.control("stats")["open_streams"] == 0  # the worker hung up
        assert http.post("/api/v1/chat", json={"message": "again", "session_id": "idle"}).status_code == 200


def test_a_read_timeout_mid_stream_answers_504(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_MODEL_TIMEOUT_S": "1", "PARLEY_MODEL_MAX_RETRIES": "0"})
    _script(stack, {"reply": "slow words here", "chunk_delay_ms": 4000})
    with client(stack.web_url, stack.api_key, timeout=30) as http:
        create_agent(http)
        response = http.post("/api/v1/chat", json={"message": "hi", "session_id": "rt"})
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "timeout"
        assert "timed out" in response.json()["error"]["message"]
        assert wait_job(http, response.json()["error"]["job_id"])["status"] == "failed"


def test_a_lone_surrogate_in_the_models_answer_becomes_fffd_and_the_session_goes_on(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, {"reply": "broken \ud800 half", "reasoning": "thinking \udc00"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "hi", "session_id": "u"})
        assert events[-1].type == "done"
        response = next(e for e in events if e.type == "response")
        assert response.data["content"] == f"broken {FFFD} half"
        assert any(e.type == "thinking" and FFFD in e.data["message"] for e in events)
        history = messages(http, "u")
        assert history[-1]["content"] == f"broken {FFFD} half"
        assert http.get("/api/v1/sessions/u").status_code == 200
        nxt = http.post("/api/v1/chat", json={"message": "next", "session_id": "u"})
        assert nxt.status_code == 200, nxt.text
        assert nxt.json()["response"] == "echo: next | earlier: hi"
        _script(stack, {"reply": "again \udfff"})
        chat = http.post("/api/v1/chat", json={"message": "more", "session_id": "u"})
        assert chat.status_code == 200 and chat.json()["response"] == f"again {FFFD}"


def test_a_lone_surrogate_in_a_tool_result_becomes_fffd_and_the_session_goes_on(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(env=TOOL_ENV)
    _script(stack, {"tool_calls": [{"name": "unpaired", "arguments": {"text": "arg \ud801"}}]}, {"reply": "ok then"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["unpaired"])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "hi", "session_id": "t"})
        assert [e.type for e in events[-2:]] == ["response", "done"]
        [execution] = [e for e in events if e.type == "tool_execution"]
        assert execution.data["args"] == {"text": f"arg {FFFD}"}
        [result] = [e for e in events if e.type == "tool_result"]
        assert result.data["ok"] and result.data["preview"] == f"half a pair: {FFFD} arg {FFFD}"
        history = messages(http, "t")
        assert [m["content"] for m in history if m["role"] == "tool"] == [f"half a pair: {FFFD} arg {FFFD}"]
        for message in history:
            _no_surrogate(json.dumps(message, ensure_ascii=False))
        sent = model_requests(stack)[-1]["body"]["messages"]
        assert sent[-1]["content"] == f"half a pair: {FFFD} arg {FFFD}"
        nxt = http.post("/api/v1/chat", json={"message": "next", "session_id": "t"})
        assert nxt.status_code == 200, nxt.text


def test_a_tool_that_ran_before_the_worker_was_killed_is_replayed_not_run_again(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    [worker] = stack.start_workers(env=TOOL_ENV)
    r = stack.redis()
    _script(stack,
            {"tool_calls": [{"name": "bump", "arguments": {}}]},
            {"hang": True},  # the first attempt waits here, its tool run done, until the worker is killed
            {"tool_calls": [{"name": "bump", "arguments": {}}]},  # the retried attempt asks for the same call
            {"reply": "bumped once"})  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["bump"])
        job_id = http.post("/api/v1/chat/jobs", json={"message": "bump it", "session_id": "b"}).json()["job_id"]
        wait_until(lambda: r.get(BUMPS_KEY) == "1" and stack.model_server.control("stats")["open_streams"] >= 1,
                   timeout=30)  # fmt: skip
        worker.kill()
        stack.start_workers(env=TOOL_ENV)
        record = wait_job(http, job_id, timeout=90)
        assert record["status"] == "finished", record
        assert r.get(BUMPS_KEY) == "1"
        events = collect(http, "GET", f"/api/v1/jobs/{job_id}/events")
        assert any(e.type == "status" and e.data.get("message") == "retrying" for e in events)
        assert [e.data["preview"] for e in events if e.type == "tool_result"] == ["bumped to 1", "bumped to 1"]
        assert [m["content"] for m in messages(http, "b") if m["role"] == "tool"] == ["bumped to 1"]
        assert len(model_requests(stack)) == 4


def _tool_results(events: list[Event]) -> list[tuple[bool, str]]:
    return [(e.data["ok"], e.data["preview"]) for e in events if e.type == "tool_result"]


def test_a_finished_turns_notes_are_kept_and_a_canceled_turns_vanish(stack) -> None:
    stack.start_web()
    stack.start_workers()
    remember = {"tool_calls": [{"name": "remember", "arguments": {"note": "likes figs"}}]}
    recall = {"tool_calls": [{"name": "recall", "arguments": {}}]}
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["remember", "recall"])
        _script(stack, remember, {"reply": "noted"})
        assert http.post("/api/v1/chat", json={"message": "remember figs", "session_id": "n"}).status_code == 200

        _script(stack, {"tool_calls": [{"name": "remember", "arguments": {"note": "likes dates"}}]}, {"hang": True})
        job_id = http.post("/api/v1/chat/jobs", json={"message": "and dates", "session_id": "n"}).json()["job_id"]
        wait_until(lambda: stack.model_server.control("stats")["open_streams"] >= 1, timeout=30)
        assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
        assert wait_job(http, job_id)["status"] == "canceled"

        _script(stack, recall, {"reply": "here they are"})
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "what do I like?", "session_id": "n"})
        assert _tool_results(events) == [(True, "1. likes figs")]
        assert stack.redis().keys("parley:pending-notes:*") == []


def test_a_turn_without_a_session_has_no_notes(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, {"tool_calls": [{"name": "remember", "arguments": {"note": "secret"}}]}, {"reply": "fine"})
    with client(stack.web_url, stack.api_key) as http:
        agent = create_agent(http, tools=["remember", "recall"])
        response = http.post("/v1/chat/completions", json={"model": agent["id"], "messages": [
            {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "remember my secret"}]})  # fmt: skip
        assert response.status_code == 200, response.text
        told = model_requests(stack)[-1]["body"]["messages"][-1]
        assert told["role"] == "tool" and "no memory between turns" in told["content"]
        assert stack.redis().keys("parley:*notes*") == []


def test_a_summary_whose_model_only_trickles_keep_alives_answers_504(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_MODEL_IDLE_TIMEOUT_S": "1.5"})
    with client(stack.web_url, stack.api_key, timeout=30) as http:
        create_agent(http)
        assert http.post("/api/v1/chat", json={"message": "hello", "session_id": "sum"}).status_code == 200
        _script(stack, {"keepalive_ms": 100})
        response = http.post("/api/v1/sessions/sum/summary")
        assert response.status_code == 504, response.text
        assert "no content for 1.5 s" in response.json()["error"]["message"]
        assert stack.model_server.control("stats")["open_streams"] == 0  # the worker hung up
        assert http.post("/api/v1/sessions/sum/summary").status_code == 200  # its lock was released
