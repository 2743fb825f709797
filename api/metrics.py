"""`/metrics`: the whole deployment's metrics, read from Redis, as Prometheus text.

Every value is deployment-wide (shared/telemetry.py explains the Redis layout), so any `web`
answers the same and a scrape of one web is enough. A scrape is two round trips at most: one
pipeline that writes this web's pending deltas and its stream count, then reads every metric
hash, the stream counts and the queue; and, when the queue holds a job, one read of that
job's enqueue time (plus one HDEL when a dead web's stream count has expired).

`Reporter` keeps this web's share current between scrapes: once a second it writes the
HTTP deltas it buffered and its count of open SSE streams (with an expiry, so a web that died
stops counting).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from rq.utils import utcparse

from parley.shared import telemetry
from parley.shared.clock import now_ms
from parley.shared.store import keys
from parley.shared.tasks import cancel_until_done

if TYPE_CHECKING:
    from .runtime import WebRuntime

log = logging.getLogger("parley.api.metrics")

WEB_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
"""This web process in the stream-count hash."""
REPORT_INTERVAL_S = 1.0
STREAMS_TTL_MS = 10_000
"""A web's stream count stops counting this long after its last report (it died)."""


def _write_share(pipe: Any, stream_count: int, deltas: list[telemetry.Delta]) -> None:
    telemetry.write(pipe, deltas)
    pipe.hset(keys.web_streams(), WEB_ID, f"{stream_count} {now_ms() + STREAMS_TTL_MS}")


def report(rt: WebRuntime, stream_count: int) -> None:
    """Write this web's buffered deltas and stream count (one round trip); lost if Redis fails."""
    with rt.clients.text.pipeline(transaction=False) as pipe:
        _write_share(pipe, stream_count, telemetry.PENDING.take())
        pipe.execute()


class DeploymentCollector(Collector):
    """Reads the deployment's metrics from Redis at each scrape."""

    def __init__(self, rt: WebRuntime, stream_count: int) -> None:
        self.rt = rt
        self.stream_count = stream_count
        """This web's own count, taken on the event loop (the hub is not thread-safe)."""

    def collect(self) -> Iterator[Metric]:
        redis_up = GaugeMetricFamily("parley_redis_up", "1 when Redis answered this scrape")
        try:
            families = self._read()
        except RedisError as error:
            log.warning("metrics: Redis does not answer (%s)", error)
            redis_up.add_metric([], 0)
            yield redis_up
            return
        redis_up.add_metric([], 1)
        yield redis_up
        yield from families

    def _read(self) -> list[Metric]:
        r = self.rt.clients.text
        queue_key = keys.rq_queue(self.rt.settings.queue_name)
        with r.pipeline(transaction=False) as pipe:
            _write_share(pipe, self.stream_count, telemetry.PENDING.take())
            for metric in telemetry.METRICS:
                pipe.hgetall(metric.key)
            pipe.hgetall(keys.web_streams())
            pipe.llen(queue_key)
            pipe.lindex(queue_key, 0)
            replies = pipe.execute()
        *hashes, streams, depth, head = replies[-(len(telemetry.METRICS) + 3):]
        agent_labels = self.rt.settings.metrics_agent_labels
        families = [_family(metric, fields, _exposed(metric, agent_labels))
                    for metric, fields in zip(telemetry.METRICS, hashes, strict=True)]  # fmt: skip
        families.append(_gauge("parley_queue_depth", "Turns waiting in the RQ queue", depth))
        families.append(_gauge("parley_queue_oldest_job_age_seconds",
                               "How long the turn at the head of the queue has waited (0: empty queue)",
                               self._head_age_s(head)))  # fmt: skip
        families.append(_gauge("parley_active_streams", "SSE streams open, summed over web processes",
                               self._streams(streams)))  # fmt: skip
        return families

    def _head_age_s(self, head: str | None) -> float:
        if not head:
            return 0.0
        enqueued = self.rt.clients.text.hget(keys.rq_job(head), "enqueued_at")
        if not enqueued:
            return 0.0  # taken by a worker meanwhile
        try:
            age = datetime.now(UTC) - utcparse(enqueued)
        except ValueError:
            return 0.0
        return max(0.0, age.total_seconds())

    def _streams(self, reports: dict[str, str]) -> int:
        now, total, stale = now_ms(), 0, []
        for web, value in reports.items():
            count, _, expires = value.partition(" ")
            if expires.isdigit() and int(expires) > now and count.isdigit():
                total += int(count)
            else:
                stale.append(web)
        if stale:
            self.rt.clients.text.hdel(keys.web_streams(), *stale)
        return total


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def _exposed(metric: telemetry.Metric, agent_labels: bool) -> tuple[str, ...]:
    """The labels a scrape shows: token counts by direction only, feedback by rating only, fallbacks by reason only,
    unless the operator asked for agent labels (whatever Redis holds, e.g. counts written while the setting was on)."""
    if metric is telemetry.TOKENS and not agent_labels:
        return ("direction",)
    if metric is telemetry.FEEDBACK and not agent_labels:
        return ("rating",)
    if metric is telemetry.MODEL_FALLBACKS and not agent_labels:
        return ("reason",)
    return metric.labels


def _family(metric: telemetry.Metric, fields: dict[str, str], labels: tuple[str, ...]) -> Metric:
    """A metric's family with `labels` (a counter's series summed over the labels left out)."""
    series = telemetry.parse(metric, fields)
    if metric.kind == "counter":
        sums: dict[tuple[str, ...], float] = {}
        for one in series:
            shown = tuple(one.labels[name] for name in labels)
            sums[shown] = sums.get(shown, 0.0) + one.value
        counter = CounterMetricFamily(metric.name, metric.help, labels=labels)
        for shown, total in sums.items():
            counter.add_metric(list(shown), total)
        return counter
    histogram = HistogramMetricFamily(metric.name, metric.help, labels=metric.labels)
    for one in series:
        histogram.add_metric([one.labels[name] for name in metric.labels], telemetry.cumulative(metric, one),
                             one.sum)  # fmt: skip
    return histogram


def render(rt: WebRuntime, stream_count: int) -> tuple[bytes, str]:
    """The Prometheus text (blocking: run it in a thread); `stream_count`: this web's open streams."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector(rt, stream_count))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class Reporter:
    """Once a second, this web's buffered deltas and open-stream count go to Redis."""

    def __init__(self, rt: WebRuntime) -> None:
        self.rt = rt
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-reporter")

    async def stop(self) -> None:
        """Stop reporting, writing the last deltas and removing this web's stream count."""
        if self._task:
            await cancel_until_done([self._task])
        try:
            await asyncio.to_thread(report, self.rt, 0)
            await asyncio.to_thread(self.rt.clients.text.hdel, keys.web_streams(), WEB_ID)
        except RedisError:
            pass

    async def _run(self) -> None:
        reported_count, reported_at = -1, 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            count = self.rt.hub.stream_count
            due = loop.time() - reported_at > STREAMS_TTL_MS / 3000
            if telemetry.PENDING or count != reported_count or due:
                try:
                    await asyncio.to_thread(report, self.rt, count)
                    reported_count, reported_at = count, loop.time()
                except RedisError as error:
                    log.debug("metrics report failed (%s); next second again", error)
