"""When a schedule runs next (shared/recurrence.py): cron fields, time zones across DST, intervals, and a
firing missed for many periods running once."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from parley.shared.recurrence import (
    InvalidRecurrence,
    check_cron,
    check_interval,
    next_cron_ms,
    next_interval_ms,
    next_run_ms,
    zone,
)


def ms(text: str, tz: str = "UTC") -> int:
    """'2026-03-27 17:50' in `tz` as ms since the epoch."""
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def shown(value: int, tz: str = "UTC") -> str:
    return datetime.fromtimestamp(value / 1000, tz=ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("*/15 * * * *", "2026-01-01 00:00", "2026-01-01 00:15"),  # strictly after a matching time
    ("*/15 * * * *", "2026-01-01 00:14", "2026-01-01 00:15"),
    ("*/15 9-17 * * MON-FRI", "2026-03-27 17:50", "2026-03-30 09:00"),  # a Friday evening -> Monday 09:00
    ("0 8,12,18 * * *", "2026-05-01 12:00", "2026-05-01 18:00"),  # lists
    ("30 6 1 JAN,JUL *", "2026-02-01 00:00", "2026-07-01 06:30"),  # month names
    ("0 0 29 2 *", "2026-03-01 00:00", "2028-02-29 00:00"),  # the next leap day
    ("0 12 * * 0", "2026-01-01 00:00", "2026-01-04 12:00"),  # 0 is Sunday
    ("0 12 * * 7", "2026-01-01 00:00", "2026-01-04 12:00"),  # and so is 7
    ("5-10/5 * * * *", "2026-01-01 00:06", "2026-01-01 00:10"),  # a stepped range
])  # fmt: skip
def test_cron_fields(expression: str, after: str, expected: str) -> None:
    assert shown(next_cron_ms(check_cron(expression), zone("UTC"), ms(after))) == f"{expected} UTC"


def test_a_time_between_two_matches_to_the_millisecond() -> None:
    just_before = ms("2026-01-01 00:15") - 1
    assert next_cron_ms("*/15 * * * *", zone("UTC"), just_before) == ms("2026-01-01 00:15")


@pytest.mark.parametrize("expression", ["* * * *", "* * * * * *", "@daily", "61 * * * *", "* 24 * * *",
                                        "* * 32 * *", "* * * 13 *", "* * * * 8", "a b c d e", "0 0 30 2 *", "",
                                        "*/0 * * * *", "1-2-3 * * * *"])  # fmt: skip
def test_invalid_cron_expressions_are_refused(expression: str) -> None:
    with pytest.raises(InvalidRecurrence):
        check_cron(expression)


def test_a_cron_expression_is_bounded_and_normalised() -> None:
    assert check_cron("  0   9 * *   MON ") == "0 9 * * MON"
    with pytest.raises(InvalidRecurrence):
        check_cron("0 " + "1," * 200 + "1 * * *")


def test_cron_is_read_in_the_schedules_zone() -> None:
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer
    new_york = zone("America/New_York")
    assert shown(next_cron_ms("0 9 * * *", new_york, ms("2026-01-10 00:00", "UTC"))) == "2026-01-10 14:00 UTC"
    assert shown(next_cron_ms("0 9 * * *", new_york, ms("2026-07-10 00:00", "UTC"))) == "2026-07-10 13:00 UTC"


def test_spring_forward_a_time_that_does_not_exist_runs_when_the_clocks_have_gone_forward() -> None:
    berlin = zone("Europe/Berlin")  # 2026-03-29: 02:00 CET becomes 03:00 CEST
    on_the_day = next_cron_ms("30 2 * * *", berlin, ms("2026-03-29 00:00", "Europe/Berlin"))
    assert shown(on_the_day, "Europe/Berlin") == "2026-03-29 03:00 CEST"
    assert shown(on_the_day) == "2026-03-29 01:00 UTC"
    after = next_cron_ms("30 2 * * *", berlin, on_the_day)
    assert shown(after, "Europe/Berlin") == "2026-03-30 02:30 CEST"


def test_fall_back_a_time_that_happens_twice_runs_once() -> None:
    berlin = zone("Europe/Berlin")  # 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice
    first = next_cron_ms("30 2 * * *", berlin, ms("2026-10-25 00:00", "Europe/Berlin"))
    assert shown(first) == "2026-10-25 00:30 UTC"  # 02:30 CEST, the first of the two
    second = next_cron_ms("30 2 * * *", berlin, first)
    assert shown(second, "Europe/Berlin") == "2026-10-26 02:30 CET"  # not 02:30 CET on the 25th again


def test_hourly_cron_across_fall_back_keeps_real_hours() -> None:
    berlin = zone("Europe/Berlin")
    runs, now = [], ms("2026-10-25 00:30", "Europe/Berlin")
    for _ in range(4):
        now = next_cron_ms("0 * * * *", berlin, now)
        runs.append(shown(now))
    assert runs == ["2026-10-24 23:00 UTC", "2026-10-25 00:00 UTC", "2026-10-25 01:00 UTC", "2026-10-25 02:00 UTC"]
    assert len(set(runs)) == len(runs)


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"])
def test_iana_zones_are_known(name: str) -> None:
    assert zone(name).key == name


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../../etc/passwd", "/etc/localtime", "Europe/",
                                  "europe/paris ", "UTC\x00", "x" * 65, "Europe/../UTC"])  # fmt: skip
def test_other_zone_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRecurrence):
        zone(name)


def test_interval_steps_count_from_the_anchor_strictly_after_now() -> None:
    anchor = 1_000_000
    assert next_interval_ms(10, anchor, anchor) == anchor + 10_000
    assert next_interval_ms(10, anchor, anchor + 9_999) == anchor + 10_000
    assert next_interval_ms(10, anchor, anchor + 10_000) == anchor + 20_000
    assert next_interval_ms(10, anchor, anchor + 10_300) == anchor + 20_000  # a late firing does not drift
    assert next_interval_ms(10, anchor, anchor - 5_000) == anchor + 10_000


def test_missed_periods_give_one_next_run_not_one_per_period() -> None:
    anchor = ms("2026-01-01 00:00")
    back = ms("2026-01-01 10:00") + 5_000  # down for ten hours: 600 minutes missed
    following = next_interval_ms(60, anchor, back)
    assert back < following <= back + 60_000
    assert following == ms("2026-01-01 10:01")
    cron_following = next_run_ms(cron="*/5 * * * *", interval_s=None, timezone="UTC", anchor_ms=anchor, now_ms=back)
    assert cron_following == ms("2026-01-01 10:05")


def test_next_run_needs_one_recurrence() -> None:
    assert next_run_ms(cron=None, interval_s=1, timezone="UTC", anchor_ms=0, now_ms=500) == 1_000
    with pytest.raises(InvalidRecurrence):
        next_run_ms(cron=None, interval_s=None, timezone="UTC", anchor_ms=0, now_ms=0)


@pytest.mark.parametrize("value", [0, -1, 10 * 366 * 86_400 + 1, True, 1.5])
def test_intervals_out_of_bounds_are_refused(value: object) -> None:
    with pytest.raises(InvalidRecurrence):
        check_interval(value)  # type: ignore[arg-type]


def test_a_zone_aware_time_is_what_the_expression_matches() -> None:
    tokyo = zone("Asia/Tokyo")
    found = next_cron_ms("0 0 * * *", tokyo, int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000))
    assert shown(found, "Asia/Tokyo") == "2026-06-02 00:00 JST"
