"""Reading a tenant's usage counters (`GET /api/v1/usage`), which FINISH_TURN keeps per UTC day as turns
commit (lib_usage.lua): no scan, one hash per day read, so a read costs O(days in range + groups). Also the
one write outside a turn: a summary job's model call (`add_call_usage`).

Rows come a page at a time in the order of their key (a day, an agent id or a session id), so the pages of a
range neither repeat nor skip a key while turns go on committing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import redis

from parley.shared.store import keys, scripts
from parley.shared.usage import COUNTERS, DAY_MS, day_of, day_start_ms, days

GROUPINGS = ("agent", "session", "day")
MAX_DAYS = 366
"""Most days one read may cover."""
MAX_PAGE = 1000
"""Most rows one page holds."""
OTHER = "(other)"
"""The key the groups counted past PARLEY_USAGE_MAX_GROUPS_PER_DAY on a day are summed under (lib_usage.lua)."""
READ_BATCH = 31
"""Days read per round trip."""


@dataclass
class Counts:
    """One group's counters over the range; `cost` in micro-units."""

    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: int = 0

    def add(self, counter: str, value: str | int) -> None:
        setattr(self, counter, getattr(self, counter) + int(value))

    def add_hash(self, fields: dict[str, str]) -> None:
        for counter in COUNTERS:
            if counter in fields:
                self.add(counter, fields[counter])


@dataclass
class UsageRead:
    """One page of rows (key, counts) in key order, the key to start the next page after (None at the end),
    and the totals of the whole range."""

    rows: list[tuple[str, Counts]]
    next_cursor: str | None
    total: Counts = field(default_factory=Counts)


class UsageStore:
    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def read(self, tenant: str, *, group_by: str, since: date, until: date, limit: int,
             cursor: str | None = None) -> UsageRead:  # fmt: skip
        """The tenant's usage from `since` to `until` (UTC days, both included) by `group_by` ('agent', 'session'
        or 'day'): the rows after `cursor` (a key of the previous page), at most `limit`. The caller bounds the
        range (MAX_DAYS) and the page (MAX_PAGE)."""
        names = [day.isoformat() for day in days(since, until)]
        totals = self._hashes([keys.usage_day(tenant, name) for name in names])
        total = Counts()
        for fields in totals:
            total.add_hash(fields)
        if group_by == "day":
            groups: dict[str, Counts] = {}
            for name, fields in zip(names, totals, strict=True):
                if fields:
                    groups[name] = Counts()
                    groups[name].add_hash(fields)
        else:
            build: Callable[[str, str], str] = keys.usage_agents if group_by == "agent" else keys.usage_sessions
            groups = _merge(self._hashes([build(tenant, name) for name in names]))
        ordered = sorted(key for key in groups if cursor is None or key > cursor)
        page = ordered[:limit]
        more = len(ordered) > limit
        return UsageRead(rows=[(key, groups[key]) for key in page], next_cursor=page[-1] if more else None,
                         total=total)  # fmt: skip

    def _hashes(self, names: list[str]) -> list[dict[str, str]]:
        """HGETALL of each key, a batch of days per round trip."""
        out: list[dict[str, str]] = []
        for start in range(0, len(names), READ_BATCH):
            with self.r.pipeline(transaction=False) as pipe:
                for name in names[start:start + READ_BATCH]:
                    pipe.hgetall(name)
                out.extend(pipe.execute())
        return out


@dataclass(frozen=True)
class UsageDay:
    """Where a count made at one moment goes, for the scripts that write usage (lib_usage.lua): the tenant's
    counter hashes of that UTC day (totals, by agent, by session) and when they expire (ms)."""

    day: str
    agents: str
    sessions: str
    expire_at: int

    @classmethod
    def of(cls, tenant: str, at_ms: int, retention_days: int) -> UsageDay:
        """The day of `at_ms`, its counters kept `retention_days` (PARLEY_USAGE_RETENTION_DAYS) from its start."""
        day = day_of(at_ms)
        name = day.isoformat()
        return cls(keys.usage_day(tenant, name), keys.usage_agents(tenant, name), keys.usage_sessions(tenant, name),
                   day_start_ms(day) + retention_days * DAY_MS)  # fmt: skip

    def hashes(self) -> list[str]:
        return [self.day, self.agents, self.sessions]


async def add_call_usage(aio: Any, tenant: str, agent_id: str, session_id: str, counts: dict[str, int], *,
                         at_ms: int, max_groups: int, retention_days: int) -> None:  # fmt: skip
    """Add a model call made outside any turn (a summary job's; `counts` from shared/usage.py turn_counts with
    `turns=0`) to the tenant's usage of its UTC day, under `agent_id` and `session_id` (ADD_USAGE)."""
    where = UsageDay.of(tenant, at_ms, retention_days)
    add = aio.register_script(scripts.ADD_USAGE)
    await add(keys=where.hashes(), args=[agent_id, session_id, json.dumps(counts), max_groups, where.expire_at])


def _merge(hashes: list[dict[str, str]]) -> dict[str, Counts]:
    """The days' `<group>|<counter>` fields summed by group."""
    groups: dict[str, Counts] = {}
    for fields in hashes:
        for name, value in fields.items():
            group, _, counter = name.rpartition("|")
            if counter in COUNTERS:
                groups.setdefault(group, Counts()).add(counter, value)
    return groups
