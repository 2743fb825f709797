"""When a schedule runs next: a cron expression in a time zone, or a fixed interval. No Redis, no network;
the only thing read is the tz database (zoneinfo).

The rule (docs/api.md, Schedules): the next run is the first cron time (read in the schedule's zone) or
interval step (counted from the schedule's creation) strictly after *now*, not after the time that was due.
So a firing missed while nothing could run fires once when something can, not once per missed period, and a
late firing does not shift the steps after it.

Cron expressions are read by `cronsim` (maintained, used by Healthchecks.io): the standard five fields
(minute, hour, day of month, month, day of week) with ranges, steps, lists and names (`JAN`, `MON`), plus
its extensions `L` (the month's last day, `5L` its last Friday), `LW` and `#` (`MON#2`); day of month and
day of week together match either, as in Vixie cron. It works on aware datetimes, so daylight saving time
is handled as cron does: a time that does not exist on the day the clocks go forward runs when they have
(02:30 runs at 03:00), and a time that happens twice on the day they go back runs once (the first).
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

CRON_FIELDS = 5
MAX_CRON_CHARS = 200
MAX_INTERVAL_S = 10 * 366 * 86_400
"""The longest interval a schedule may have (ten years), in seconds."""
TIMEZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$")
MAX_TIMEZONE_CHARS = 64


class InvalidRecurrence(ValueError):
    """A cron expression, interval or time zone that cannot make a schedule (the message says why)."""


@functools.cache
def _zone_names() -> frozenset[str]:
    """Every IANA zone name this process knows (the system's tz database and the `tzdata` package), read once."""
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name; InvalidRecurrence for any other text (paths and files are never read:
    only names of the tz database are looked up)."""
    if len(name) > MAX_TIMEZONE_CHARS or not TIMEZONE_NAME.fullmatch(name) or name not in _zone_names():
        raise InvalidRecurrence(f"{name[:80]!r} is not an IANA time zone name (such as 'UTC' or 'Europe/Paris')")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidRecurrence(f"the time zone {name[:80]!r} cannot be loaded") from None


def check_cron(expression: str, timezone: str = "UTC") -> str:
    """The expression, whitespace normalised, when it has five valid fields and a next run; else InvalidRecurrence."""
    if len(expression) > MAX_CRON_CHARS:
        raise InvalidRecurrence(f"a cron expression is at most {MAX_CRON_CHARS} characters")
    fields = expression.split()
    if len(fields) != CRON_FIELDS:
        raise InvalidRecurrence(f"a cron expression has {CRON_FIELDS} fields (minute hour day-of-month month "
                                f"day-of-week); this one has {len(fields)}")  # fmt: skip
    normalised = " ".join(fields)
    next_cron_ms(normalised, zone(timezone), 0)  # raises for what cannot run (`0 0 30 2 *`)
    return normalised


def check_interval(interval_s: int) -> int:
    if isinstance(interval_s, bool) or not isinstance(interval_s, int) or not 1 <= interval_s <= MAX_INTERVAL_S:
        raise InvalidRecurrence(f"interval_s is a whole number of seconds from 1 to {MAX_INTERVAL_S}")
    return interval_s


def next_cron_ms(expression: str, tz: ZoneInfo, now_ms: int) -> int:
    """The first time the expression matches in `tz` strictly after `now_ms` (ms since the epoch)."""
    after = datetime.fromtimestamp(now_ms / 1000, tz=tz)
    try:
        found = next(iter(CronSim(expression, after)))
    except CronSimError as error:
        raise InvalidRecurrence(f"not a valid cron expression: {error}") from None
    except StopIteration:
        raise InvalidRecurrence("this cron expression never matches again") from None
    return int(found.timestamp() * 1000)


def next_interval_ms(interval_s: int, anchor_ms: int, now_ms: int) -> int:
    """The first step `anchor_ms + k * interval` (k >= 1) strictly after `now_ms`."""
    step = interval_s * 1000
    if now_ms < anchor_ms:
        return anchor_ms + step
    return anchor_ms + ((now_ms - anchor_ms) // step + 1) * step


def next_run_ms(*, cron: str | None, interval_s: int | None, timezone: str, anchor_ms: int, now_ms: int) -> int:
    """The schedule's next run strictly after `now_ms`: by its cron expression in its zone, else by its interval
    counted from `anchor_ms` (its creation)."""
    if cron:
        return next_cron_ms(cron, zone(timezone), now_ms)
    if interval_s is None:
        raise InvalidRecurrence("a schedule has a cron expression or an interval")
    return next_interval_ms(interval_s, anchor_ms, now_ms)
