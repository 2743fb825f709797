"""The OpenTelemetry side of `tracing.py`: imported only once tracing is on (an OTLP endpoint is configured).

Spans follow the GenAI semantic conventions (`invoke_agent`, `chat`, `execute_tool`; `gen_ai.*` attributes) and
HTTP's for the web's server span. Trace context crosses processes as W3C Trace Context: from the caller's
`traceparent` header, through the job record (`traceparent`, `tracestate` fields), to the worker; the MCP SDK
carries it on into MCP requests' `_meta` (SEP-414) from the `execute_tool` span current around the call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .tracing import ModelCall

R = TypeVar("R")

TRACER_NAME = "parley"
PROVIDER_NAME = "openai"
"""`gen_ai.provider.name`: Parley speaks OpenAI's chat completions API to whichever server serves it."""
MAX_TRACESTATE_CHARS = 512
"""A caller's `tracestate` longer than this is not carried into the job (W3C asks vendors to keep 512)."""
PROPAGATOR = TraceContextTextMapPropagator()
"""W3C `traceparent`/`tracestate` only: a malformed header is ignored (the request starts a new trace)."""

_turn: ContextVar[_Turn | None] = ContextVar("parley_trace_turn", default=None)


@dataclass
class RequestSpan:
    """The server span of one HTTP request; `answered` names it once routing and the answer are known."""

    span: Span
    method: str

    def answered(self, route: str | None, status: int) -> None:
        self.span.update_name(f"{self.method} {route}" if route else self.method)
        if route:
            self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self.span.set_status(StatusCode.ERROR)
            self.span.set_attribute("error.type", str(status))


class _ModelCall(ModelCall):
    """The `chat` span's side of one model call (tracing.ModelCall)."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def failed(self, error: BaseException) -> None:
        _failed(self.span, error)

    def answered(self, stream: Any) -> None:
        _answered(self.span, stream)


class _Turn:
    """The `invoke_agent` span of the turn the current job runs, and the context token that made it current."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.span: Span | None = None
        self.token: object | None = None


class Spans:
    """Makes Parley's spans with one tracer (the global provider's, so the MCP SDK's own spans join them)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(TRACER_NAME)

    @classmethod
    def install(cls, default_service: str, exporter: SpanExporter | None = None) -> Spans:
        """The SDK's provider, made the global one, exporting in batches (OTEL_BSP_* settings) over OTLP/HTTP
        (OTEL_EXPORTER_OTLP_* settings); sampler from OTEL_TRACES_SAMPLER, resource from OTEL_SERVICE_NAME and
        OTEL_RESOURCE_ATTRIBUTES, else `service.name` = `default_service`."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: default_service}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        return cls(provider)

    def shutdown(self, timeout_s: float) -> None:
        """Flush and stop the exporter in a thread of its own, waited for at most `timeout_s` (the SDK's own
        wait is 30 s, and an unreachable collector must not hold a drain that long)."""
        done = threading.Thread(target=self.provider.shutdown, name="otel-shutdown", daemon=True)
        done.start()
        done.join(timeout_s)

    # --- web ------------------------------------------------------------------------------------------------

    @contextmanager
    def request(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> Iterator[RequestSpan]:
        carrier = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers
                   if name.lower() in (b"traceparent", b"tracestate")}  # fmt: skip
        parent = PROPAGATOR.extract(carrier)
        with self.tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER,
                                               attributes={"http.request.method": method}) as span:  # fmt: skip
            yield RequestSpan(span, method)

    def carrier(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
        if len(carrier.get("tracestate", "")) > MAX_TRACESTATE_CHARS:
            del carrier["tracestate"]
        return carrier

    def accepted(self, job_id: str, session_id: str) -> None:
        span = trace.get_current_span()
        span.set_attribute("parley.job_id", job_id)
        span.set_attribute("gen_ai.conversation.id", session_id)

    # --- worker ---------------------------------------------------------------------------------------------

    async def turn(self, func: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any) -> R:
        turn = _Turn(str(args[1]) if len(args) > 1 else "")  # a job called as (tenant, job_id, ...)
        reset = _turn.set(turn)
        try:
            outcome = await func(*args, **kwargs)
        except BaseException as error:
            if turn.span is not None:
                _failed(turn.span, error)
            raise
        else:
            if turn.span is not None:
                turn.span.set_attribute("parley.turn.outcome", str(outcome))
            return outcome
        finally:
            if turn.span is not None:
                turn.span.end()
            if turn.token is not None:
                context.detach(turn.token)  # type: ignore[arg-type]
            _turn.reset(reset)

    def turn_started(self, record: Mapping[str, str], attempt: int) -> None:
        turn = _turn.get()
        if turn is None or turn.span is not None:
            return
        parent = PROPAGATOR.extract({name: record[name] for name in ("traceparent", "tracestate") if name in record})
        started_ns = time.time_ns()
        if attempt == 1 and trace.get_current_span(parent).get_span_context().is_valid and record.get("enqueued_at"):
            queued_ns = min(int(record["enqueued_at"]) * 1_000_000, started_ns)  # clocks of two hosts: never < 0
            waited = self.tracer.start_span("queue wait", context=parent, kind=SpanKind.INTERNAL, start_time=queued_ns,
                                            attributes={"parley.job_id": turn.job_id})  # fmt: skip
            waited.end(end_time=started_ns)
        agent = record.get("agent_name", "")
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": PROVIDER_NAME,
            "gen_ai.agent.name": agent, "gen_ai.agent.id": record.get("agent_id", ""),
            "gen_ai.conversation.id": record.get("session_id", ""), "parley.tenant": record.get("tenant", ""),
            "parley.job_id": turn.job_id, "parley.turn.attempt": attempt,
        }  # fmt: skip
        turn.span = self.tracer.start_span(f"invoke_agent {agent}", context=parent, kind=SpanKind.INTERNAL,
                                           attributes=attributes, start_time=started_ns)  # fmt: skip
        turn.token = context.attach(trace.set_span_in_context(turn.span, parent))

    def turn_usage(self, model: str, usage: Mapping[str, int]) -> None:
        turn = _turn.get()
        if turn is not None and turn.span is not None:
            turn.span.set_attribute("gen_ai.request.model", model)
            _usage(turn.span, usage)

    def turn_failed(self, code: str, message: str) -> None:
        turn = _turn.get()
        if turn is not None and turn.span is not None:
            turn.span.set_attribute("error.type", code)
            turn.span.set_status(StatusCode.ERROR, message)

    @contextmanager
    def chat(self, model: str) -> Iterator[ModelCall]:
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER_NAME,
                      "gen_ai.request.model": model}  # fmt: skip
        with self.tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes,
                                               record_exception=False, set_status_on_exception=False
                                               ) as span:  # fmt: skip
            try:
                yield _ModelCall(span)
            except BaseException as error:
                _failed(span, error)
                raise

    async def tool(self, name: str, call_id: str, work: Awaitable[R]) -> R:
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                      "gen_ai.tool.call.id": call_id}  # fmt: skip
        with self.tracer.start_as_current_span(f"execute_tool {name}", kind=SpanKind.INTERNAL,
                                               attributes=attributes, record_exception=False,
                                               set_status_on_exception=False) as span:  # fmt: skip
            try:
                result = await work
            except BaseException as error:
                _failed(span, error)
                raise
            if getattr(result, "ok", True) is False:
                span.set_attribute("error.type", "tool_error")
                span.set_status(StatusCode.ERROR, "the tool failed")
            return result


def _usage(span: Span, usage: Mapping[str, Any]) -> None:
    """GenAI's token count attributes from the turn's flat usage dict (its names are OpenAI's)."""
    for name, attribute in (("prompt_tokens", "gen_ai.usage.input_tokens"),
                            ("completion_tokens", "gen_ai.usage.output_tokens"),
                            ("cached_tokens", "gen_ai.usage.cache_read.input_tokens")):  # fmt: skip
        count = usage.get(name)
        if isinstance(count, int):
            span.set_attribute(attribute, count)


def _answered(span: Span, stream: Any) -> None:
    """What the model call's stream says of its answer: token counts, the model that answered, the answer's id."""
    _usage(span, getattr(stream, "usage", None) or {})
    said = getattr(stream, "response", None) or {}
    if said.get("model"):
        span.set_attribute("gen_ai.response.model", said["model"])
    if said.get("id"):
        span.set_attribute("gen_ai.response.id", said["id"])


def _failed(span: Span, error: BaseException) -> None:
    """An operation that ended by `error`: `error.type` (a model's HTTP status, `timeout`, `cancelled` or the
    exception's class) and an error status. The message is the exception's own, which for a model's error is
    what the job shows too; a turn stopped or superseded (its task cancelled, or the loop's `Stopped`) is no error."""
    if isinstance(error, GeneratorExit):
        return
    if type(error).__name__ in ("CancelledError", "Stopped"):
        span.set_attribute("error.type", "cancelled")
        return
    status = getattr(error, "status", None)
    kind = str(status) if status else "timeout" if getattr(error, "timed_out", False) else type(error).__name__
    span.set_attribute("error.type", kind)
    span.set_status(StatusCode.ERROR, str(error)[:500])
