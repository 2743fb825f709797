"""`current_time`: the date and time now in an IANA time zone.

Zone data comes from the system (/usr/share/zoneinfo) or, where there is none, from the `tzdata`
package Parley depends on, so slim containers know every zone too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from parley.tools.context import ToolError
from parley.tools.registry import tool


@tool(timeout_s=5)
def current_time(timezone: str = "UTC") -> dict[str, Any]:
    """The current date, time, weekday and UTC offset in a time zone.

    Args:
        timezone: an IANA time zone name such as "Europe/Paris", "America/New_York" or "UTC".
    """
    try:
        zone = ZoneInfo(timezone.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:  # OSError: a directory such as "Europe"
        raise ToolError(
            f"unknown time zone {timezone!r}: name an IANA zone as Area/City, e.g. 'Europe/Paris', "
            "'America/New_York', 'Asia/Tokyo', or 'UTC'"
        ) from error
    now = datetime.now(zone)
    offset = now.strftime("%z")
    return {
        "timezone": zone.key,
        "datetime": now.isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "utc_offset": f"{offset[:3]}:{offset[3:]}",
        "abbreviation": now.tzname(),
    }
