"""The agent loop end to end: tools, structured answers and reasoning, against real Redis, web,
worker and the scripted OpenAI-compatible model server."""

from __future__ import annotations

import json
import signal
from typing import Any

from tests.harness import wait_until
from tests.integration.helpers import client, create_agent, messages, model_requests, wait_job
from tests.sse_client import Event, collect

TOOL_ENV = {"PARLEY_TOOL_MODULES": "tests.fixture_tools", "PARLEY_TOOL_TIMEOUT_S": "1"}
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "intent": {"type": "string"}},
    "required": ["answer", "intent"],
}


def _script(stack: Any, *steps: dict[str, Any]) -> None:
    stack.model_server.control("script", list(steps))


def _types(events: list[Event]) -> list[str]:
    return [event.type for event in events]


def _after_start(events: list[Event]) -> list[Event]:
    """The events after `session`, `queued` and `started`."""
    assert [(e.type, e.data.get("message")) for e in events[:3]] == [
        ("session", None), ("status", "queued"), ("status", "started"),
    ]  # fmt: skip
    return events[3:]


def test_two_tool_steps_one_with_parallel_calls(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(
        stack,
        {"reply": "Let me compute.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "2+3"}}]},
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}},
                        {"name": "calculator", "arguments": {"expression": "1/3+1/6"}}]},
        {"reply": "Five, 42 and a half."},
    )  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, tools=["calculator"])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "sums please", "session_id": "t"})
        rest = _after_start(events)
        deltas_before_thought = [e for e in rest[: _types(rest).index("llm_thought")] if e.type == "delta"]
        assert "".join(e.data["content"] for e in deltas_before_thought) == "Let me compute."
        sequence = [t for t in _types(rest) if t != "delta"]
        assert sequence == [
            "llm_thought", "tool_execution", "tool_result",
            "tool_execution", "tool_execution", "tool_result", "tool_result",
            "response", "done",
        ]  # fmt: skip
        by_type = {t: [e.data for e in rest if e.type == t] for t in ("llm_thought", "tool_execution", "tool_result")}
        assert by_type["llm_thought"] == [{"type": "llm_thought", "thought": "Let me compute.", "turn": 1}]
        assert [(d["tool_name"], d["args"]) for d in by_type["tool_execution"]] == [
            ("calculator", {"expression": "2+3"}), ("calculator", {"expression": "6*7"}),
            ("calculator", {"expression": "1/3+1/6"}),
        ]  # fmt: skip
        assert [(d["preview"], d["ok"]) for d in by_type["tool_result"]] == [("5", True), ("42", True), ("0.5", True)]
        assert [d["call_id"] for d in by_type["tool_result"]] == [d["call_id"] for d in by_type["tool_execution"]]
        last_result = len(rest) - 1 - _types(rest)[::-1].index("tool_result")
        final_deltas = rest[last_result + 1 : -2]
        assert final_deltas and all(e.type == "delta" for e in final_deltas)
        assert "".join(e.data["content"] for e in final_deltas) == "Five, 42 and a half."
        assert rest[-2].data["content"] == "Five, 42 and a half."

        # The model saw its own calls and their results, in OpenAI's shape.
        third = model_requests(stack)[-1]["body"]
        assert [tool["function"]["name"] for tool in third["tools"]] == ["calculator"]
        said = [m for m in third["messages"] if m["role"] in ("assistant", "tool")][1:]
        assert said[0]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"expression": "2+3"}'}
        assert said[0]["content"] == "Let me compute."
        assert said[1] == {"role": "tool", "tool_call_id": said[0]["tool_calls"][0]["id"], "content": "5"}
        assert [m["content"] for m in said[3:]] == ["42", "0.5"]

        # Committed with the turn, in order; a later turn's context shows what the agent did.
        history = messages(http, "t")
        assert [(m["role"], m["content"]) for m in history[1:]] == [
            ("user", "sums please"), ("assistant", "Let me compute."), ("tool", "5"),
            ("assistant", ""), ("tool", "42"), ("tool", "0.5"), ("assistant", "Five, 42 and a half."),
        ]  # fmt: skip
        assert history[2]["tool_calls"][0]["function"]["name"] == "calculator"
        assert history[3]["name"] == "calculator" and history[3]["tool_call_id"] == history[2]["tool_calls"][0]["id"]
        http.post("/api/v1/chat", json={"message": "and now?", "session_id": "t"})
        later = model_requests(stack)[-1]["body"]["messages"]
        assert [m["role"] for m in later[-8:]] == ["user", "assistant", "tool", "assistant", "tool", "tool",
                                                   "assistant", "user"]  # fmt: skip


def test_failing_and_hanging_tools_are_reported_and_the_turn_goes_on(stack) -> None:
    """...and the hung tool, abandoned at its timeout on the worker's pool thread, does not keep the
    worker up once SIGTERM has drained it."""
    stack.env.update(TOOL_ENV)
    stack.start_web()
    [worker] = stack.start_workers()
    _script(
        stack,
        {"tool_calls": [{"name": "explode", "arguments": {"reason": "on purpose"}},
                        {"name": "slow", "arguments": {"seconds": 30}}]},
        {"reply": "Both tools failed."},
    )  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, tools=["explode", "slow"])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "try", "session_id": "f"})
        results = [e.data for e in events if e.type == "tool_result"]
        assert [(r["tool_name"], r["ok"]) for r in results] == [("explode", False), ("slow", False)]
        assert "on purpose" in results[0]["preview"]
        assert "time" in results[1]["preview"].lower()
        assert events[-2].type == "response" and events[-2].data["content"] == "Both tools failed."
        fed_back = [m for m in model_requests(stack)[-1]["body"]["messages"] if m["role"] == "tool"]
        assert "on purpose" in fed_back[0]["content"] and "time" in fed_back[1]["content"].lower()
        job = http.get(f"/api/v1/jobs/{events[0].data['job_id']}").json()
        assert job["status"] == "finished"
    worker.send_signal(signal.SIGTERM)  # `slow` sleeps on for ~28 s more
    assert worker.wait(timeout=10) == 0


def test_step_limit_ends_the_turn_with_a_clear_answer(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_TOOL_STEPS": "2"})
    stack.start_workers(env={"PARLEY_MAX_TOOL_STEPS": "2"})
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}
    _script(stack, call, call, {"reply": "never asked for"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, tools=["calculator"])
        body = http.post("/api/v1/chat", json={"message": "loop forever", "session_id": "l"}).json()
        assert "2 tool steps" in body["response"]
        assert len(model_requests(stack)) == 2
        assert messages(http, "l")[-1]["content"] == body["response"]


def test_tool_calls_to_tools_the_agent_lacks_are_refused(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, {"tool_calls": [{"name": "http_get", "arguments": {"url": "http://127.0.0.1:1/"}}]},
            {"reply": "ok"})  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, tools=["calculator"])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "fetch", "session_id": "n"})
        result = next(e.data for e in events if e.type == "tool_result")
        assert result["ok"] is False and "no tool named 'http_get'" in result["preview"]


def test_http_get_refuses_loopback_and_names_resolving_to_it(stack) -> None:
    stack.start_web()
    stack.start_workers()
    model_url = stack.model_server.url  # a real server on loopback: it must not be reached
    before = len(model_requests(stack))
    _script(
        stack,
        {"tool_calls": [{"name": "http_get", "arguments": {"url": f"{model_url}/v1/models"}},
                        {"name": "http_get", "arguments": {"url": f"{model_url.replace('127.0.0.1', 'localhost')}/"}}]},
        {"reply": "refused"},
    )  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, tools=["http_get"])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "get it", "session_id": "h"})
        results = [e.data for e in events if e.type == "tool_result"]
        assert [r["ok"] for r in results] == [False, False]
        assert all("refus" in r["preview"].lower() or "not allowed" in r["preview"].lower() for r in results)
        assert len(model_requests(stack)) == before + 2  # the two model steps, no request from the tool


def test_structured_answer_parsed_and_exposed(stack) -> None:
    stack.start_web()
    stack.start_workers()
    answer = {"answer": "Pasta", "intent": "recommend"}
    _script(stack, {"reply": json.dumps(answer)})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=SCHEMA)
        body = http.post("/api/v1/chat", json={"message": "dinner?", "session_id": "j"}).json()
        assert body["structured"] == answer and json.loads(body["response"]) == answer
        sent = model_requests(stack)[-1]["body"]
        assert sent["messages"][1]["content"].endswith("without deviation: " + json.dumps(SCHEMA))
        assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}
        events = collect(http, "GET", f"/api/v1/jobs/{body['job_id']}/events")
        response = next(e.data for e in events if e.type == "response")
        assert response["intent"] == "recommend" and response["structured"] == answer
        assert http.get(f"/api/v1/jobs/{body['job_id']}").json()["result"]["structured"] == answer


def test_structured_answer_repaired_once(stack) -> None:
    stack.start_web()
    stack.start_workers()
    good = {"answer": "Soup", "intent": "recommend"}
    _script(stack, {"reply": "Soup, I think."}, {"reply": json.dumps(good)})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=SCHEMA)
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "lunch?", "session_id": "r"})
        statuses = [e.data for e in events if e.type == "status"]
        assert statuses[-1]["message"] == "repairing" and "not valid JSON" in statuses[-1]["reason"]
        assert events[-2].type == "response" and events[-2].data["structured"] == good
        repair = model_requests(stack)[-1]["body"]["messages"]
        assert repair[-2] == {"role": "assistant", "content": "Soup, I think."}
        assert repair[-1]["role"] == "user" and "does not fit" in repair[-1]["content"]
        assert [m["content"] for m in messages(http, "r")[1:]] == ["lunch?", json.dumps(good)]


def test_structured_answer_bad_twice_fails_and_commits_nothing(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, {"reply": "nope"}, {"reply": json.dumps({"answer": "no intent"})})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=SCHEMA)
        response = http.post("/api/v1/chat", json={"message": "hm?", "session_id": "b"})
        assert response.status_code == 502 and response.json()["error"]["code"] == "invalid_answer"
        assert "response shape" in response.json()["error"]["message"]
        job = wait_job(http, response.json()["error"]["job_id"])
        assert job["status"] == "failed" and "intent" in job["error"]
        assert [m["role"] for m in messages(http, "b")] == ["assistant"]  # only the first message


def test_reasoning_streams_as_thinking_and_is_never_stored(stack) -> None:
    stack.start_web()
    stack.start_workers()
    _script(stack, {"reasoning": "The user wants a greeting.", "reply": "Hello!"})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None)
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "hi", "session_id": "k"})
        thinking = "".join(e.data["message"] for e in events if e.type == "thinking")
        assert thinking == "The user wants a greeting."
        assert _types(events).index("thinking") < _types(events).index("delta")
        http.post("/api/v1/chat", json={"message": "again", "session_id": "k"})
        seen = json.dumps(model_requests(stack)[-1]["body"]["messages"])
        assert "wants a greeting" not in seen and "Hello!" in seen
        assert "wants a greeting" not in json.dumps(messages(http, "k"))


def test_worker_killed_between_tool_steps_commits_nothing_partial(stack) -> None:
    stack.start_web()
    worker = stack.start_workers()[0]
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "20+22"}}]}
    _script(stack, call, {"hang": True}, call, {"reply": "It is 42."})
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, tools=["calculator"])
        job_id = http.post("/api/v1/chat/jobs", json={"message": "add", "session_id": "x"}).json()["job_id"]
        wait_until(lambda: len(model_requests(stack)) >= 2, timeout=30, message="the second model step")
        worker.kill()
        assert [m["role"] for m in messages(http, "x")] == ["assistant"]
        stack.start_workers()
        job = wait_job(http, job_id, timeout=60)
        assert job["status"] == "finished" and job["result"]["response"] == "It is 42."
        history = messages(http, "x")
        assert [m["role"] for m in history] == ["assistant", "user", "assistant", "tool", "assistant"]
        events = collect(http, "GET", f"/api/v1/jobs/{job_id}/events")
        assert {"message": "retrying", "attempt": 2} in [
            {k: v for k, v in e.data.items() if k != "type"} for e in events if e.type == "status"
        ]  # fmt: skip
        assert _types(events).count("done") == 1


def test_demo_model_calls_the_calculator_when_asked_plainly(stack) -> None:
    env = {"PARLEY_LLM": "demo", "PARLEY_DEMO_CHUNK_DELAY_MS": "0"}
    stack.start_web(env=env)
    stack.start_workers(env=env)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, response_shape=None, tools=["calculator", "current_time"])
        events = collect(http, "POST", "/api/v1/chat/stream", json={"message": "calc: 2+2*10", "session_id": "d"})
        execution = next(e.data for e in events if e.type == "tool_execution")
        assert execution["tool_name"] == "calculator" and execution["args"] == {"expression": "2+2*10"}
        assert next(e.data for e in events if e.type == "tool_result")["preview"] == "22"
        assert "22" in events[-2].data["content"]
        timed = http.post("/api/v1/chat", json={"message": "What time is it in Tokyo?", "session_id": "d"}).json()
        assert "current_time said:" in timed["response"]
        assert len(model_requests(stack)) == 0  # the demo model never leaves the process
