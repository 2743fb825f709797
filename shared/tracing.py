"""OpenTelemetry traces of a turn: one trace from the web request that accepted it, through the queue, to each
model call and tool call on the worker (docs/observability.md, "Traces").

Tracing is on in a process only when `setup` finds an OTLP endpoint in the environment
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Until then nothing of OpenTelemetry is
imported by this module and every function below returns at once: `tool` hands back what it was given, `chat`
a context that does nothing, the others test one global. The SDK side (spans, propagation, the exporter) is in
`tracing_otel.py`, imported by `setup` alone.

What the spans carry is names, ids, models, token counts and outcomes: never a message, a tool's arguments or
its result (a trace backend is not where tenants' words should end up).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from .tracing_otel import RequestSpan, Spans

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either one turns tracing on (the SDK's exporter reads them, and the other OTEL_* variables, itself)."""

P = ParamSpec("P")
R = TypeVar("R")

_spans: Spans | None = None
"""The process's span maker once `setup` turned tracing on; None: every function here is a no-op."""


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the environment names an OTLP endpoint."""
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def setup(default_service: str) -> bool:
    """Turn tracing on for this process when an OTLP endpoint is configured: the SDK's tracer provider (service
    name from OTEL_SERVICE_NAME, else `default_service`; sampler from OTEL_TRACES_SAMPLER) exporting in batches
    over OTLP/HTTP. Once per process (a second call keeps the first provider). Returns whether tracing is on."""
    global _spans
    if _spans is None and configured():
        from .tracing_otel import Spans

        _spans = Spans.install(default_service)
    return _spans is not None


def enabled() -> bool:
    return _spans is not None


def shutdown(timeout_s: float = 5.0) -> None:
    """Export the spans still buffered (at most `timeout_s`) and stop the exporter: on a graceful stop."""
    if _spans is not None:
        _spans.shutdown(timeout_s)


# --- web ----------------------------------------------------------------------------------------------------


def request_span(method: str, headers: Sequence[tuple[bytes, bytes]]) -> AbstractContextManager[RequestSpan | None]:
    """The server span of one HTTP request, current while the request runs, joined to the caller's trace when
    its headers carry a W3C `traceparent` (and `tracestate`); yields None when tracing is off."""
    if _spans is None:
        return nullcontext()
    return _spans.request(method, headers)


def job_fields() -> dict[str, str]:
    """The current trace context as job record fields (`traceparent`, `tracestate`): the worker's spans of the
    turn join the request's trace through them. Empty when tracing is off or no span is current."""
    if _spans is None:
        return {}
    return _spans.carrier()


def accepted(job_id: str, session_id: str) -> None:
    """Name the turn a request accepted on the request's span."""
    if _spans is not None:
        _spans.accepted(job_id, session_id)


# --- worker -------------------------------------------------------------------------------------------------


def traced_turn(func: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """For the turn job: the `invoke_agent` span that `turn_started` opens is ended (with the job's outcome, or
    its exception) when the job returns, and its context let go."""

    @functools.wraps(func)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        if _spans is None:
            return await func(*args, **kwargs)
        return await _spans.turn(func, *args, **kwargs)

    return run


def turn_started(record: Mapping[str, str], attempt: int) -> None:
    """The turn of `record` (its job record) started on this worker: open its `invoke_agent` span under the
    trace context the web stored in the record (a span of its queue wait beside it, on its first attempt)."""
    if _spans is not None:
        _spans.turn_started(record, attempt)


def turn_usage(model: str, usage: Mapping[str, int]) -> None:
    """The turn's model and its token counts so far, on its `invoke_agent` span."""
    if _spans is not None:
        _spans.turn_usage(model, usage)


def turn_failed(code: str, message: str) -> None:
    """The turn ends `failed` with `code`: its span's status says so."""
    if _spans is not None:
        _spans.turn_failed(code, message)


class ModelCall:
    """What a caller tells the `chat` span of one model call: `failed` for an error it caught (a model passed
    over for the next), `answered` once the call's stream ended (its token counts and the model that answered).
    This one, the off path's, does nothing."""

    def failed(self, error: BaseException) -> None:
        pass

    def answered(self, stream: Any) -> None:
        pass


NO_CALL = ModelCall()


def chat(model: str) -> AbstractContextManager[ModelCall]:
    """A `chat <model>` span around one model call, current while it runs; an exception leaving it marks it
    failed. Yields the call's `ModelCall` (one that does nothing when tracing is off)."""
    if _spans is None:
        return nullcontext(NO_CALL)
    return _spans.chat(model)


def tool(name: str, call_id: str, work: Awaitable[R]) -> Awaitable[R]:
    """`work` (one tool call) inside an `execute_tool <name>` span; a result whose `ok` is False marks it failed.
    `work` itself when tracing is off."""
    if _spans is None:
        return work
    return _spans.tool(name, call_id, work)


def _set_for_tests(spans: Any) -> Any:
    """Swap the span maker (unit tests with an in-memory exporter); returns the previous one."""
    global _spans
    previous, _spans = _spans, spans
    return previous
