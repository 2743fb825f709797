"""`current_time` answers in any IANA zone (tzdata ships with Parley) and explains how to name one."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from parley.tools import ToolError
from parley.tools.clock import current_time


def test_utc_by_default() -> None:
    now = current_time()
    assert now["timezone"] == "UTC" and now["utc_offset"] == "+00:00"
    moment = datetime.fromisoformat(now["datetime"])
    assert abs(moment - datetime.now(moment.tzinfo)) < timedelta(minutes=1)
    assert now["weekday"] == moment.strftime("%A")


@pytest.mark.parametrize(("zone", "offsets"), [("Asia/Kolkata", {"+05:30"}), ("Europe/Paris", {"+01:00", "+02:00"}),
                                               ("America/St_Johns", {"-03:30", "-02:30"})])  # fmt: skip
def test_named_zones(zone: str, offsets: set[str]) -> None:
    now = current_time(zone)
    assert now["timezone"] == zone and now["utc_offset"] in offsets
    assert now["datetime"].endswith(now["utc_offset"])


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe", "", "../../etc/passwd", "europe/paris"])
def test_unknown_zones_are_tool_errors_that_say_how_to_name_one(zone: str) -> None:
    with pytest.raises(ToolError, match=r"unknown time zone .*IANA zone as Area/City, e.g. 'Europe/Paris'"):
        current_time(zone)
