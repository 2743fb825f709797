"""Summaries on the real stack (Redis, web, worker, the model server over HTTP):
`POST /api/v1/sessions/{id}/summary` follows the agent's instructions and response shape, and the
rolling summariser job folds a long session's oldest turns into the summary a context starts with."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import redis

from parley.shared.settings import Settings
from parley.shared.store import keys, memory
from parley.shared.store.connection import connect
from parley.shared.store.sessions import message_json
from parley.shared.store.stores import Stores
from parley.worker.memory import window as memory_window
from tests.integration.helpers import client, create_agent, model_requests

SHAPE = {"recipes": "list of strings", "summary": "string"}
CHEF = {"name": "Chef", "context": "You are a chef.", "first_message": "What shall we cook?",
        "instructions": "Extract the recipes mentioned.", "response_shape": SHAPE}  # fmt: skip


def _chat(stack: Any, http: httpx.Client, message: str, session_id: str = "s1") -> None:
    # The turn's answer fits the Chef's shape: an answer that does not fails the turn.
    stack.model_server.control("script", {"reply": json.dumps({"recipes": [], "summary": f"re: {message}"})})
    response = http.post("/api/v1/chat", json={"message": message, "session_id": session_id, "agent": "Chef"})
    assert response.status_code == 200, response.text


def test_summary_route_follows_the_agents_instructions_and_shape(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, **CHEF)
        _chat(stack, http, "How do I make pesto?")
        _chat(stack, http, "And a tomato sauce?")
        stack.model_server.control("reset", {})
        answer = {"recipes": ["Pesto", "Tomato sauce"], "summary": "Two sauces."}
        stack.model_server.control("script", {"reply": "```json\n" + json.dumps(answer) + "\n```"})
        response = http.post("/api/v1/sessions/s1/summary")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["summary"] == answer and body["session_id"] == "s1"
        assert body["agent_id"].startswith("agent") and body["job_id"]
    (sent,) = model_requests(stack)
    messages = sent["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "You are a chef."}
    assert messages[1]["role"] == "system" and "Extract the recipes mentioned." in messages[1]["content"]
    assert json.dumps(SHAPE) in messages[1]["content"]
    ask = messages[-1]["content"]
    assert messages[-1]["role"] == "user" and "JSON shape" in ask
    lines = ask.splitlines()
    assert "assistant: What shall we cook?" in lines and "user: How do I make pesto?" in lines
    assert "user: And a tomato sauce?" in lines


def test_summary_without_a_response_shape_is_text(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, **{**CHEF, "response_shape": None})
        _chat(stack, http, "Something with basil?")
        stack.model_server.control("script", {"reply": "They talked about basil."})
        response = http.post("/api/v1/sessions/s1/summary")
        assert response.status_code == 200, response.text
        assert response.json()["summary"] == {"text": "They talked about basil."}


def test_summary_errors_unknown_session_model_failure_bad_json_and_timeout(stack) -> None:
    stack.start_web(env={"PARLEY_SUMMARY_TIMEOUT_S": "2"})
    stack.start_workers(env={"PARLEY_MODEL_MAX_RETRIES": "0"})
    with client(stack.web_url, stack.api_key) as http, client(stack.web_url, stack.api_keys["bob"]) as bob:
        create_agent(http, **CHEF)
        _chat(stack, http, "Hello")
        assert http.post("/api/v1/sessions/nope/summary").status_code == 404
        assert bob.post("/api/v1/sessions/s1/summary").status_code == 404  # another tenant's session

        stack.model_server.control("script", {"status": 500})
        failed = http.post("/api/v1/sessions/s1/summary")
        assert failed.status_code == 502, failed.text
        assert failed.json()["error"]["code"] == "model_failed" and failed.json()["error"]["job_id"]

        stack.model_server.control("script", {"reply": "Sure! Here is a summary, not JSON."})
        not_json = http.post("/api/v1/sessions/s1/summary")
        assert not_json.status_code == 502 and "JSON" in not_json.json()["error"]["message"]

        stack.model_server.control("script", {"delay_ms": 4000, "reply": "{}"})
        slow = http.post("/api/v1/sessions/s1/summary")
        assert slow.status_code == 504 and slow.json()["error"]["job_id"]
    # The summary jobs wrote nothing into the session.
    fields = stack.redis().hgetall(keys.session("alice", "s1"))
    assert "summary" not in fields


def _worker_runtime(stack, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stores a worker holds, in this process, on the stack's Redis (to call maybe_schedule_summary)."""
    for name, value in {**stack.env, "PARLEY_CONTEXT_TOKENS": "1000"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # type: ignore[call-arg]

    class Rt(Stores):
        provider: Any = None

    return Rt(**Stores.parts(settings, connect(settings)))


def _long_session(r: redis.Redis, agent_id: str, turns: int) -> int:
    """A session as committed turns leave it (each message with its `tokens`); returns the token total."""
    r.hset(keys.session("alice", "long"), mapping={"agent_id": agent_id, "created_at": 1, "metadata": "{}",
                                                   "exchanges": turns})  # fmt: skip
    rows = [message_json("assistant", "What shall we cook?", job_id=None, created_at=1)]
    total = 0
    for turn in range(turns):
        question = f"question {turn}: what about dish number {turn}?"
        answer = f"answer {turn}: dish number {turn} needs {turn} eggs and some salt."
        for role, text in (("user", question), ("assistant", answer)):
            tokens = memory.message_tokens({"role": role, "content": text}, "test-model")
            total += tokens
            rows.append(message_json(role, text, job_id=f"job_{turn}", created_at=2, tokens=tokens))
    r.rpush(keys.messages("alice", "long"), *rows)
    r.hset(keys.session("alice", "long"), memory.TOKENS_FIELD, total)
    return total


def test_a_long_session_is_rolled_into_a_summary_by_the_worker(stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_CONTEXT_TOKENS": "1000", "PARLEY_MODEL": "test-model"})
    with client(stack.web_url, stack.api_key) as http:
        agent = create_agent(http, **{**CHEF, "response_shape": None, "model": "test-model"})
    r = stack.redis()
    _long_session(r, agent["id"], 40)
    rt = _worker_runtime(stack, monkeypatch)
    stored_agent = rt.agents.get_by_id("alice", agent["id"])
    stack.model_server.control("script", {"reply": "The user asked about dishes 0 to many; eggs and salt."})
    assert memory_window.maybe_schedule_summary(rt, "alice", "long", stored_agent)
    assert not memory_window.maybe_schedule_summary(rt, "alice", "long", stored_agent)  # one at a time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not r.hget(keys.session("alice", "long"), "summary"):
        time.sleep(0.1)
    fields = r.hgetall(keys.session("alice", "long"))
    assert fields.get("summary") == "The user asked about dishes 0 to many; eggs and salt.", stack.logs()
    upto = int(fields["summary_upto"])
    assert json.loads(r.lindex(keys.messages("alice", "long"), upto))["role"] == "user"
    assert r.exists(keys.summary_lock("alice", "long")) == 0

    # What the summariser sent: its instructions, no summary yet, the oldest turns and not the kept ones.
    (sent,) = model_requests(stack)
    system, user = sent["body"]["messages"]
    assert system["role"] == "system" and "running summary" in system["content"]
    assert user["content"].startswith("Summary so far:\n(none yet)")
    assert "user: question 0: what about dish number 0?" in user["content"]
    kept_turn = (upto - 1) // 2  # message 1 + 2t is turn t's question; the cut is the first kept one
    assert f"answer {kept_turn - 1}:" in user["content"] and f"question {kept_turn}:" not in user["content"]

    # The next context: summary plus the tail from the summary's boundary, within the budget.
    budget = memory.history_budget(stored_agent, 1000, "test-model")
    window = memory.read_window(r, "alice", "long", budget_tokens=budget, model="test-model")
    assert window.summary == fields["summary"] and window.first is not None
    assert window.start_index >= upto and window.messages[0]["role"] == "user"
    assert window.messages[-1]["content"].startswith("answer 39:")
    assert window.tokens <= budget
    assert int(fields["tokens"]) < budget // 2 + 50  # the rest stays unsummarised, counted


def test_context_budget_is_an_agent_field(stack) -> None:
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        created = create_agent(http, **{**CHEF, "context_budget": 4000})
        assert created["context_budget"] == 4000
        patched = http.patch(f"/api/v1/agents/{created['id']}", json={"context_budget": None})
        assert patched.status_code == 200 and patched.json()["context_budget"] is None
        assert http.post("/api/v1/agents", json={"name": "Tiny", "context_budget": 10}).status_code == 422
