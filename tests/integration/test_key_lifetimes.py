"""No key without a lifetime: after the ways a turn can end (finished, canceled before it started
while queued or waiting in its lane, failed, a `/v1` call that brought its own history and asked
to remember, a summary report), every key Parley or RQ left in Redis either expires or is data
that lives until it is deleted (agents, sessions and what belongs to them, counters and metrics).
"""

from __future__ import annotations

import time
from typing import Any

from tests.integration.helpers import client, create_agent, wait_job

TOOL_ENV = {"PARLEY_TOOL_MODULES": "tests.fixture_tools", "PARLEY_MODEL_MAX_RETRIES": "0"}

KEPT_UNTIL_DELETED = (
    "parley:agent:", "parley:agents:", "parley:agent-names:", "parley:session:", "parley:sessions:",
    "parley:agent-sessions:", "parley:messages:", "parley:images:", "parley:notes:", "parley:lane:",
    "parley:inflight:", "parley:tenant-admitted:", "parley:tenant-line:", "parley:metric:", "parley:web-streams",
    "parley:turn-ends",
)  # fmt: skip
"""Data that lives until deleted (a session's parts go with it); lanes and lines empty themselves,
counters are one per tenant, metrics one per metric; the turn-ends stream is one per deployment (every worker's
webhook dispatcher reads it as a group: entries are deleted once handled, and it is capped)."""
RQ_KEPT = ("rq:queue:", "rq:queues", "rq:workers", "rq:worker:", "rq:wip:", "rq:finished:", "rq:failed:",
           "rq:deferred:", "rq:scheduled:", "rq:canceled:", "rq:clean_registries:", "rq:executions:",
           "rq:results:", "rq:suspended", "rq:maintenance", "rq:cleaning")  # fmt: skip
"""RQ's own queues, registries (sorted sets of ids that RQ cleans itself) and worker records."""


SESSION_PARTS = ("parley:messages:", "parley:images:", "parley:notes:", "parley:lane:")
"""Kept with their session: one whose session does not exist is litter nothing will ever delete."""


RQ_DONE = {"finished", "failed", "canceled", "stopped"}
"""RQ statuses it sets in the same transaction as the job's expiry. A job's hash has no lifetime while it is queued
or running, and the HTTP answer of a turn or a summary comes from the job itself, a moment before its worker records
the ending (a CI run took the snapshot in that moment)."""


def _wait_for_rq_endings(stack: Any, timeout: float = 10.0) -> None:
    r = stack.redis()
    deadline = time.monotonic() + timeout
    while True:
        pending = [key for key in r.scan_iter(match="rq:job:*", count=1000)
                   if r.type(key) == "hash" and r.hget(key, "status") not in RQ_DONE]  # fmt: skip
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _without_lifetime(stack: Any) -> list[str]:
    r = stack.redis()
    found = []
    for key in r.scan_iter(count=1000):
        if key.startswith(SESSION_PARTS):
            _, _, tenant, session_id = key.split(":", 3)
            if not r.exists(f"parley:session:{tenant}:{session_id}"):
                found.append(f"{key} (its session does not exist)")
            continue
        if key.startswith(KEPT_UNTIL_DELETED) or key.startswith(RQ_KEPT):
            continue
        if r.pttl(key) == -1:
            found.append(f"{key} ({r.type(key)})")
    return sorted(found)


def test_every_ending_leaves_only_keys_that_expire_or_are_kept_data(stack) -> None:
    stack.start_web(env=TOOL_ENV)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, tools=["remember", "recall"])
        # Canceled before any worker runs them: the lane's head (in RQ's queue) and the turn behind it (deferred).
        head = http.post("/api/v1/chat/jobs", json={"message": "first", "session_id": "c"}).json()["job_id"]
        behind = http.post("/api/v1/chat/jobs", json={"message": "second", "session_id": "c"}).json()["job_id"]
        for job_id in (behind, head):
            assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
        stack.start_workers(env=TOOL_ENV)
        # A finished turn that remembered something, and a failed one.
        stack.model_server.control("script", [
            {"tool_calls": [{"name": "remember", "arguments": {"note": "likes basil"}}]},
            {"reply": "Noted."},
            {"status": 500, "body": "down"},
        ])  # fmt: skip
        assert http.post("/api/v1/chat", json={"message": "remember basil", "session_id": "s"}).status_code == 200
        assert http.post("/api/v1/chat", json={"message": "this one fails", "session_id": "s"}).status_code == 502
        # A /v1 call that brings its own history (no session) and asks to remember.
        stack.model_server.control("script", [
            {"tool_calls": [{"name": "remember", "arguments": {"note": "stateless"}}]}, {"reply": "ok"},
        ])  # fmt: skip
        completion = http.post("/v1/chat/completions", json={
            "model": "Chef", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                          {"role": "user", "content": "remember this"}]})  # fmt: skip
        assert completion.status_code == 200, completion.text
        # A summary report.
        assert http.post("/api/v1/sessions/s/summary").status_code == 200
        for job_id in (head, behind):
            assert wait_job(http, job_id)["status"] == "canceled"
    _wait_for_rq_endings(stack)
    assert _without_lifetime(stack) == []
