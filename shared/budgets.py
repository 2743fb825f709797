"""Tenants' daily token budgets (PARLEY_TENANT_BUDGETS): the UTC day, its spent counter, what a model call spent.

A tenant's spending is one Redis counter per UTC day (`keys.budget_spent(tenant, day)`): the worker adds each
model call's tokens as soon as the call ends (`add_spent`: one INCRBY + EXPIRE round trip), ACCEPT_TURN refuses a
turn while the counter is at or over the budget (every web, atomically with the rest of the accept), and a running
turn checks it before each model call (worker/turn/budget.py). The day is part of the key, so a new day starts
from nothing without a reset; each key expires an hour after its day ends.

The count is what the provider reported (`prompt_tokens + completion_tokens`), or, for a provider that reports
none, the estimate of shared/tokens.py for what was sent and received. A call whose worker dies before it adds
the count is not counted (at most one call's tokens per crash, never counted twice).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from parley.shared.store import keys

DAY_MS = 86_400_000
KEEP_AFTER_DAY_S = 3600
"""A day's counter lives this long past the day's end (a turn accepted at 23:59:59 still finds it)."""


def utc_day(at_ms: int) -> str:
    """The UTC day of a time in ms, as its counter's key names it (`YYYY-MM-DD`)."""
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d")


def seconds_to_next_day(at_ms: int) -> int:
    """Whole seconds from `at_ms` to the next UTC midnight (at least 1): a refused tenant's Retry-After."""
    return max(1, -(-(DAY_MS - at_ms % DAY_MS) // 1000))


def spent_key(tenant: str, at_ms: int) -> str:
    """The counter of the tenant's UTC day at `at_ms`."""
    return keys.budget_spent(tenant, utc_day(at_ms))


def usage_tokens(usage: dict[str, Any]) -> int:
    """Prompt + completion tokens of a usage dict as a provider reports it (0 when it holds neither)."""
    return sum(int(usage[name]) for name in ("prompt_tokens", "completion_tokens")
               if isinstance(usage.get(name), int | float))  # fmt: skip


async def add_spent(aio: Any, tenant: str, tokens: int, at_ms: int) -> int:
    """Add a model call's tokens to the tenant's counter for its day (INCRBY + EXPIRE in one round trip);
    the day's total so far."""
    key = spent_key(tenant, at_ms)
    async with aio.pipeline(transaction=False) as pipe:
        pipe.incrby(key, tokens)
        pipe.expire(key, seconds_to_next_day(at_ms) + KEEP_AFTER_DAY_S)
        total, _ = await pipe.execute()
    return int(total)


async def spent(aio: Any, tenant: str, at_ms: int) -> int:
    """The tenant's tokens so far on the UTC day of `at_ms`."""
    return int(await aio.get(spent_key(tenant, at_ms)) or 0)


def next_day(at_ms: int) -> str:
    """ISO time of the next UTC midnight after `at_ms` (for messages)."""
    start = datetime.fromtimestamp(at_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def script_arg(budget: int | None) -> str:
    """A budget as the accept scripts take it (lib_budget.lua): the tenant's tokens per day, '' for none."""
    return "" if budget is None else str(budget)
