"""`GET /api/v1/usage`: the tenant's turns, tokens and cost by agent, session or day, read from the counters
that FINISH_TURN keeps as turns commit (shared/store/usage.py; what counts: shared/usage.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from parley.shared.errors import InvalidInput
from parley.shared.schema import UsageGrouping, UsagePage, UsageRow, UsageTotal
from parley.shared.store.usage import MAX_DAYS, MAX_PAGE, Counts, UsageStore
from parley.shared.usage import cost_units

from ..deps import Runtime, Tenant
from ..errors import documented

router = APIRouter(prefix="/api/v1", tags=["usage"], responses=documented(401, 422, 503))

DEFAULT_DAYS = 30
"""Days a request that names neither end covers: the last 30, today included."""
DAY_TEXT_MAX = 64


@router.get("/usage", response_model=UsagePage)
def read_usage(
    rt: Runtime,
    tenant: Tenant,
    group_by: Annotated[UsageGrouping, Query(description="Rows by `agent` (id), `session` (id) or `day` "
                                              "(YYYY-MM-DD, UTC).")] = "day",  # fmt: skip
    since: Annotated[str | None, Query(max_length=DAY_TEXT_MAX, description="First UTC day counted: YYYY-MM-DD, or "
                                       "an ISO 8601 time (its UTC day; UTC when it names no zone). Default: "
                                       "29 days before `until`.")] = None,  # fmt: skip
    until: Annotated[str | None, Query(max_length=DAY_TEXT_MAX, description="Last UTC day counted, included "
                                       "(same formats). Default: today.")] = None,  # fmt: skip
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Most rows in this page.")] = 100,
    cursor: Annotated[str | None, Query(max_length=256, description="`next_cursor` of the previous page.")] = None,
) -> Any:
    """The tenant's usage from `since` to `until` (at most 366 days), one row per group that has usage, in key
    order, a page at a time; `total` covers the whole range. Turns count when they commit (see docs)."""
    first, last = day_range(since, until)
    read = UsageStore(rt.clients.text).read(tenant, group_by=group_by, since=first, until=last, limit=limit,
                                            cursor=cursor)  # fmt: skip
    priced = bool(rt.settings.prices)
    names = rt.agent_names(tenant) if group_by == "agent" and read.rows else {}
    page = UsagePage(
        data=[UsageRow(key=key, name=names.get(key), **_counts(counts, priced)) for key, counts in read.rows],
        next_cursor=read.next_cursor, group_by=group_by, since=first.isoformat(), until=last.isoformat(),
        total=UsageTotal(**_counts(read.total, priced)), currency=rt.settings.currency.upper() if priced else None,
    )  # fmt: skip
    return JSONResponse(page.public())


def _counts(counts: Counts, priced: bool) -> dict[str, Any]:
    return {"turns": counts.turns, "prompt_tokens": counts.prompt_tokens,
            "completion_tokens": counts.completion_tokens, "cached_tokens": counts.cached_tokens,
            "cost": cost_units(counts.cost) if priced else None}  # fmt: skip


def day_range(since: str | None, until: str | None, today: date | None = None) -> tuple[date, date]:
    """The UTC days a request covers, both included; InvalidInput (422) for a day that is not one, an end
    before the start, or more than MAX_DAYS days."""
    last = utc_day(until, "until") if until is not None else (today or datetime.now(UTC).date())
    if since is not None:
        first = utc_day(since, "since")
    else:
        first = last - timedelta(days=min(DEFAULT_DAYS - 1, (last - date.min).days))
    if first > last:
        raise InvalidInput(f"since ({first}) is after until ({last})")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidInput(f"the range covers {(last - first).days + 1} days; at most {MAX_DAYS} may be read at once")
    return first, last


def utc_day(text: str, name: str) -> date:
    """A UTC day from YYYY-MM-DD or an ISO 8601 time (UTC when it names no zone)."""
    text = text.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date()
    except (ValueError, OverflowError):
        raise InvalidInput(f"{name} must be a day (YYYY-MM-DD) or an ISO 8601 time, not {text[:DAY_TEXT_MAX]!r}") \
            from None
