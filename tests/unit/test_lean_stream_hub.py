"""EventHub.backlog under many idle streams: reads asked for at once share pipelines, not a pooled
connection and a round trip each (20,000 idle streams re-read their backlog at each quiet ping)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from parley.api import hub as hub_module
from parley.api.hub import EventHub
from parley.shared.settings import Settings
from parley.shared.store import keys

STREAMS = 450


def _hub(make_settings: Callable[..., Settings]) -> tuple[EventHub, list[str]]:
    """A hub on fakeredis whose every single-command round trip is recorded."""
    hub = EventHub(make_settings())
    fake = fakeredis.FakeAsyncRedis(decode_responses=True)
    single: list[str] = []
    execute = fake.execute_command

    async def recorded(*args: Any, **options: Any) -> Any:
        single.append(str(args[0]))
        return await execute(*args, **options)

    fake.execute_command = recorded  # type: ignore[method-assign]
    hub.redis = fake
    return hub, single


def test_backlog_reads_at_once_go_as_pipelines(make_settings: Callable[..., Settings]) -> None:
    hub, single = _hub(make_settings)

    async def run() -> list[list[tuple[str, str]]]:
        for job in range(STREAMS):
            for n in range(job % 3):
                await hub.redis.xadd(keys.events("t", f"j{job}"), {"e": f'{{"n": {n}}}'}, id=f"1-{n + 1}")
        single.clear()
        return await asyncio.gather(*(hub.backlog("t", f"j{job}", "1-1" if job % 2 else None)
                                      for job in range(STREAMS)))  # fmt: skip

    backlogs = asyncio.run(run())
    assert single == []  # no XRANGE of its own: every one went in a pipeline
    for job, backlog in enumerate(backlogs):
        expected = [(f"1-{n + 1}", f'{{"n": {n}}}') for n in range(job % 3)]
        assert backlog == (expected[1:] if job % 2 else expected)
    assert hub_module.BACKLOG_BATCH < STREAMS  # more than one batch was needed and each was answered


def test_a_redis_error_reaches_every_read_of_its_batch(make_settings: Callable[..., Settings],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    hub, _ = _hub(make_settings)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(hub.redis, "pipeline", broken)

    async def run() -> list[Any]:
        return await asyncio.gather(*(hub.backlog("t", f"j{n}", None) for n in range(5)), return_exceptions=True)

    assert all(isinstance(result, RedisConnectionError) for result in asyncio.run(run()))
