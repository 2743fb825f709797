"""`on_busy` end to end (the contract's "Busy sessions"), on real Redis, webs and workers and the scripted model:
`reject` refuses while a turn of the session is under way, `interrupt` cancels it and runs next, `steer` joins the
running turn before its next model call (wherever it runs) or, when that turn makes no further call, becomes the
next turn."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, messages, model_requests, user_contents, wait_job
from tests.sse_client import collect

TOOL_ENV = {"PARLEY_TOOL_MODULES": "tests.fixture_tools"}


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _queue(http: httpx.Client, message: str, session_id: str = "s1", **extra: Any) -> dict[str, Any]:
    response = http.post("/api/v1/chat/jobs", json={"message": message, "session_id": session_id, **extra})
    assert response.status_code == 202, response.text
    return dict(response.json())


def _wait_status(http: httpx.Client, job_id: str, *statuses: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(http.get(f"/api/v1/jobs/{job_id}").json())
        return found["status"] in statuses

    wait_until(reached, timeout=30, message=f"job {job_id} never became {statuses}: {found}")
    return found


def _wait_for_tool(http: httpx.Client, job_id: str) -> None:
    """Until the turn's tool runs (its `tool_execution` event is in the job's stream)."""
    with http.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        for line in response.iter_lines():
            if '"tool_execution"' in line:
                return
    raise AssertionError(f"job {job_id} ended without running its tool")


def test_reject_refuses_while_a_turn_is_under_way_and_creates_nothing(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, {"reply": "slow answer", "delay_ms": 1500})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        first = _queue(http, "first")
        refused = http.post("/api/v1/chat/jobs", json={"message": "second", "session_id": "s1", "on_busy": "reject"})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "session_busy" and error["job_id"] == first["job_id"]
        blocking = http.post("/api/v1/chat", json={"message": "second", "session_id": "s1", "on_busy": "reject"})
        assert blocking.status_code == 409 and blocking.json()["error"]["code"] == "session_busy"
        assert wait_job(http, first["job_id"])["status"] == "finished"
        assert http.get("/api/v1/sessions/s1").json()["active_jobs"] == []
        later = http.post("/api/v1/chat", json={"message": "now", "session_id": "s1", "on_busy": "reject"})
        assert later.status_code == 200, later.text
        bad = http.post("/api/v1/chat", json={"message": "x", "session_id": "s1", "on_busy": "sometimes"})
        assert bad.status_code == 422
        contents = [m["content"] for m in messages(http, "s1") if m["role"] == "user"]
    assert contents == ["first", "now"]  # the refused requests left nothing


def test_interrupt_cancels_the_running_turn_commits_nothing_of_it_and_runs_next(stack) -> None:
    stack.start_web()
    stack.start_workers(2)
    _script(stack, {"reply": "never seen", "hang": True}, {"reply": "queued one"}, {"reply": "after the interrupt"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        running = _queue(http, "long question")
        wait_until(lambda: len(model_requests(stack)) == 1, timeout=30, message="the model was never called")
        waiting = _queue(http, "queued behind")
        interrupting = _queue(http, "stop, do this instead", on_busy="interrupt")
        job = wait_job(http, running["job_id"])
        assert job["status"] == "canceled"
        done = wait_job(http, interrupting["job_id"])
        assert done["status"] == "finished" and done["result"]["response"] == "queued one"
        behind = wait_job(http, waiting["job_id"])
        assert behind["status"] == "finished" and behind["result"]["response"] == "after the interrupt"
        assert done["ended_at"] <= behind["started_at"]  # the interrupting turn ran first, then the queued one
        history = [(m["role"], m["content"]) for m in messages(http, "s1")[1:]]
    assert history == [("user", "stop, do this instead"), ("assistant", "queued one"),
                       ("user", "queued behind"), ("assistant", "after the interrupt")]  # fmt: skip


def test_a_steer_joins_a_tool_using_turn_on_another_worker_and_changes_its_answer(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(2, env=TOOL_ENV)
    _script(stack, {"reply": "Let me think.", "tool_calls": [{"name": "slow", "arguments": {"seconds": 2}}]})
    with client(stack.web_url, stack.api_key) as http, client(stack.web_urls[1], stack.api_key) as other:
        create_agent(http, tools=["slow"])
        running = _queue(http, "plan my trip")
        _wait_for_tool(http, running["job_id"])
        steer = other.post("/api/v1/chat", json={"message": "make it Paris", "session_id": "s1", "on_busy": "steer"})
        assert steer.status_code == 200, steer.text
        answer = steer.json()
        job = wait_job(http, running["job_id"])
        assert job["status"] == "finished"
        assert answer["job_id"] == running["job_id"] and answer["response"] == job["result"]["response"]
        events = collect(http, "GET", f"/api/v1/jobs/{running['job_id']}/events")
        history = [(m["role"], m["content"]) for m in messages(http, "s1")[1:]]
        session = http.get("/api/v1/sessions/s1").json()
    kinds = [e.type for e in events]
    steered = kinds.index("steered")
    assert events[steered].data["message"] == "make it Paris"
    assert kinds.index("tool_result") < steered < kinds.index("response")
    last = model_requests(stack)[-1]["body"]
    assert user_contents(last)[-1] == "make it Paris"  # the second model call saw the steer
    assert "make it Paris" in job["result"]["response"]  # the echo model answers the last user message
    assert [role for role, _ in history] == ["user", "assistant", "tool", "user", "assistant"]
    assert history[0] == ("user", "plan my trip") and history[3] == ("user", "make it Paris")
    assert session["message_count"] == 6 and session["active_jobs"] == []


def test_a_steer_job_shows_where_it_went(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(env=TOOL_ENV)
    _script(stack, {"reply": "", "tool_calls": [{"name": "slow", "arguments": {"seconds": 2}}]})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["slow"])
        running = _queue(http, "question")
        _wait_for_tool(http, running["job_id"])
        steer = _queue(http, "more detail", on_busy="steer")
        assert steer["steering"] == running["job_id"]
        job = wait_job(http, steer["job_id"])
        assert job["status"] == "finished" and job["steered_into"] == running["job_id"] and job["result"] is None
        events = collect(http, "GET", f"/api/v1/jobs/{steer['job_id']}/events")
        assert [e.type for e in events][-2:] == ["steered", "done"]
        steered = events[-2].data
        assert (steered["message"], steered["job_id"]) == ("more detail", running["job_id"])
        joined = collect(http, "GET", f"/api/v1/jobs/{running['job_id']}/events")
        assert [e.id for e in joined if e.type == "steered"] == [steered["at"]]
        assert wait_job(http, running["job_id"])["status"] == "finished"
        images = http.post("/api/v1/chat/jobs", json={"message": "x", "session_id": "s1", "on_busy": "steer",
                                                       "images": ["data:image/png;base64,iVBORw0KGgo="]})  # fmt: skip
        assert images.status_code == 422 and images.json()["error"]["field"] == "on_busy"


def test_a_steer_after_the_last_model_call_becomes_the_next_turn(stack) -> None:
    stack.start_web()
    stack.start_workers(2)
    # One model call that streams slowly: a steer sent while it streams finds no further model call to join.
    _script(stack, {"reply": "a long answer in many pieces", "chunks": 10, "chunk_delay_ms": 200})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        running = _queue(http, "tell me a story")
        wait_until(lambda: len(model_requests(stack)) == 1, timeout=30, message="the model was never called")
        time.sleep(0.3)  # the model call is under way
        steer = _queue(http, "and make it short", on_busy="steer")
        assert steer["steering"] == running["job_id"]
        first = wait_job(http, running["job_id"])
        assert first["status"] == "finished" and first["result"]["response"] == "a long answer in many pieces"
        second = wait_job(http, steer["job_id"])
        assert second["status"] == "finished" and second["steered_into"] is None
        assert second["result"]["response"].startswith("echo: and make it short")
        history = [(m["role"], m["content"]) for m in messages(http, "s1")[1:]]
    assert [content for role, content in history if role == "user"] == ["tell me a story", "and make it short"]


def test_a_steer_with_no_turn_under_way_is_an_ordinary_turn(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        response = http.post("/api/v1/chat", json={"message": "hello", "session_id": "idle", "on_busy": "steer"})
        assert response.status_code == 200, response.text
        assert response.json()["response"].startswith("echo: hello")
        accepted = _queue(http, "again", session_id="idle", on_busy="steer")
        assert accepted["steering"] is None
        assert wait_job(http, accepted["job_id"])["status"] == "finished"


def test_a_streamed_steer_goes_on_with_the_turn_it_joined(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(env=TOOL_ENV)
    _script(stack, {"reply": "", "tool_calls": [{"name": "slow", "arguments": {"seconds": 2}}]})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["slow"])
        running = _queue(http, "question")
        _wait_for_tool(http, running["job_id"])
        streamed = collect(http, "POST", "/api/v1/chat/stream",
                           json={"message": "in French", "session_id": "s1", "on_busy": "steer"})  # fmt: skip
        job = wait_job(http, running["job_id"])
    kinds = [e.type for e in streamed]
    assert kinds[:3] == ["session", "status", "steered"] and kinds[-2:] == ["response", "done"]
    assert kinds.count("done") == 1 and streamed[2].data["job_id"] == running["job_id"]
    assert streamed[-2].data["content"] == job["result"]["response"] and "in French" in job["result"]["response"]


def test_the_openai_clients_take_on_busy(stack) -> None:
    """The official openai SDK's responses and chat.completions, with Parley's `on_busy` in `extra_body`."""
    import openai

    stack.start_web(env=TOOL_ENV)
    stack.start_workers(env=TOOL_ENV)
    _script(stack, {"reply": "", "tool_calls": [{"name": "slow", "arguments": {"seconds": 2}}]})
    sdk = openai.OpenAI(base_url=f"{stack.web_url}/v1", api_key=stack.api_key, max_retries=0)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["slow"])
        running = _queue(http, "question")
        _wait_for_tool(http, running["job_id"])
        with_reject = {"messages": [{"role": "user", "content": "x"}], "model": "Chef",
                       "extra_headers": {"X-Parley-Session": "s1"}, "extra_body": {"on_busy": "reject"}}  # fmt: skip
        try:
            sdk.chat.completions.create(**with_reject)  # type: ignore[call-overload]
            raise AssertionError("a busy session's reject was accepted")
        except openai.ConflictError as error:
            assert error.status_code == 409
        steered = sdk.responses.create(model="Chef", input="answer in one word", conversation="s1",
                                       extra_body={"on_busy": "steer"})  # fmt: skip
        job = wait_job(http, running["job_id"])
        assert steered.status == "completed" and steered.output_text == job["result"]["response"]
        assert "answer in one word" in steered.output_text
        again = sdk.responses.retrieve(steered.id)
        assert again.output_text == steered.output_text
