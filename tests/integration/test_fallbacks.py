"""Fallback models (agent field `fallback_models`): a model step the agent's model cannot answer (429, 5xx or a
timeout, after the SDK's retries) is answered by the next model, in order, while nothing of it reached the client;
the job names the model that answered, and /metrics counts it. Real web, worker, Redis and model server (whose
steps can be scripted for one model name)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parley.client import Parley
from tests.integration.helpers import client, create_agent, messages, model_requests, wait_job
from tests.integration.test_cli import cli_env, run
from tests.integration.test_metrics import scrape, value
from tests.sse_client import collect

PRIMARY, BACKUP, LAST = "primary-model", "backup-model", "last-model"
ONE_RETRY = {"PARLEY_MODEL_MAX_RETRIES": "1"}


def _asked(stack) -> list[tuple[str, int]]:
    """(model, status) of every request the model server got, in order."""
    return [(request["body"]["model"], request["status"]) for request in model_requests(stack)]


@pytest.mark.parametrize("status", [503, 429])
def test_the_fallback_answers_when_the_agents_model_fails_after_its_retries(stack, status: int) -> None:
    stack.start_web()
    stack.start_workers(env=ONE_RETRY)
    failing = {"model": PRIMARY, "status": status, "retry_after": 0}
    stack.model_server.control("script", [failing, failing])  # the first try and its one retry
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=PRIMARY, fallback_models=[BACKUP, LAST])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "anyone there?", "session_id": "f"})
        assert [e.type for e in events][-2:] == ["response", "done"]
        response = events[-2].data
        assert response["content"] == "echo: anyone there?"
        assert response["model"] == BACKUP
        assert [e.data["content"] for e in events if e.type == "delta"] == ["echo:", " anyone", " there?"]
        job = wait_job(http, events[0].data["job_id"])
        assert (job["status"], job["model"]) == ("finished", BACKUP)
        assert job["result"]["usage"]["completion_tokens"] == 3
        assert _asked(stack) == [(PRIMARY, status), (PRIMARY, status), (BACKUP, 200)]
        assert [m["content"] for m in messages(http, "f")][1:] == ["anyone there?", "echo: anyone there?"]

        # A turn whose own model answers names it.
        again = http.post("/api/v1/chat", json={"message": "and now?", "session_id": "f"})
        assert again.status_code == 200, again.text
        assert http.get(f"/api/v1/jobs/{again.json()['job_id']}").json()["model"] == PRIMARY

    samples = scrape(stack.web_url)
    assert value(samples, "parley_model_fallbacks_total", reason=str(status)) == 1
    assert value(samples, "parley_model_errors_total", status=str(status)) == 1  # once per model given up on
    assert value(samples, "parley_jobs_total", outcome="finished") == 2


def test_later_steps_of_the_turn_stay_on_the_model_that_answered_and_tokens_count_by_model(stack) -> None:
    stack.start_web(env={"PARLEY_METRICS_AGENT_LABELS": "true"})
    stack.start_workers(env={"PARLEY_MODEL_MAX_RETRIES": "0", "PARLEY_METRICS_AGENT_LABELS": "true"})
    stack.model_server.control("script", [
        {"model": PRIMARY, "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"model": PRIMARY, "status": 500},
        {"model": BACKUP, "tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]},
        {"model": BACKUP, "reply": "It is 42."},
    ])  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=PRIMARY, fallback_models=[BACKUP], tools=["calculator"])
        answer = http.post("/api/v1/chat", json={"message": "what is 6*7?", "session_id": "t"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"] == "It is 42."
        job = http.get(f"/api/v1/jobs/{answer.json()['job_id']}").json()
        assert job["model"] == BACKUP
        # Step 1 on the agent's model; step 2 fell back; step 3 went to the backup at once.
        assert _asked(stack) == [(PRIMARY, 200), (PRIMARY, 500), (BACKUP, 200), (BACKUP, 200)]
        bodies = [request["body"] for request in model_requests(stack)]

    samples = scrape(stack.web_url)
    assert value(samples, "parley_model_fallbacks_total", from_model=PRIMARY, to_model=BACKUP, reason="500") == 2
    prompt_words = [sum(len(str(m.get("content") or "").split()) for m in body["messages"]) for body in bodies]
    assert value(samples, "parley_tokens_total", agent="Chef", model=PRIMARY, direction="in") == prompt_words[0]
    assert value(samples, "parley_tokens_total", agent="Chef", model=BACKUP, direction="in") == sum(prompt_words[2:])
    assert value(samples, "parley_tokens_total", agent="Chef", model=BACKUP, direction="out") == 3


def test_a_bad_request_does_not_fall_back(stack) -> None:
    stack.start_web()
    stack.start_workers(env=ONE_RETRY)
    stack.model_server.control("script", [{"model": PRIMARY, "status": 400}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=PRIMARY, fallback_models=[BACKUP])
        response = http.post("/api/v1/chat", json={"message": "hi", "session_id": "b"})
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "model_failed"
        assert response.json()["error"]["message"].startswith("primary-model: the model answered 400")
        job = http.get(f"/api/v1/jobs/{response.json()['error']['job_id']}").json()
        assert (job["status"], job["model"]) == ("failed", None)
    assert _asked(stack) == [(PRIMARY, 400)]
    assert value(scrape(stack.web_url), "parley_model_fallbacks_total", reason="400") == 0


def test_every_model_failing_fails_the_turn_naming_each_failure(stack) -> None:
    stack.start_web()
    stack.start_workers(env=ONE_RETRY)
    down, gone = {"model": PRIMARY, "status": 503}, {"model": BACKUP, "status": 502}
    stack.model_server.control("script", [down, down, gone, gone])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=PRIMARY, fallback_models=[BACKUP])
        response = http.post("/api/v1/chat", json={"message": "hello?", "session_id": "a"})
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "model_failed"
        assert error["message"].startswith("no model could answer (primary-model: the model answered 503")
        assert "; backup-model: the model answered 502" in error["message"]
        job = http.get(f"/api/v1/jobs/{error['job_id']}").json()
        assert (job["status"], job["model"], job["error"]) == ("failed", None, error["message"])
        assert [m["role"] for m in messages(http, "a")] == ["assistant"]  # nothing committed but the first message
    assert _asked(stack) == [(PRIMARY, 503)] * 2 + [(BACKUP, 502)] * 2
    samples = scrape(stack.web_url)
    assert value(samples, "parley_model_errors_total", status="503") == 1
    assert value(samples, "parley_model_errors_total", status="502") == 1
    assert value(samples, "parley_model_fallbacks_total", reason="503") == 0


def test_a_silent_model_falls_back_before_its_first_piece_but_not_after(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_MODEL_IDLE_TIMEOUT_S": "1", "PARLEY_MODEL_MAX_RETRIES": "0"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=PRIMARY, fallback_models=[BACKUP])
        # Headers, then only keep-alive comments: no content within the idle timeout, so the backup answers.
        stack.model_server.control("script", [{"model": PRIMARY, "keepalive_ms": 100}])
        answered = http.post("/api/v1/chat", json={"message": "first", "session_id": "s"})
        assert answered.status_code == 200, answered.text
        assert http.get(f"/api/v1/jobs/{answered.json()['job_id']}").json()["model"] == BACKUP
        assert _asked(stack) == [(PRIMARY, 200), (BACKUP, 200)]

        # A model that goes silent mid-answer, after deltas went out: the turn fails as it always did.
        stack.model_server.control("reset", {})
        stack.model_server.control("script", [{"model": PRIMARY, "hang": True}])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "second try", "session_id": "m"})
        assert [e.type for e in events][-2:] == ["error", "done"]
        assert [e.data["content"] for e in events if e.type == "delta"] == ["echo:"]
        assert events[-2].data["code"] == "model_timeout"
        job = wait_job(http, events[0].data["job_id"])
        assert (job["status"], job["model"]) == ("failed", None)
        assert _asked(stack) == [(PRIMARY, 200)]  # the backup was never asked
    assert value(scrape(stack.web_url), "parley_model_fallbacks_total", reason="timeout") == 1


def test_a_requested_summary_falls_back_too(stack) -> None:
    stack.start_web()
    stack.start_workers(env={"PARLEY_MODEL_MAX_RETRIES": "0"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, model=PRIMARY, fallback_models=[BACKUP])
        assert http.post("/api/v1/chat", json={"message": "basil please", "session_id": "s1"}).status_code == 200
        stack.model_server.control("script", [{"model": PRIMARY, "status": 503},
                                              {"model": BACKUP, "reply": "They talked about basil."}])  # fmt: skip
        summary = http.post("/api/v1/sessions/s1/summary")
        assert summary.status_code == 200, summary.text
        assert summary.json()["summary"] == {"text": "They talked about basil."}
    assert _asked(stack)[-2:] == [(PRIMARY, 503), (BACKUP, 200)]


def test_fallback_models_are_stored_changed_and_bounded(stack, tmp_path: Path) -> None:
    stack.start_web()
    with client(stack.web_url, stack.api_key) as http:
        plain = create_agent(http, name="Plain")
        assert plain["fallback_models"] == []
        made = create_agent(http, model=PRIMARY, fallback_models=[BACKUP, LAST])
        assert made["fallback_models"] == [BACKUP, LAST]
        assert http.get("/api/v1/agents/Chef").json()["fallback_models"] == [BACKUP, LAST]
        assert next(a for a in http.get("/api/v1/agents").json() if a["name"] == "Chef")["fallback_models"] == [
            BACKUP, LAST]  # fmt: skip
        changed = http.patch("/api/v1/agents/Chef", json={"fallback_models": [LAST]})
        assert changed.status_code == 200 and changed.json()["fallback_models"] == [LAST]
        assert http.patch("/api/v1/agents/Chef", json={"description": "x"}).json()["fallback_models"] == [LAST]
        for bad in (["a", "b", "c", "d", "e"], [""], ["  "], ["x" * 201], [BACKUP, BACKUP], [3], "backup", None):
            refused = http.patch("/api/v1/agents/Chef", json={"fallback_models": bad})
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["error"]["code"]
            created = http.post("/api/v1/agents", json={"name": "Bad", "fallback_models": bad})
            assert created.status_code == 422, (bad, created.text)
        assert http.get("/api/v1/agents/Chef").json()["fallback_models"] == [LAST]  # nothing refused changed it
        assert http.get("/api/v1/agents/Bad").status_code == 404
        cleared = http.patch("/api/v1/agents/Chef", json={"fallback_models": []})
        assert cleared.json()["fallback_models"] == []

    with Parley(stack.web_url, stack.api_key) as sdk:
        agent = sdk.agents.create("Sdk", model=PRIMARY, fallback_models=[BACKUP])
        assert agent.fallback_models == [BACKUP]
        assert sdk.agents.update("Sdk", fallback_models=[LAST, BACKUP]).fallback_models == [LAST, BACKUP]
        assert sdk.agents.get("Sdk").fallback_models == [LAST, BACKUP]

    env = cli_env(stack, tmp_path)
    (tmp_path / "agent.yaml").write_text(f"name: Cli\nmodel: {PRIMARY}\nfallback_models: [{BACKUP}]\n")
    run(env, "agents", "create", "-f", str(tmp_path / "agent.yaml"))
    assert json.loads(run(env, "agents", "show", "Cli", "--json").stdout)["fallback_models"] == [BACKUP]
