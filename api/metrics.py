"""Prometheus metrics of a web process.

Counters and histograms are this process's own; gauges read from Redis (queue depth) describe
the whole deployment, so any `web` reports them the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from .runtime import WebRuntime

REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter("parley_http_requests", "HTTP requests answered", ["method", "route", "status"],
                        registry=REGISTRY)  # fmt: skip
HTTP_LATENCY = Histogram("parley_http_request_seconds", "Time to answer (to the first byte for streams)",
                         ["method", "route"], registry=REGISTRY)  # fmt: skip
QUEUE_DEPTH = Gauge("parley_queue_depth", "Turns waiting in the RQ queue", registry=REGISTRY)
ACTIVE_STREAMS = Gauge("parley_active_streams", "SSE streams open on this process", registry=REGISTRY)
REDIS_UP = Gauge("parley_redis_up", "1 when Redis answered the last scrape", registry=REGISTRY)


def render(rt: WebRuntime) -> tuple[bytes, str]:
    try:
        QUEUE_DEPTH.set(rt.turns.queue_depth())
        REDIS_UP.set(1)
    except RedisError:
        REDIS_UP.set(0)
    ACTIVE_STREAMS.set(rt.hub.stream_count)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
