"""Branches and retention on the real stack (Redis, web, worker, the scripted model server over HTTP): a fork's
memory (messages, `remember` notes, rolling summary) is its own; a regenerate replaces the answer in the history and
in the next turn's context; an agent's `session_ttl_s` deletes a quiet session, not one with a turn in flight."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from parley.shared.store import keys
from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, messages, model_requests, wait_job

NOTES_AGENT = {"tools": ["remember", "recall"], "response_shape": None, "context": "", "instructions": ""}


def _remember(note: str, reply: str) -> list[dict[str, Any]]:
    return [{"tool_calls": [{"name": "remember", "arguments": {"note": note}}]}, {"reply": reply}]


def _recall(reply: str) -> list[dict[str, Any]]:
    return [{"tool_calls": [{"name": "recall", "arguments": {}}]}, {"reply": reply}]


def _chat(http: httpx.Client, session_id: str, message: str) -> dict[str, Any]:
    response = http.post("/api/v1/chat", json={"message": message, "session_id": session_id})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _said(request: dict[str, Any]) -> str:
    """Everything a model request held, as one text (messages, tool results), to look for a sibling's words."""
    return json.dumps(request["body"]["messages"])


def test_a_fork_and_its_source_go_on_each_with_its_own_messages_and_notes(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, **NOTES_AGENT)
        stack.model_server.control("script", _remember("likes basil", "noted basil"))
        _chat(http, "main", "I like basil")
        stack.model_server.control("script", _remember("hates cumin", "noted cumin"))
        _chat(http, "main", "I hate cumin")
        at = next(m["id"] for m in messages(http, "main") if m["content"] == "noted basil")

        forked = http.post("/api/v1/sessions/main/fork", json={"at": at, "session_id": "branch"})
        assert forked.status_code == 201, forked.text
        body = forked.json()
        assert body["session_id"] == "branch" and body["agent_name"] == "Chef"
        assert body["message_count"] == int(at.removeprefix("msg_")) + 1
        assert http.get("/api/v1/sessions/branch").json()["agent_id"] == body["agent_id"]
        assert [m["content"] for m in messages(http, "branch")][-1] == "noted basil"

        stack.model_server.control("reset", {})
        stack.model_server.control("script", _recall("branch recalled"))
        _chat(http, "branch", "what do you know, branch?")
        stack.model_server.control("script", _recall("main recalled"))
        _chat(http, "main", "what do you know, main?")
        branch_first, branch_recall, main_first, main_recall = model_requests(stack)

        # The branch's context: its own messages; its notes: those of the turns it holds.
        assert "I like basil" in _said(branch_first) and "I hate cumin" not in _said(branch_first)
        assert "likes basil" in _said(branch_recall) and "hates cumin" not in _said(branch_recall)
        # The source's: all of its own, nothing of the branch's.
        assert "I hate cumin" in _said(main_first) and "what do you know, branch?" not in _said(main_first)
        assert "likes basil" in _said(main_recall) and "hates cumin" in _said(main_recall)
        assert "branch recalled" not in _said(main_recall)

        # Refusals: unknown session or message 404, a taken id 409, a bad message id 422; nothing is made.
        assert http.post("/api/v1/sessions/nope/fork", json={"at": "msg_0"}).status_code == 404
        assert http.post("/api/v1/sessions/main/fork", json={"at": "msg_999"}).status_code == 404
        assert http.post("/api/v1/sessions/main/fork", json={"at": "msg_1", "session_id": "branch"}).status_code == 409
        assert http.post("/api/v1/sessions/main/fork", json={"at": "1"}).status_code == 422
        listed = http.get("/api/v1/sessions").json()["data"]
        assert sorted(s["session_id"] for s in listed) == ["branch", "main"]
        # Another tenant sees no such session to fork.
        other = http.post("/api/v1/sessions/main/fork", json={"at": "msg_0"}, headers=stack.headers("bob"))
        assert other.status_code == 404


def test_a_fork_keeps_the_rolling_summary_only_when_it_covers_nothing_past_the_fork(stack) -> None:
    env = {"PARLEY_CONTEXT_TOKENS": "400"}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    stack.model_server.control("script", [{"reply": "Noted: the user sent a list of words."}] * 40)
    words = " ".join(f"word{i}" for i in range(40))
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, context="", instructions="")
        r = stack.redis()
        turns = 0
        while not r.hget(keys.session("alice", "long"), "summary") and turns < 12:
            _chat(http, "long", f"turn {turns}: {words}")
            turns += 1
            wait_until(lambda: not r.exists(keys.summary_lock("alice", "long")), timeout=30,
                       message="the rolling summary job to end")  # fmt: skip
        summary = r.hget(keys.session("alice", "long"), "summary")
        upto = int(r.hget(keys.session("alice", "long"), "summary_upto") or 0)
        assert summary and upto > 2, f"no summary after {turns} turns"
        last = messages(http, "long")[-1]["id"]

        assert http.post("/api/v1/sessions/long/fork", json={"at": last, "session_id": "late"}).status_code == 201
        assert http.post("/api/v1/sessions/long/fork", json={"at": "msg_1", "session_id": "early"}).status_code == 201
        assert r.hget(keys.session("alice", "late"), "summary") == summary
        assert r.hget(keys.session("alice", "early"), "summary") is None

        stack.model_server.control("reset", {})
        _chat(http, "late", "late branch?")
        _chat(http, "early", "early branch?")
        sent = {request["body"]["messages"][-1]["content"]: request["body"]["messages"]
                for request in model_requests(stack)}  # (the late fork's own rolling summary may run between)
        late, early = sent["late branch?"], sent["early branch?"]
        assert late[1]["role"] == "system" and late[1]["content"].endswith(summary)
        assert [m["content"] for m in early] == ["Hello, I am your chef.", f"turn 0: {words}",
                                                 "early branch?"]  # fmt: skip


def test_regenerate_replaces_the_answer_in_the_history_and_the_next_context(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None)
        assert _chat(http, "r", "name a herb")["response"] == "echo: name a herb"

        stack.model_server.control("script", {"reply": "thyme"})
        again = http.post("/api/v1/chat", json={"regenerate": True, "session_id": "r"})
        assert again.status_code == 200, again.text
        assert again.json()["response"] == "thyme"
        regenerated = model_requests(stack)[-1]["body"]["messages"]
        assert regenerated[-1] == {"role": "user", "content": "name a herb"}
        assert "echo: name a herb" not in json.dumps(regenerated)  # not the old answer
        assert [m["content"] for m in messages(http, "r")] == ["Hello, I am your chef.", "name a herb", "thyme"]
        everything = http.get("/api/v1/sessions/r/messages", params={"include": "replaced"}).json()["data"]
        assert [(m["id"], m["content"], m.get("replaced")) for m in everything] == [
            ("msg_0", "Hello, I am your chef.", None), ("msg_1", "name a herb", None),
            ("msg_2", "echo: name a herb", True), ("msg_3", "thyme", None),
        ]  # fmt: skip

        # The stream and the job route regenerate too; each new answer replaces the one before.
        stack.model_server.control("script", {"reply": "basil"})
        with http.stream("POST", "/api/v1/chat/stream", json={"regenerate": True, "session_id": "r"}) as stream:
            assert stream.status_code == 200
            seen = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
        assert [e["type"] for e in seen][0] == "session" and seen[-1]["type"] == "done"
        assert any(e["type"] == "response" and e["content"] == "basil" for e in seen)
        stack.model_server.control("script", {"reply": "sage"})
        job = http.post("/api/v1/chat/jobs", json={"regenerate": True, "session_id": "r"})
        assert job.status_code == 202, job.text
        assert wait_job(http, job.json()["job_id"])["status"] == "finished"
        assert [m["content"] for m in messages(http, "r")] == ["Hello, I am your chef.", "name a herb", "sage"]

        # The next turn's context holds the latest answer only.
        _chat(http, "r", "and a spice?")
        context = model_requests(stack)[-1]["body"]["messages"]
        said = [m["content"] for m in context if m["role"] != "system"]
        assert said == ["Hello, I am your chef.", "name a herb", "sage", "and a spice?"]

        # The Conversations API shows the session's items without the replaced answers, a page at a time.
        for order in ("asc", "desc"):
            items: list[dict[str, Any]] = []
            after: dict[str, str] = {}
            while True:
                page = http.get("/v1/conversations/r/items", params={"order": order, "limit": 1, **after}).json()
                items += page["data"]
                if not page["has_more"]:
                    break
                after = {"after": page["last_id"]}
            assert len(items) == len(messages(http, "r")) == 5
            assert not {"echo: name a herb", "thyme", "basil"} & {part.get("text") for item in items
                                                                   for part in item.get("content") or ()}

        # Refused: no user message yet (409), no such session (404), a message with it (422).
        assert http.post("/api/v1/sessions", json={"session_id": "empty"}).status_code == 201
        empty = http.post("/api/v1/chat", json={"regenerate": True, "session_id": "empty"})
        assert empty.status_code == 409 and empty.json()["error"]["code"] == "nothing_to_regenerate"
        assert http.post("/api/v1/chat", json={"regenerate": True, "session_id": "none"}).status_code == 404
        assert http.post("/api/v1/chat", json={"regenerate": True, "session_id": "r",
                                               "message": "x"}).status_code == 422  # fmt: skip
        assert http.post("/api/v1/chat", json={"regenerate": True}).status_code == 422


def test_a_quiet_session_expires_and_one_with_a_turn_in_flight_stays(stack) -> None:
    env = {"PARLEY_SESSION_TTL_MIN_S": "1", "PARLEY_SESSION_SWEEP_S": "0.3"}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    with client(stack.web_url, stack.api_key) as http:
        assert http.post("/api/v1/agents", json={"name": "x", "session_ttl_s": 0}).status_code == 422
        create_agent(http, response_shape=None, tools=["calculator"], approval=["calculator"], session_ttl_s=2)
        _chat(http, "quiet", "hello")
        stack.model_server.control("script", [{"tool_calls": [{"name": "calculator",
                                                               "arguments": {"expression": "1+1"}}]}])  # fmt: skip
        waiting = http.post("/api/v1/chat/jobs", json={"message": "add", "session_id": "busy"}).json()
        wait_until(lambda: http.get(f"/api/v1/jobs/{waiting['job_id']}").json()["status"] == "waiting", timeout=30,
                   message="the turn to wait for its approval")  # fmt: skip
        r = stack.redis()
        assert r.pttl(keys.session("alice", "quiet")) > 0 and r.pttl(keys.session("alice", "busy")) == -1

        wait_until(lambda: http.get("/api/v1/sessions/quiet").status_code == 404, timeout=10,
                   message="the quiet session to expire")  # fmt: skip
        wait_until(lambda: r.zrange(keys.sessions("alice"), 0, -1) == ["busy"], timeout=10,
                   message="the sweeper to take the quiet session out of the lists")  # fmt: skip
        assert [s["session_id"] for s in http.get("/api/v1/sessions").json()["data"]] == ["busy"]
        assert http.get("/api/v1/sessions/quiet/messages").status_code == 404
        assert not [key for key in r.scan_iter("parley:*:alice:quiet")]
        time.sleep(2.5)  # past the ttl: the turn in flight keeps its session
        assert http.get("/api/v1/sessions/busy").status_code == 200

        call_id = http.get(f"/api/v1/jobs/{waiting['job_id']}").json()["pending"][0]["call_id"]
        decided = http.post(f"/api/v1/jobs/{waiting['job_id']}/approvals", json={"call_id": call_id, "approve": True})
        assert decided.status_code == 202, decided.text
        assert wait_job(http, waiting["job_id"])["status"] == "finished"
        wait_until(lambda: http.get("/api/v1/sessions/busy").status_code == 404, timeout=10,
                   message="the session to expire once its turn ended")  # fmt: skip
        wait_until(lambda: r.zcard(keys.session_expiries()) == 0, timeout=10, message="the sweeper")
        assert not [key for key in r.scan_iter("parley:*:alice:busy")]
        assert http.get("/api/v1/sessions").json()["data"] == []
