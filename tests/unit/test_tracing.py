"""shared/tracing.py: nothing of OpenTelemetry's SDK is loaded and every call is a pass-through while no OTLP
endpoint is set; once on, the spans of a turn (with an in-memory exporter) carry the GenAI attributes, the
trace context goes into the job and comes back out on the worker, and hostile trace headers change nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from parley.shared import tracing
from parley.shared.tracing_otel import MAX_TRACESTATE_CHARS, Spans

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process with an in-memory exporter (not the global provider: tests share it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = tracing._set_for_tests(Spans(provider))
    try:
        yield exporter
    finally:
        tracing._set_for_tests(previous)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


@dataclass
class FakeStream:
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 7, "completion_tokens": 3})
    response: dict[str, str] = field(default_factory=lambda: {"model": "gpt-4o-mini-2024", "id": "chatcmpl-1"})


@asynccontextmanager
async def model_call(fail: Exception | None = None) -> AsyncIterator[FakeStream]:
    if fail is not None:
        raise fail
    yield FakeStream()


@dataclass
class Result:
    ok: bool


def test_without_an_endpoint_nothing_of_the_sdk_is_imported_and_calls_pass_through() -> None:
    code = """
import os, sys
for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
    os.environ.pop(name, None)
from parley.shared import tracing
import parley.worker.turn.run, parley.api.main
assert tracing.setup("parley-test") is False and not tracing.enabled()
from opentelemetry import trace
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"  # nobody set one: spans are no-ops
# (redis-py imports the SDK's metrics module when the SDK is installed, for its own opt-in metrics: not ours)
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter",
                                                          "parley.shared.tracing_otel")))
print(loaded)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_off_path_hands_back_what_it_was_given() -> None:
    assert not tracing.enabled()
    with tracing.chat("m") as call:
        assert call is tracing.NO_CALL
        call.failed(ValueError("x"))
        call.answered(FakeStream())
    work = asyncio.sleep(0)
    assert tracing.tool("calculator", "call_0", work) is work
    asyncio.run(work)
    assert tracing.job_fields() == {}
    with tracing.request_span("POST", [(b"traceparent", CALLER.encode())]) as span:
        assert span is None
    tracing.turn_started({"agent_name": "Chef"}, 1)  # no effect, no error
    tracing.turn_usage("m", {"prompt_tokens": 1})
    tracing.turn_failed("model_failed", "x")


def test_configured_needs_a_non_empty_endpoint() -> None:
    assert not tracing.configured({})
    assert not tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})


def test_the_request_span_joins_the_callers_trace_and_the_job_carries_it(exported: InMemorySpanExporter) -> None:
    headers = [(b"traceparent", CALLER.encode()), (b"tracestate", b"caller=yes")]
    with tracing.request_span("POST", headers) as span:
        assert span is not None
        fields = tracing.job_fields()
        tracing.accepted("job_1", "s1")
        span.answered("/api/v1/chat", 200)
    web = _by_name(exported)["POST /api/v1/chat"]
    assert f"{web.context.trace_id:032x}" == CALLER.split("-")[1]
    assert web.parent is not None and f"{web.parent.span_id:016x}" == CALLER.split("-")[2]
    assert attrs(web)["gen_ai.conversation.id"] == "s1" and attrs(web)["parley.job_id"] == "job_1"
    version, trace_id, span_id, flags = fields["traceparent"].split("-")
    assert (trace_id, span_id) == (CALLER.split("-")[1], f"{web.context.span_id:016x}")
    assert fields["tracestate"] == "caller=yes"


@pytest.mark.parametrize("traceparent", ["00-not-a-trace", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "x" * 5000, ""])
def test_a_malformed_traceparent_starts_a_new_trace(exported: InMemorySpanExporter, traceparent: str) -> None:
    with tracing.request_span("POST", [(b"traceparent", traceparent.encode())]) as span:
        assert span is not None
        fields = tracing.job_fields()
    [web] = exported.get_finished_spans()
    assert web.parent is None and fields["traceparent"].split("-")[1] == f"{web.context.trace_id:032x}"


def test_a_long_tracestate_is_not_carried_into_the_job(exported: InMemorySpanExporter) -> None:
    state = ",".join(f"k{i}={'v' * 30}" for i in range(30))
    assert len(state) > MAX_TRACESTATE_CHARS
    with tracing.request_span("POST", [(b"traceparent", CALLER.encode()), (b"tracestate", state.encode())]):
        fields = tracing.job_fields()
    assert "tracestate" not in fields and fields["traceparent"].split("-")[1] == CALLER.split("-")[1]


def test_a_server_error_marks_the_request_span(exported: InMemorySpanExporter) -> None:
    with tracing.request_span("POST", []) as span:
        assert span is not None
        span.answered(None, 503)
    [web] = exported.get_finished_spans()
    assert web.name == "POST" and web.status.status_code == StatusCode.ERROR and attrs(web)["error.type"] == "503"


def _record(**extra: str) -> dict[str, str]:
    return {"agent_name": "Chef", "agent_id": "agent_1", "session_id": "s1", "tenant": "alice",
            "enqueued_at": "1700000000000", "traceparent": CALLER, **extra}  # fmt: skip


@tracing.traced_turn
async def a_turn(tenant: str, job_id: str, record: dict[str, str], attempt: int, fail_tool: bool = False) -> str:
    tracing.turn_started(record, attempt)
    with tracing.chat("gpt-4o-mini") as call:
        async with model_call() as stream:
            assert stream.usage["prompt_tokens"] == 7
        call.answered(stream)
    result = await tracing.tool("calculator", "call_0", _tool(not fail_tool))
    tracing.turn_usage("gpt-4o-mini", {"prompt_tokens": 7, "completion_tokens": 3, "cached_tokens": 2})
    if not result.ok:
        tracing.turn_failed("tool_failed", "the tool failed")
        return "failed"
    return "finished"


async def _tool(ok: bool) -> Result:
    return Result(ok=ok)


def test_a_turns_spans_nest_under_the_web_and_carry_the_genai_attributes(exported: InMemorySpanExporter) -> None:
    assert asyncio.run(a_turn("alice", "job_1", _record(), 1)) == "finished"
    spans = _by_name(exported)
    turn, chat, tool, waited = (spans[name] for name in ("invoke_agent Chef", "chat gpt-4o-mini",
                                                         "execute_tool calculator", "queue wait"))  # fmt: skip
    assert turn.parent is not None and f"{turn.parent.span_id:016x}" == CALLER.split("-")[2]
    assert waited.end_time is not None and turn.start_time is not None and waited.end_time <= turn.start_time
    assert waited.parent == turn.parent
    assert waited.start_time == 1700000000000 * 1_000_000
    assert chat.parent is not None and chat.parent.span_id == turn.context.span_id
    assert tool.parent is not None and tool.parent.span_id == turn.context.span_id
    assert dict(turn.attributes or {}) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai", "gen_ai.agent.name": "Chef",
        "gen_ai.agent.id": "agent_1", "gen_ai.conversation.id": "s1", "parley.tenant": "alice",
        "parley.job_id": "job_1", "parley.turn.attempt": 1, "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3, "gen_ai.usage.cache_read.input_tokens": 2,
        "parley.turn.outcome": "finished",
    }  # fmt: skip
    assert attrs(chat)["gen_ai.response.model"] == "gpt-4o-mini-2024"
    assert attrs(chat)["gen_ai.response.id"] == "chatcmpl-1" and attrs(chat)["gen_ai.usage.input_tokens"] == 7
    assert attrs(tool)["gen_ai.tool.name"] == "calculator" and attrs(tool)["gen_ai.tool.call.id"] == "call_0"
    assert tool.status.status_code == StatusCode.UNSET


def test_a_retry_joins_the_same_trace_without_a_second_queue_wait(exported: InMemorySpanExporter) -> None:
    asyncio.run(a_turn("alice", "job_1", _record(), 2))
    spans = _by_name(exported)
    assert "queue wait" not in spans
    turn = spans["invoke_agent Chef"]
    assert f"{turn.context.trace_id:032x}" == CALLER.split("-")[1] and attrs(turn)["parley.turn.attempt"] == 2


def test_a_turn_without_trace_context_is_a_trace_of_its_own(exported: InMemorySpanExporter) -> None:
    record = _record()
    del record["traceparent"]
    asyncio.run(a_turn("alice", "job_1", record, 1))
    spans = _by_name(exported)
    assert spans["invoke_agent Chef"].parent is None and "queue wait" not in spans
    assert spans["chat gpt-4o-mini"].context.trace_id == spans["invoke_agent Chef"].context.trace_id


def test_failures_set_error_statuses(exported: InMemorySpanExporter) -> None:
    assert asyncio.run(a_turn("alice", "job_1", _record(), 1, fail_tool=True)) == "failed"
    spans = _by_name(exported)
    assert spans["execute_tool calculator"].status.status_code == StatusCode.ERROR
    turn = spans["invoke_agent Chef"]
    assert turn.status.status_code == StatusCode.ERROR and attrs(turn)["error.type"] == "tool_failed"


class ModelError(Exception):
    def __init__(self, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__("the model failed")
        self.status, self.timed_out = status, timed_out


@pytest.mark.parametrize(("error", "kind"), [(ModelError(429), "429"), (ModelError(timed_out=True), "timeout"),
                                             (ValueError("x"), "ValueError")])  # fmt: skip
def test_a_failed_model_call_marks_its_span(exported: InMemorySpanExporter, error: Exception, kind: str) -> None:
    async def call() -> None:
        with tracing.chat("m"):
            async with model_call(fail=error):
                pass

    with pytest.raises(type(error)):
        asyncio.run(call())
    [chat] = exported.get_finished_spans()
    assert chat.status.status_code == StatusCode.ERROR and attrs(chat)["error.type"] == kind


def test_a_model_passed_over_for_the_next_is_marked_failed_by_the_caller(exported: InMemorySpanExporter) -> None:
    with tracing.chat("first") as call:
        call.failed(ModelError(503))
    with tracing.chat("second") as call:
        call.answered(FakeStream())
    spans = _by_name(exported)
    first = spans["chat first"]
    assert first.status.status_code == StatusCode.ERROR and attrs(first)["error.type"] == "503"
    assert spans["chat second"].status.status_code == StatusCode.UNSET
    assert attrs(spans["chat second"])["gen_ai.response.model"] == "gpt-4o-mini-2024"


def test_a_turn_whose_task_is_cancelled_ends_its_span_and_lets_go_of_its_context(
        exported: InMemorySpanExporter) -> None:  # fmt: skip
    @tracing.traced_turn
    async def stopped(tenant: str, job_id: str) -> str:
        tracing.turn_started(_record(), 1)
        raise asyncio.CancelledError

    async def run() -> bool:
        with pytest.raises(asyncio.CancelledError):
            await stopped("alice", "job_1")
        from opentelemetry import trace

        return trace.get_current_span().get_span_context().is_valid

    assert asyncio.run(run()) is False
    turn = _by_name(exported)["invoke_agent Chef"]
    assert attrs(turn)["error.type"] == "cancelled" and turn.status.status_code == StatusCode.UNSET


def test_no_span_holds_message_content(exported: InMemorySpanExporter) -> None:
    asyncio.run(a_turn("alice", "job_1", _record(message="a secret message"), 1))
    for span in exported.get_finished_spans():
        assert "a secret message" not in json.dumps(dict(span.attributes or {}))


def test_setup_names_the_service_from_the_environment_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.export import SpanExporter

    class Nothing(SpanExporter):
        def export(self, spans: Any) -> Any:
            return None

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    from opentelemetry import trace

    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)  # the global one stays the tests'
    spans = Spans.install("parley-web", Nothing())
    assert spans.provider.resource.attributes["service.name"] == "parley-web"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-web")
    assert Spans.install("parley-web", Nothing()).provider.resource.attributes["service.name"] == "edge-web"
