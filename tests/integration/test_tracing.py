"""OpenTelemetry traces end to end: real Redis, web, worker, the scripted model server, the project's MCP server
and a real OTLP/HTTP receiver (tests/otlp_receiver.py) that the web and the worker export to.

One turn is one trace: the web's server span for the request that accepted it (joined to the caller's
`traceparent` when the request had one), and from the worker, under it, the queue wait and `invoke_agent <agent>`
with a `chat <model>` span per model call and an `execute_tool <tool>` span per tool call; the MCP call's `_meta`
carries the trace on to the MCP server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import client, create_agent, model_requests, wait_job
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SECRET = "the words of a tenant that no span may hold"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _traced(stack: Any, receiver: OtlpReceiver, heartbeat_ttl_s: int = 30) -> Any:
    """Web and worker exporting to `receiver`. A long heartbeat by default: a loaded machine that stalls a
    worker's first MCP turn (its import of the MCP SDK) must not make RQ run the turn twice here."""
    stack.env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
                      "PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1",
                      "PARLEY_HEARTBEAT_TTL_S": str(heartbeat_ttl_s)})  # fmt: skip
    stack.start_web()
    return stack.start_workers()


def _of_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.trace_id == trace_id]


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in spans]}"
    return found[0]


def _turn_done(trace_id: str, tools: int) -> Any:
    """The whole turn arrived: the web's span and the worker's (its model calls, its tools, the turn's end)."""

    def done(spans: list[ReceivedSpan]) -> bool:
        mine = _of_trace(spans, trace_id)
        names = [span.name for span in mine]
        return (any(span.kind == "SERVER" for span in mine) and any(n.startswith("invoke_agent") for n in names)
                and sum(n.startswith("execute_tool") for n in names) == tools)  # fmt: skip

    return done


def test_a_turn_with_tools_is_one_trace_under_the_callers_traceparent(stack: Any, mcp_server: Any,
                                                                      receiver: OtlpReceiver) -> None:  # fmt: skip
    _traced(stack, receiver)
    stack.model_server.control("script", [
        {"tool_calls": [{"name": "mcp__srv__trace_context", "arguments": {}},
                        {"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"reply": "It is 42."},
    ])  # fmt: skip
    with client(stack.web_url, stack.api_key) as http:
        assert http.post("/api/v1/mcp-servers", json={"name": "srv", "url": f"{mcp_server.url}/mcp"}).status_code == 201
        agent = create_agent(http, tools=["mcp:srv/trace_context", "calculator"])
        answer = http.post("/api/v1/chat", json={"message": SECRET, "session_id": "traced"},
                           headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
                                    "tracestate": "caller=yes"})  # fmt: skip
        assert answer.status_code == 200, answer.text
    body = answer.json()
    spans = _of_trace(receiver.wait_for(_turn_done(CALLER_TRACE, tools=2)), CALLER_TRACE)

    web = _one(spans, "POST /api/v1/chat")
    assert (web.service, web.kind, web.parent_span_id) == ("parley-web", "SERVER", CALLER_SPAN)
    assert web.attributes["http.route"] == "/api/v1/chat" and web.attributes["http.response.status_code"] == 200
    assert web.attributes["gen_ai.conversation.id"] == "traced" and web.attributes["parley.job_id"] == body["job_id"]

    turn = _one(spans, "invoke_agent Chef")
    assert (turn.service, turn.kind, turn.parent_span_id) == ("parley-worker", "INTERNAL", web.span_id)
    assert turn.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert turn.attributes["gen_ai.agent.name"] == "Chef" and turn.attributes["gen_ai.agent.id"] == agent["id"]
    assert turn.attributes["gen_ai.conversation.id"] == "traced"
    assert turn.attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"] > 0
    assert turn.attributes["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"] > 0
    assert turn.attributes["parley.turn.outcome"] == "finished" and turn.status == "UNSET"

    waited = _one(spans, "queue wait")
    assert waited.parent_span_id == web.span_id and waited.end_ns <= turn.start_ns + 1_000_000

    model = turn.attributes["gen_ai.request.model"]
    calls = [span for span in spans if span.name == f"chat {model}"]
    assert len(calls) == 2 and all(call.parent_span_id == turn.span_id and call.kind == "CLIENT" for call in calls)
    for call in calls:
        assert call.attributes["gen_ai.operation.name"] == "chat"
        assert call.attributes["gen_ai.request.model"] == call.attributes["gen_ai.response.model"] == model
    assert sum(call.attributes["gen_ai.usage.input_tokens"] for call in calls) == body["usage"]["prompt_tokens"]
    assert sum(call.attributes["gen_ai.usage.output_tokens"] for call in calls) == body["usage"]["completion_tokens"]

    mcp_tool, calculator = _one(spans, "execute_tool mcp:srv/trace_context"), _one(spans, "execute_tool calculator")
    for tool, call_id in ((mcp_tool, "call_0"), (calculator, "call_1")):
        assert tool.parent_span_id == turn.span_id and tool.status == "UNSET"
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tool.attributes["gen_ai.tool.call.id"] == call_id
    assert calculator.attributes["gen_ai.tool.name"] == "calculator"

    # The MCP request carried the trace in its `_meta`: the tool said what it got, and the model saw that.
    heard = [m["content"] for m in model_requests(stack)[-1]["body"]["messages"] if m.get("tool_call_id") == "call_0"]
    carried = json.loads(heard[0])
    version, trace_id, parent_id, _ = carried["traceparent"].split("-")
    assert trace_id == CALLER_TRACE and "caller=yes" in carried.get("tracestate", "")
    assert parent_id in {span.span_id for span in spans if span.parent_span_id == mcp_tool.span_id}

    assert {span.service for span in spans} == {"parley-web", "parley-worker"}
    assert not [span.name for span in spans if SECRET in json.dumps(span.attributes)], "a span holds the message"


def test_without_traceparent_one_new_trace_joins_web_and_worker(stack: Any, receiver: OtlpReceiver) -> None:
    _traced(stack, receiver)
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        queued = http.post("/api/v1/chat/jobs", json={"message": "hello"}, headers={"traceparent": "00-not-a-trace"})
        assert queued.status_code == 202, queued.text
        job = wait_job(http, queued.json()["job_id"])
        assert job["status"] == "finished"
        listed = http.get("/api/v1/agents")  # a GET: not traced
        assert listed.status_code == 200
    spans = receiver.wait_for(lambda got: any(s.name.startswith("invoke_agent") for s in got)
                              and any(s.name == "POST /api/v1/chat/jobs" for s in got))  # fmt: skip
    web = next(span for span in spans if span.name == "POST /api/v1/chat/jobs")
    assert web.parent_span_id == "" and web.trace_id != CALLER_TRACE  # a malformed traceparent starts a new trace
    assert web.attributes["http.response.status_code"] == 202
    turn = _one(_of_trace(spans, web.trace_id), "invoke_agent Chef")
    assert turn.parent_span_id == web.span_id and turn.service == "parley-worker"
    assert not [span for span in spans if span.name.startswith("GET")]


def test_a_failing_model_call_marks_its_spans_failed(stack: Any, receiver: OtlpReceiver) -> None:
    stack.env["PARLEY_MODEL_MAX_RETRIES"] = "0"
    _traced(stack, receiver)
    stack.model_server.control("script", [{"status": 500}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        failed = http.post("/v1/chat/completions", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
                           json={"model": "Chef", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert failed.status_code >= 400
    spans = _of_trace(receiver.wait_for(_turn_done(CALLER_TRACE, tools=0)), CALLER_TRACE)
    web = next(span for span in spans if span.kind == "SERVER")
    assert web.name == "POST /v1/chat/completions" and web.parent_span_id == CALLER_SPAN
    turn = _one(spans, "invoke_agent Chef")
    assert turn.status == "ERROR" and turn.attributes["error.type"] == "model_failed"
    assert turn.attributes["parley.turn.outcome"] == "failed"
    call = next(span for span in spans if span.name.startswith("chat "))
    assert call.status == "ERROR" and call.attributes["error.type"] == "500" and call.parent_span_id == turn.span_id


def test_a_retried_attempt_joins_the_same_trace(stack: Any, receiver: OtlpReceiver) -> None:
    [worker] = _traced(stack, receiver, heartbeat_ttl_s=4)
    stack.model_server.control("script", [{"hang": True}, {"reply": "after the retry"}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        queued = http.post("/api/v1/chat/jobs", json={"message": "hello", "session_id": "retried"},
                           headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})  # fmt: skip
        assert queued.status_code == 202, queued.text
        deadline = time.monotonic() + 30
        while not model_requests(stack) and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.kill()  # mid-turn: its spans of the first attempt die with it (never exported)
        stack.start_workers()
        assert wait_job(http, queued.json()["job_id"])["status"] == "finished"
    spans = _of_trace(receiver.wait_for(_turn_done(CALLER_TRACE, tools=0)), CALLER_TRACE)
    web = _one(spans, "POST /api/v1/chat/jobs")
    turn = _one(spans, "invoke_agent Chef")
    assert turn.parent_span_id == web.span_id and turn.attributes["parley.turn.attempt"] == 2
    assert turn.attributes["parley.turn.outcome"] == "finished"
    waited = _one(spans, "queue wait")  # the first attempt's, exported before the kill: the retry adds none
    assert waited.parent_span_id == web.span_id and waited.end_ns < turn.start_ns


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
PROTOCOL_TURNS = {
    "/v1/responses": ({"model": "Chef", "input": "hi"}, {}),
    "/mcp": ({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
              "params": {"name": "Chef", "arguments": {"message": "hi"}}}, MCP_HEADERS),
    "/a2a/Chef": ({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {
        "kind": "message", "messageId": "m", "role": "user", "parts": [{"kind": "text", "text": "hi"}]}}}, {}),
}  # fmt: skip


def test_every_protocol_that_accepts_a_turn_joins_the_callers_trace(stack: Any, receiver: OtlpReceiver) -> None:
    _traced(stack, receiver)
    traces = {path: f"{index + 1:032x}" for index, path in enumerate(PROTOCOL_TURNS)}
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        for path, (body, headers) in PROTOCOL_TURNS.items():
            caller = {"traceparent": f"00-{traces[path]}-{CALLER_SPAN}-01"}
            answer = http.post(path, json=body, headers={**headers, **caller})
            assert answer.status_code == 200, (path, answer.text)
    for path, trace_id in traces.items():
        spans = _of_trace(receiver.wait_for(_turn_done(trace_id, tools=0)), trace_id)
        web = next(span for span in spans if span.kind == "SERVER" and span.name.startswith("POST"))
        assert web.parent_span_id == CALLER_SPAN and web.attributes["http.route"] in (path, "/a2a/{agent}"), path
        turn = _one(spans, "invoke_agent Chef")
        web_spans = {span.span_id for span in spans if span.service == "parley-web"}
        assert turn.parent_span_id in web_spans, (path, [(s.name, s.span_id, s.parent_span_id) for s in spans])


def test_a_fallback_model_answering_shows_as_a_second_model_call(stack: Any, receiver: OtlpReceiver) -> None:
    stack.env["PARLEY_MODEL_MAX_RETRIES"] = "0"
    _traced(stack, receiver)
    stack.model_server.control("script", [{"status": 503}, {"reply": "from the fallback"}])
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http, fallback_models=["backup-model"])
        answer = http.post("/api/v1/chat", json={"message": "hi"},
                           headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})  # fmt: skip
        assert answer.status_code == 200 and answer.json()["response"] == "from the fallback", answer.text
    spans = _of_trace(receiver.wait_for(_turn_done(CALLER_TRACE, tools=0)), CALLER_TRACE)
    turn = _one(spans, "invoke_agent Chef")
    first, backup = _one(spans, f"chat {turn.attributes['gen_ai.request.model']}"), _one(spans, "chat backup-model")
    assert first.parent_span_id == backup.parent_span_id == turn.span_id and first.end_ns <= backup.start_ns
    assert first.status == "ERROR" and first.attributes["error.type"] == "503"
    assert backup.status == "UNSET" and backup.attributes["gen_ai.response.model"] == "backup-model"
    assert turn.attributes["parley.turn.outcome"] == "finished" and turn.status == "UNSET"
