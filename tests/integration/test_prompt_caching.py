"""Prompt caching end to end: each model call of a session's turn carries the session's `prompt_cache_key`, and
the prompt tokens the model says it served from its cache (the scripted model counts them by longest common
prefix, tests/prompt_cache.py) reach the turn's usage (`cached_tokens`), `/v1/chat/completions` usage and the
`parley_tokens_total{direction="cached"}` metric.
"""

from __future__ import annotations

import openai

from parley.worker.providers.cache_key import key_for
from tests.integration.helpers import client, create_agent, model_requests, wait_job
from tests.integration.test_metrics import eventually, scrape, value

MODEL = "test-model"


def _cached(request: dict) -> int:
    return int(request["usage"]["prompt_tokens_details"]["cached_tokens"])


def test_a_turns_usage_carries_the_cached_tokens_the_model_reported_under_the_sessions_key(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=MODEL, tools=["calculator"])
        first = http.post("/api/v1/chat", json={"message": "what is one plus two", "session_id": "s-cache"})
        stack.model_server.control("script", {"tool_calls": [{"name": "calculator",
                                                              "arguments": {"expression": "1+2"}}]})  # fmt: skip
        second = http.post("/api/v1/chat", json={"message": "and times four", "session_id": "s-cache"})
        other = http.post("/api/v1/chat", json={"message": "hello", "session_id": "s-other"})
        assert [r.status_code for r in (first, second, other)] == [200, 200, 200]
        sent = model_requests(stack)
        # the session's key: a hash of the tenant (the stack's key is alice's) and the session id
        key, other_key = key_for("alice", "s-cache"), key_for("alice", "s-other")
        assert [r["body"].get("prompt_cache_key") for r in sent] == [key, key, key, other_key]
        # The first call of a session finds nothing under its key; the second turn's first call finds the whole
        # first call (its prefix did not change), its second call (after the tool) the whole of the one before.
        assert [_cached(r) for r in sent] == [0, sent[0]["usage"]["prompt_tokens"], sent[1]["usage"]["prompt_tokens"],
                                              0]  # fmt: skip
        assert first.json()["usage"]["cached_tokens"] == 0
        assert second.json()["usage"]["cached_tokens"] == _cached(sent[1]) + _cached(sent[2]) > 0
        assert second.json()["usage"]["prompt_tokens"] == sent[1]["usage"]["prompt_tokens"] + sent[2]["usage"][
            "prompt_tokens"]  # fmt: skip
        job = wait_job(http, second.json()["job_id"])
        assert job["result"]["usage"]["cached_tokens"] == second.json()["usage"]["cached_tokens"]

        # /v1/chat/completions shows them where OpenAI does, for a turn of a session it names.
        compat = openai.OpenAI(base_url=f"{stack.web_url}/v1", api_key=stack.api_key, max_retries=0)
        completion = compat.chat.completions.create(model="Chef", messages=[{"role": "user", "content": "and more"}],
                                                    extra_headers={"X-Parley-Session": "s-cache"})  # fmt: skip
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        last = model_requests(stack)[-1]
        assert last["body"]["prompt_cache_key"] == key
        assert completion.usage.prompt_tokens_details.cached_tokens == _cached(last) > 0

    total = sum(_cached(r) for r in model_requests(stack))
    eventually(lambda: value(scrape(stack.web_url), "parley_tokens_total", direction="cached"), total)


def test_the_setting_turns_the_key_off(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_MODEL_PROMPT_CACHE_KEY": "false"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=MODEL)
        answer = http.post("/api/v1/chat", json={"message": "hi", "session_id": "s-off"})
        assert answer.status_code == 200
    assert "prompt_cache_key" not in model_requests(stack)[0]["body"]
    # Still read: the model reports cached tokens whether or not it was given a key.
    assert model_requests(stack)[0]["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert answer.json()["usage"]["cached_tokens"] == 0


def test_a_conversation_the_request_brings_is_sent_without_a_key(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=MODEL)
    compat = openai.OpenAI(base_url=f"{stack.web_url}/v1", api_key=stack.api_key, max_retries=0)
    completion = compat.chat.completions.create(model="Chef", messages=[{"role": "user", "content": "hi"}])
    assert "prompt_cache_key" not in model_requests(stack)[0]["body"]
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
