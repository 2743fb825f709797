"""The SDK's `usage()` (Parley and AsyncParley) against the real stack: the tenant's tokens and cost as the
scripted model reported them, by day, agent and session, pages followed with `next_cursor`, refusals as the
SDK's ValidationError."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import pytest

from parley.client import AsyncParley, Parley, UsagePage, ValidationError

PRICED = {"PARLEY_MODEL_PRICES": "test-model=1/4", "PARLEY_CURRENCY": "usd"}


def test_usage_through_the_sync_and_async_clients(stack: Any) -> None:
    stack.start_web(env=PRICED)
    stack.start_workers(env=PRICED)
    today = datetime.now(UTC).date()
    with Parley(stack.web_url, stack.api_key) as client:
        client.agents.create("Chef", model="test-model")
        for session_id, prompt in (("a", 100), ("b", 200), ("c", 300)):
            stack.model_server.control("script", [{"reply": "ok", "usage": {"prompt_tokens": prompt,
                                                                             "completion_tokens": 10}}])
            client.chat("hi", session_id=session_id)

        by_day = client.usage()
        assert isinstance(by_day, UsagePage) and by_day.currency == "USD"
        assert [(row.key, row.turns, row.prompt_tokens, row.completion_tokens) for row in by_day.data] == [
            (today.isoformat(), 3, 600, 30)]  # fmt: skip
        assert by_day.total.cost == pytest.approx((600 * 1 + 30 * 4) / 1_000_000)
        agent = client.usage(group_by="agent", since=today, until=today).data
        assert [(row.name, row.turns) for row in agent] == [("Chef", 3)]
        first = client.usage(group_by="session", limit=2, since=datetime.now(UTC))
        assert [row.key for row in first.data] == ["a", "b"] and first.next_cursor == "b"
        rest = client.usage(group_by="session", limit=2, cursor=first.next_cursor)
        assert [(row.key, row.prompt_tokens) for row in rest.data] == [("c", 300)] and rest.next_cursor is None
        with pytest.raises(ValidationError):
            client.usage(since=date(2020, 1, 1), until=date(2022, 1, 1))
        with pytest.raises(ValidationError):
            client.usage(group_by="tenant")  # type: ignore[arg-type]

    async def run_async() -> None:
        async with AsyncParley(stack.web_url, stack.api_key) as client:
            page = await client.usage(group_by="session", since=today.isoformat())
            assert [row.key for row in page.data] == ["a", "b", "c"] and page.total.turns == 3
            with pytest.raises(ValidationError):
                await client.usage(since="tomorrow")

    asyncio.run(run_async())
