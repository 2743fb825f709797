"""A turn's events: how they are written, ordered and read back.

Each event is one JSON object with a `type` (the contract's table). It lives in the job's Redis
stream; the stream entry id (`<ms>-<seq>`) is its SSE id, so ids increase within a job and a
client's `Last-Event-ID` says exactly where to resume. Live copies go out on the job's pub/sub
channel as `"<id> <json>"`.
"""

from __future__ import annotations

import json
import re
from typing import Any

TERMINAL_TYPE = "done"
EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
MAX_PART = 2**64 - 1
"""Each part of a Redis stream id is an unsigned 64-bit number."""


def encode(event_type: str, **fields: Any) -> str:
    return json.dumps({"type": event_type, **fields}, separators=(",", ":"), ensure_ascii=False)


def id_key(event_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id, so ids compare as Redis orders them."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def valid_id(event_id: str) -> bool:
    """True for `<ms>-<seq>` in ASCII digits (str.isdigit would also take '²' from a header), each part an
    unsigned 64-bit number, below the largest id (Redis refuses to read after that one: the stream could only
    say "store unavailable", and its client would reconnect for ever)."""
    if EVENT_ID.fullmatch(event_id) is None:
        return False
    ms, seq = id_key(event_id)
    return ms <= MAX_PART and seq <= MAX_PART and (ms, seq) != (MAX_PART, MAX_PART)


def parse_live(message: str) -> tuple[str, str]:
    """Split a pub/sub message into (event id, event JSON)."""
    event_id, _, payload = message.partition(" ")
    return event_id, payload


def from_entries(entries: list[tuple[str, dict[str, str]]]) -> list[tuple[str, str]]:
    """(id, JSON) pairs from XRANGE output."""
    return [(entry_id, fields["e"]) for entry_id, fields in entries]


def is_terminal(payload: str) -> bool:
    return json.loads(payload).get("type") == TERMINAL_TYPE
