"""Approvals end to end: a tool call that waits for a person, against real Redis, web and worker processes
and the scripted model server. The waiting turn lives in Redis only: it survives SIGKILL of every process,
holds no worker slot, keeps its session's later turns behind it, and its approved tool runs exactly once."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.fixture_tools import BUMPS_KEY
from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, model_requests, wait_job
from tests.sse_client import Event, collect, iter_events

TOOL_ENV = {"PARLEY_TOOL_MODULES": "tests.fixture_tools"}
BUMP_THEN_ANSWER = (
    {"reply": "I will bump it.", "tool_calls": [{"name": "bump", "arguments": {}}]},
    {"reply": "Done bumping."},
)


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _queue(http: httpx.Client, message: str = "bump it", session_id: str = "s1") -> str:
    response = http.post("/api/v1/chat/jobs", json={"message": message, "session_id": session_id})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def _wait_status(http: httpx.Client, job_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(http.get(f"/api/v1/jobs/{job_id}").json())
        return found["status"] == status

    wait_until(reached, timeout=timeout, message=f"job {job_id} never became {status}: {found}")
    return found


def _events_until(http: httpx.Client, job_id: str, kind: str) -> list[Event]:
    """The job's events from its first, up to the first of type `kind` (the stream stays open while it waits)."""
    seen: list[Event] = []
    with http.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        for event in iter_events(response):
            seen.append(event)
            if event.type == kind:
                return seen
    raise AssertionError(f"the stream ended before a {kind} event: {[e.data for e in seen]}")


def _tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["body"]["messages"] if m["role"] == "tool"]


def test_an_approval_survives_sigkill_of_every_process_and_the_tool_runs_once(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(env=TOOL_ENV)
    _script(stack, *BUMP_THEN_ANSWER)
    bumps = stack.redis()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["bump"], approval=["bump"])
        job_id = _queue(http)
        asked = _events_until(http, job_id, "approval_required")[-1].data
        assert asked["tool_name"] == "bump" and asked["args"] == {} and asked["call_id"]
        job = _wait_status(http, job_id, "waiting")
        assert job["pending"] == [{"call_id": asked["call_id"], "kind": "approval", "tool_name": "bump", "args": {}}]
        session = http.get("/api/v1/sessions/s1").json()
        assert session["active_jobs"] == [job_id]
    assert bumps.get(BUMPS_KEY) is None  # nothing ran before the decision
    for proc in stack.processes:
        proc.kill()
    stack.webs.clear()
    stack.workers.clear()
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(2, env=TOOL_ENV)
    with client(stack.web_url, stack.api_key) as http:
        assert http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "waiting"
        response = http.post(f"/api/v1/jobs/{job_id}/approvals", json={"call_id": asked["call_id"], "approve": True})
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        again = http.post(f"/api/v1/jobs/{job_id}/approvals", json={"call_id": asked["call_id"], "approve": True})
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        job = wait_job(http, job_id)
        assert job["status"] == "finished", job
        assert job["result"]["response"] == "Done bumping."
        assert job["pending"] is None
        events = collect(http, "GET", f"/api/v1/jobs/{job_id}/events")
    assert bumps.get(BUMPS_KEY) == "1"
    kinds = [(e.type, e.data.get("message")) for e in events]
    waited = kinds.index(("status", "waiting"))
    assert kinds[waited - 1] == ("approval_required", None)
    after = kinds[waited + 1 :]
    assert after[:2] == [("status", "decided"), ("status", "resumed")]
    results = [e.data for e in events if e.type == "tool_result"]
    assert [(r["call_id"], r["ok"], r["preview"]) for r in results] == [(asked["call_id"], True, "bumped to 1")]
    assert _tool_messages(model_requests(stack)[-1]) == ["bumped to 1"]


def test_a_denied_call_reaches_the_model_as_denied_with_the_reason(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    stack.start_workers(env=TOOL_ENV)
    _script(stack, *BUMP_THEN_ANSWER)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["bump", "calculator"], approval=["b*"])
        job_id = _queue(http)
        call_id = _wait_status(http, job_id, "waiting")["pending"][0]["call_id"]
        unknown = http.post(f"/api/v1/jobs/{job_id}/approvals", json={"call_id": "nope", "approve": False})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        missing = http.post("/api/v1/jobs/job_0/approvals", json={"call_id": call_id, "approve": False})
        assert missing.status_code == 404
        bad = http.post(f"/api/v1/jobs/{job_id}/approvals", json={"call_id": call_id, "approve": "maybe"})
        assert bad.status_code == 422
        denied = http.post(f"/api/v1/jobs/{job_id}/approvals",
                           json={"call_id": call_id, "approve": False, "reason": "not on a Sunday"})  # fmt: skip
        assert denied.status_code == 202, denied.text
        job = wait_job(http, job_id)
        assert job["status"] == "finished"
        late = http.post(f"/api/v1/jobs/{job_id}/approvals", json={"call_id": call_id, "approve": True})
        assert late.status_code == 409
    assert stack.redis().get(BUMPS_KEY) is None
    told = _tool_messages(model_requests(stack)[-1])
    assert len(told) == 1 and "denied" in told[0] and "not on a Sunday" in told[0]


def test_a_waiting_turn_frees_its_slot_holds_its_session_and_can_be_canceled(stack) -> None:
    env = {**TOOL_ENV, "PARLEY_TENANT_CONCURRENCY": "1", "PARLEY_WORKER_CONCURRENCY": "1"}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    _script(stack, BUMP_THEN_ANSWER[0])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["bump"], approval=["*"])
        waiting = _queue(http, session_id="held")
        _wait_status(http, waiting, "waiting")
        behind = _queue(http, "and then?", session_id="held")
        other = _queue(http, "hello", session_id="free")
        assert wait_job(http, other)["status"] == "finished"  # the tenant's one place and the worker's one slot
        assert http.get(f"/api/v1/jobs/{behind}").json()["status"] == "queued"  # behind the waiting turn
        canceled = http.post(f"/api/v1/jobs/{waiting}/cancel")
        assert canceled.status_code == 202 and canceled.json()["canceled"] is True
        assert wait_job(http, waiting)["status"] == "canceled"
        assert wait_job(http, behind)["status"] == "finished"
        events = collect(http, "GET", f"/api/v1/jobs/{waiting}/events")
        assert [e.type for e in events][-2:] == ["error", "done"]
    assert stack.redis().get(BUMPS_KEY) is None


def test_a_wait_past_the_approval_timeout_ends_denied_as_timed_out(stack) -> None:
    env = {**TOOL_ENV, "PARLEY_APPROVAL_TIMEOUT_S": "1"}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    _script(stack, *BUMP_THEN_ANSWER)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["bump"], approval=["bump"])
        job_id = _queue(http)
        started = time.monotonic()
        job = wait_job(http, job_id)
        assert job["status"] == "finished" and time.monotonic() - started >= 1
    told = _tool_messages(model_requests(stack)[-1])
    assert len(told) == 1 and "timed out" in told[0]
    assert stack.redis().get(BUMPS_KEY) is None


def test_an_approved_call_whose_worker_dies_while_it_runs_is_not_run_again(stack) -> None:
    """At most once: the call is claimed before it runs, so the retried turn finds the claim and tells the model
    the call was interrupted, instead of running the side effect a second time."""
    env = {**TOOL_ENV, "PARLEY_TOOL_TIMEOUT_S": "60"}
    stack.start_web(env=env)
    [worker] = stack.start_workers(env=env)
    _script(stack, {"tool_calls": [{"name": "bump_then_wait", "arguments": {"seconds": 50}}]}, {"reply": "Hm."})
    bumps = stack.redis()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["bump_then_wait"], approval=["bump_*"])
        job_id = _queue(http)
        call_id = _wait_status(http, job_id, "waiting")["pending"][0]["call_id"]
        approved = http.post(f"/api/v1/jobs/{job_id}/approvals", json={"call_id": call_id, "approve": True})
        assert approved.status_code == 202
        wait_until(lambda: bumps.get(BUMPS_KEY) == "1", timeout=30, message="the approved call never ran")
        worker.kill()
        stack.start_workers(env=env)
        job = wait_job(http, job_id, timeout=90)
        assert job["status"] == "finished", job
        events = collect(http, "GET", f"/api/v1/jobs/{job_id}/events")
    assert bumps.get(BUMPS_KEY) == "1"
    assert ("status", "retrying") in [(e.type, e.data.get("message")) for e in events]
    told = _tool_messages(model_requests(stack)[-1])
    assert len(told) == 1 and "stopped while it ran" in told[0] and "not run again" in told[0]
