"""Deployment-wide metrics (shared/telemetry.py, api/metrics.py) on fakeredis with its Lua runtime:
what each recording call writes, what the start/finish scripts count (once, only when the step
really happened), that pending deltas ride on writes a turn makes anyway, and what `/metrics`
renders from it, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rq.utils import utcformat

from parley.api import metrics
from parley.shared import events, telemetry
from parley.shared.clock import now_ms
from parley.shared.events import EventType
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.connection import RedisClients
from parley.shared.store.turns import TurnStore
from parley.shared.store.worker_turns import Attempt, WorkerTurns

T = "acme"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def no_pending() -> Iterator[None]:
    """The buffer is per process: each test starts and ends with it empty. Token counts carry agent labels
    here (PARLEY_METRICS_AGENT_LABELS on); tests/unit/test_hardening_edge_metrics.py covers the default."""
    telemetry.PENDING.take()
    telemetry.configure(agent_labels=True)
    yield
    telemetry.PENDING.take()
    telemetry.configure(agent_labels=False)


def accept(turns: TurnStore, agent: dict[str, Any], session_id: str = "s1") -> str:
    return turns.accept(tenant=T, agent=agent, session_id=session_id, message="hi", images=[],
                        idempotency_key=None, request_hash="h").job_id  # fmt: skip


def dequeue(turns: TurnStore, job_id: str) -> None:
    assert turns.raw.lrem(keys.rq_queue(turns.settings.queue_name), 0, job_id) == 1


def start(worker: WorkerTurns, job_id: str) -> tuple[str, int, dict[str, str]]:
    """START_TURN as a worker runs it (WorkerTurns.start)."""
    return asyncio.run(worker.start(T, job_id))


def emit(worker: WorkerTurns, job_id: str, attempt: int, payload: str) -> bool:
    """One event of a running attempt, as a worker's outbox sends it (WorkerTurns.emit)."""
    return asyncio.run(worker.emit(Attempt(T, job_id, attempt), [payload]))


def finish(worker: WorkerTurns, job_id: str, attempt: int, status: str = "finished") -> bool:
    """A worker's FINISH_TURN of its attempt (WorkerTurns.finish), in session s1 as `accept` makes it."""
    return asyncio.run(worker.finish(Attempt(T, job_id, attempt), "s1", status=status,
                                     events_out=[events.encode(EventType.DONE)]))  # fmt: skip


def scrape(clients: RedisClients, settings: Settings, stream_count: int = 0) -> Samples:
    rt = SimpleNamespace(clients=clients, settings=settings)
    body, content_type = metrics.render(rt, stream_count)  # type: ignore[arg-type]
    assert content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}  # fmt: skip


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# --- keys and field format --------------------------------------------------------------------


def test_keys_are_pinned() -> None:
    assert keys.metric("parley_jobs") == "parley:metric:parley_jobs"
    assert keys.web_streams() == "parley:web-streams"
    assert telemetry.JOBS.key == "parley:metric:parley_jobs"


def test_metric_names_are_the_decided_ones() -> None:
    names = {m.name + ("_total" if m.kind == "counter" else "") for m in telemetry.METRICS}
    assert names == {
        "parley_queue_wait_seconds", "parley_turn_seconds", "parley_time_to_first_token_seconds",
        "parley_tokens_total", "parley_model_errors_total", "parley_tool_calls_total", "parley_jobs_total",
        "parley_http_requests_total", "parley_http_request_seconds", "parley_schedule_firings_total",
        "parley_feedback_total",
        "parley_webhook_attempts_total",
        "parley_budget_stops_total",
        "parley_model_fallbacks_total",
    }  # fmt: skip
    assert telemetry.TOKENS.labels == ("agent", "model", "direction")
    assert telemetry.TURN.labels == ("outcome",)
    assert telemetry.FEEDBACK.labels == ("agent", "rating")


def test_an_observation_goes_in_the_first_bucket_that_holds_it() -> None:
    metric = telemetry.QUEUE_WAIT
    assert telemetry.bucket_of(metric, 0.0) == "0.005"
    assert telemetry.bucket_of(metric, 0.005) == "0.005"
    assert telemetry.bucket_of(metric, 0.0051) == "0.01"
    assert telemetry.bucket_of(metric, 10.0) == "10"
    assert telemetry.bucket_of(metric, 301) == "+Inf"


def test_recording_calls_buffer_summed_deltas() -> None:
    telemetry.tool_call("calculator", ok=True)
    telemetry.tool_call("calculator", ok=True)
    telemetry.tool_call("http_get", ok=False)
    telemetry.tokens("Chef", "gpt-4o", 120, None)
    telemetry.model_error(503)
    telemetry.model_error(None, timed_out=True)
    telemetry.model_error(None)
    telemetry.first_token(0.3)
    telemetry.first_token(-1.0)  # a clock step back counts as 0, never negative
    deltas = {(name, field): amount for name, field, amount in telemetry.PENDING.take()}
    assert deltas == {
        ("parley_tool_calls", '["calculator","ok"]'): 2,
        ("parley_tool_calls", '["http_get","error"]'): 1,
        ("parley_tokens", '["Chef","gpt-4o","in"]'): 120,
        ("parley_model_errors", '["503"]'): 1,
        ("parley_model_errors", '["timeout"]'): 1,
        ("parley_model_errors", '["connection"]'): 1,
        ("parley_time_to_first_token_seconds", "[]|0.5"): 1,
        ("parley_time_to_first_token_seconds", "[]|0.005"): 1,
        ("parley_time_to_first_token_seconds", "[]|sum"): 0.3,
    }
    assert not telemetry.PENDING


def test_http_methods_outside_the_known_few_count_as_other() -> None:
    for method in ("GET", "BREW", "X" * 50):
        telemetry.http_request(method, "unmatched", 404, 0.001)
    fields = {field for name, field, _ in telemetry.PENDING.take() if name == "parley_http_requests"}
    assert fields == {'["GET","unmatched","404"]', '["other","unmatched","404"]'}


def test_label_values_with_separators_stay_apart(clients: RedisClients) -> None:
    telemetry.tokens('a|b"c', "org/model|x", 1, 2)
    with clients.text.pipeline(transaction=False) as pipe:
        telemetry.write(pipe, telemetry.PENDING.take())
        pipe.execute()
    series = telemetry.parse(telemetry.TOKENS, clients.text.hgetall(telemetry.TOKENS.key))  # type: ignore[arg-type]
    assert sorted((s.labels["direction"], s.labels["agent"], s.labels["model"], s.value) for s in series) == [
        ("in", 'a|b"c', "org/model|x", 1.0), ("out", 'a|b"c', "org/model|x", 2.0)]  # fmt: skip


def test_histogram_reads_back_cumulative(clients: RedisClients) -> None:
    for seconds in (0.001, 0.2, 0.2, 7.0, 1000.0):
        telemetry.PENDING.observe(telemetry.FIRST_TOKEN, (), seconds)
    with clients.text.pipeline(transaction=False) as pipe:
        telemetry.write(pipe, telemetry.PENDING.take())
        pipe.execute()
    clients.text.hset(telemetry.FIRST_TOKEN.key, "not ours", "x")  # skipped, not fatal
    [series] = telemetry.parse(telemetry.FIRST_TOKEN, clients.text.hgetall(telemetry.FIRST_TOKEN.key))  # type: ignore[arg-type]
    buckets = dict(telemetry.cumulative(telemetry.FIRST_TOKEN, series))
    assert buckets["0.005"] == 1 and buckets["0.1"] == 1 and buckets["0.25"] == 3 and buckets["10"] == 4
    assert buckets["300"] == 4 and buckets["+Inf"] == 5
    assert series.sum == pytest.approx(1007.401)


# --- the turn's life, counted in its own scripts ---------------------------------------------------


def test_start_records_the_queue_wait_of_the_first_attempt_only(turns: TurnStore, worker_turns: WorkerTurns,
                                                                clients: RedisClients, chef: dict) -> None:  # fmt: skip
    job_id = accept(turns, chef)
    clients.text.hset(keys.job(T, job_id), "enqueued_at", now_ms() - 1500)  # accepted 1.5 s ago
    dequeue(turns, job_id)
    assert start(worker_turns, job_id)[:2] == ("started", 1)
    assert start(worker_turns, job_id)[:2] == ("started", 2)  # a retry: not a new wait
    wait = clients.text.hgetall(telemetry.QUEUE_WAIT.key)
    assert wait["[]|2.5"] == "1" and sum(int(v) for f, v in wait.items() if not f.endswith("|sum")) == 1
    assert 1.5 <= float(wait["[]|sum"]) < 2.5
    assert start(worker_turns, "job_unknown")[0] == "missing"
    assert clients.text.hgetall(telemetry.QUEUE_WAIT.key) == wait


def test_finish_counts_the_outcome_once(turns: TurnStore, worker_turns: WorkerTurns, clients: RedisClients,
                                        chef: dict) -> None:  # fmt: skip
    job_id = accept(turns, chef)
    dequeue(turns, job_id)
    _, attempt, _ = start(worker_turns, job_id)
    assert finish(worker_turns, job_id, attempt)
    assert not finish(worker_turns, job_id, attempt)  # already ended: not counted again
    assert not turns.cancel(T, job_id)
    assert clients.text.hgetall(telemetry.JOBS.key) == {'["finished"]': "1"}
    turn = clients.text.hgetall(telemetry.TURN.key)
    assert sum(int(v) for f, v in turn.items() if f.startswith('["finished"]|') and not f.endswith("|sum")) == 1
    assert float(turn['["finished"]|sum']) >= 0


def test_failed_and_canceled_turns_are_counted_by_outcome(turns: TurnStore, worker_turns: WorkerTurns,
                                                          clients: RedisClients, chef: dict) -> None:  # fmt: skip
    failed, canceled = accept(turns, chef, "s1"), accept(turns, chef, "s2")
    dequeue(turns, failed)
    _, attempt, _ = start(worker_turns, failed)
    assert finish(worker_turns, failed, attempt, status="failed")
    assert turns.cancel(T, canceled)  # still queued
    assert clients.text.hgetall(telemetry.JOBS.key) == {'["failed"]': "1", '["canceled"]': "1"}
    samples = scrape(clients, turns.settings)
    assert value(samples, "parley_turn_seconds_count", outcome="failed") == 1
    assert value(samples, "parley_turn_seconds_count", outcome="canceled") == 1


def test_pending_deltas_ride_on_the_turns_own_writes(turns: TurnStore, worker_turns: WorkerTurns,
                                                     clients: RedisClients, chef: dict) -> None:  # fmt: skip
    job_id = accept(turns, chef)
    dequeue(turns, job_id)
    telemetry.tool_call("calculator", ok=True)
    _, attempt, _ = start(worker_turns, job_id)
    assert clients.text.hgetall(telemetry.TOOL_CALLS.key) == {'["calculator","ok"]': "1"}

    telemetry.first_token(0.02)
    assert emit(worker_turns, job_id, attempt, events.encode(EventType.DELTA, content="a"))
    assert clients.text.hget(telemetry.FIRST_TOKEN.key, "[]|0.025") == "1"

    telemetry.tokens("Chef", "m", 10, 3)
    assert finish(worker_turns, job_id, attempt)
    assert clients.text.hgetall(telemetry.TOKENS.key) == {'["Chef","m","in"]': "10", '["Chef","m","out"]': "3"}
    assert not telemetry.PENDING


def test_emit_still_says_when_the_turn_is_no_longer_ours(turns: TurnStore, worker_turns: WorkerTurns,
                                                         chef: dict) -> None:  # fmt: skip
    job_id = accept(turns, chef)
    dequeue(turns, job_id)
    _, attempt, _ = start(worker_turns, job_id)
    telemetry.tool_call("x", ok=True)  # its reply is not an event id
    assert emit(worker_turns, job_id, attempt, events.encode(EventType.DELTA, content="a"))
    assert turns.cancel(T, job_id)
    telemetry.tool_call("x", ok=True)
    assert not emit(worker_turns, job_id, attempt, events.encode(EventType.DELTA, content="b"))


# --- /metrics ------------------------------------------------------------------------------------


def test_scrape_renders_everything_and_writes_this_webs_share(turns: TurnStore, clients: RedisClients,
                                                              chef: dict, settings: Settings) -> None:  # fmt: skip
    telemetry.http_request("POST", "/api/v1/chat", 200, 0.03)
    telemetry.tokens("Chef", "m", 5, 7)
    clients.text.hset(keys.web_streams(), mapping={
        "other-web": f"2 {now_ms() + 5000}",  # alive
        "dead-web": f"9 {now_ms() - 1}",  # stopped reporting: not counted, removed
    })  # fmt: skip
    samples = scrape(clients, settings, stream_count=3)
    assert value(samples, "parley_redis_up") == 1
    assert value(samples, "parley_active_streams") == 5
    assert set(clients.text.hkeys(keys.web_streams())) == {"other-web", metrics.WEB_ID}
    assert value(samples, "parley_http_requests_total", method="POST", route="/api/v1/chat", status="200") == 1
    assert value(samples, "parley_http_request_seconds_bucket", method="POST", route="/api/v1/chat", le="0.05") == 1
    assert value(samples, "parley_tokens_total", direction="out") == 7  # this web shows no agent labels
    assert value(samples, "parley_queue_depth") == 0
    assert value(samples, "parley_queue_oldest_job_age_seconds") == 0
    assert not telemetry.PENDING


def test_queue_gauges_come_from_rqs_queue(turns: TurnStore, clients: RedisClients, chef: dict,
                                          settings: Settings) -> None:  # fmt: skip
    first, second = accept(turns, chef, "s1"), accept(turns, chef, "s2")
    clients.text.hset(keys.rq_job(first), "enqueued_at", utcformat(datetime.now(UTC) - timedelta(seconds=42)))
    samples = scrape(clients, settings)
    assert value(samples, "parley_queue_depth") == 2
    assert 42 <= value(samples, "parley_queue_oldest_job_age_seconds") < 50  # type: ignore[operator]
    dequeue(turns, first)
    assert value(scrape(clients, settings), "parley_queue_oldest_job_age_seconds") < 5  # type: ignore[operator]
    assert second


def test_scrape_without_redis_says_so(clients: RedisClients, server: fakeredis.FakeServer,
                                      settings: Settings) -> None:  # fmt: skip
    server.connected = False
    telemetry.http_request("GET", "/healthz", 200, 0.001)
    assert scrape(clients, settings) == {("parley_redis_up", ()): 0.0}


def test_reporter_writes_deltas_and_stream_count(clients: RedisClients, settings: Settings) -> None:
    rt = SimpleNamespace(clients=clients, settings=settings)
    telemetry.tool_call("calculator", ok=False)
    metrics.report(rt, 4)  # type: ignore[arg-type]
    count, expires = clients.text.hget(keys.web_streams(), metrics.WEB_ID).split()  # type: ignore[union-attr]
    assert count == "4" and int(expires) > now_ms()
    assert json.loads(next(iter(clients.text.hkeys(telemetry.TOOL_CALLS.key)))) == ["calculator", "error"]
