"""The providers on one event loop: a `ModelStream` reports every piece of content the model sends
(a fragment of a function call included) to `on_activity`, which the turn's idle timeout hangs on,
and the demo model pauses between words without blocking the loop, so a worker's other turns go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from parley.worker.providers import make_provider
from parley.worker.providers.base import PROGRESS, REASONING, TEXT, ModelStream, ToolCall
from parley.worker.providers.demo import DemoProvider
from parley.worker.providers.openai import OpenAIProvider, pool_limits

USER = [{"role": "user", "content": "one two three four five six"}]


async def _from(items: list[tuple[str, str]]) -> AsyncIterator[tuple[str, str]]:
    for item in items:
        await asyncio.sleep(0)
        yield item


STEP = [(REASONING, "hm"), (TEXT, "a"), (PROGRESS, ""), (TEXT, " b"), (PROGRESS, ""), (PROGRESS, "")]


def test_every_piece_is_activity_but_progress_is_not_yielded() -> None:
    async def read() -> tuple[list[tuple[str, str]], list[int]]:
        stream = ModelStream(_from(STEP), tool_calls=[ToolCall("c1", "f", "{}")])
        seen: list[int] = []
        stream.on_activity = lambda: seen.append(len(seen))
        return [part async for part in stream.parts()], seen

    parts, seen = asyncio.run(read())
    assert parts == [(REASONING, "hm"), (TEXT, "a"), (TEXT, " b")]
    assert len(seen) == len(STEP)  # the three PROGRESS marks count as activity too


def test_activity_is_reported_as_each_piece_arrives_not_after() -> None:
    async def read() -> list[tuple[int, str]]:
        stream = ModelStream(_from(STEP))
        calls = 0

        def activity() -> None:
            nonlocal calls
            calls += 1

        stream.on_activity = activity
        return [(calls, piece) async for kind, piece in stream.parts()]

    assert asyncio.run(read()) == [(1, "hm"), (2, "a"), (4, " b")]


def test_async_iteration_gives_text_only_and_works_without_on_activity() -> None:
    async def read() -> tuple[list[str], ModelStream]:
        stream = ModelStream(_from(STEP), usage={"total_tokens": 3})
        return [piece async for piece in stream], stream

    texts, stream = asyncio.run(read())
    assert texts == ["a", " b"] and stream.usage == {"total_tokens": 3} and stream.tool_calls == []


def test_the_demo_streams_words_without_blocking_the_loop(make_settings: Any) -> None:
    provider = DemoProvider(make_settings(PARLEY_DEMO_CHUNK_DELAY_MS="20"))

    async def one() -> str:
        async with provider.stream(model="demo", messages=USER, temperature=None, max_tokens=None) as stream:
            return "".join([piece async for piece in stream])

    async def three_at_once() -> tuple[tuple[str, str, str], float]:
        started = time.monotonic()
        answers = await asyncio.gather(one(), one(), one())
        await provider.aclose()
        return answers, time.monotonic() - started

    answers, took = asyncio.run(three_at_once())
    words = len(answers[0].split(" "))
    assert len(set(answers)) == 1 and "one two three four five six" in answers[0]
    # Each answer pauses 20 ms before every word; run one after another they would take three times that.
    assert took < 2 * words * 0.020, (took, words)


def test_a_demo_stream_is_left_at_once_when_its_task_is_cancelled(make_settings: Any) -> None:
    provider = DemoProvider(make_settings(PARLEY_DEMO_CHUNK_DELAY_MS="1000"))

    async def cancel_mid_answer() -> tuple[list[str], bool, float]:
        texts: list[str] = []

        async def read() -> None:
            async with provider.stream(model="demo", messages=USER, temperature=None, max_tokens=None) as stream:
                async for piece in stream:
                    texts.append(piece)

        started = time.monotonic()
        task = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return texts, task.cancelled(), time.monotonic() - started

    texts, cancelled, took = asyncio.run(cancel_mid_answer())
    assert texts == [] and cancelled and took < 0.5  # it was still waiting to send its first word


def test_the_pool_has_room_for_every_concurrent_turn(make_settings: Any) -> None:
    assert pool_limits(50).max_connections == 1000 and pool_limits(50).max_keepalive_connections == 100
    assert pool_limits(700).max_connections == 1000 and pool_limits(700).max_keepalive_connections == 700
    settings = make_settings(PARLEY_LLM="openai", OPENAI_API_KEY="x", PARLEY_WORKER_CONCURRENCY="400")
    provider = make_provider(settings)
    assert isinstance(provider, OpenAIProvider)
    pool = provider.client._client._transport._pool  # type: ignore[attr-defined]  # httpcore's, behind httpx2
    assert pool._max_keepalive_connections == 400 and pool._max_connections == 1000
    asyncio.run(provider.aclose())
