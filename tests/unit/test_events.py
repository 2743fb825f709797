"""Event ids are Redis stream ids (`<ms>-<seq>`): SSE resumption compares them, so they must
order as Redis orders them (numerically, never as text); and a Last-Event-ID the API accepts
must be one it can use."""

from __future__ import annotations

import json

import pytest

from parley.shared import events
from parley.shared.events import EventType


def test_id_key_orders_sequence_numerically() -> None:
    assert events.id_key("1-10") > events.id_key("1-9")
    assert "1-10" < "1-9"  # what a text comparison would get wrong


def test_id_key_orders_milliseconds_before_sequence() -> None:
    assert events.id_key("2-0") > events.id_key("1-99")
    assert events.id_key("10-0") > events.id_key("9-5")


def test_id_key_values() -> None:
    assert events.id_key("1717171717171-3") == (1717171717171, 3)
    assert events.id_key("5") == (5, 0)  # a bare ms, as XRANGE also allows
    assert events.id_key("7-0") == events.id_key("7")


def test_sorting_by_id_key_matches_stream_order() -> None:
    ids = ["1-9", "2-0", "1-10", "1-0", "10-1", "10-0", "9-100"]
    assert sorted(ids, key=events.id_key) == ["1-0", "1-9", "1-10", "2-0", "9-100", "10-0", "10-1"]


@pytest.mark.parametrize("event_id", ["0-0", "1-0", "1717171717171-12"])
def test_valid_ids(event_id: str) -> None:
    assert events.valid_id(event_id)


@pytest.mark.parametrize("event_id", ["", "1", "1-", "-1", "a-1", "1-a", "1-2-3", " 1-2", "1-2 ", "-", "1.5-0", "+1-0"])
def test_invalid_ids(event_id: str) -> None:
    assert not events.valid_id(event_id)


@pytest.mark.parametrize("event_id", ["\u00b2-0", "1-\u00b3", "\u00b9-\u00b9"])
def test_valid_id_refuses_what_id_key_cannot_read(event_id: str) -> None:
    """Last-Event-ID arrives as a Latin-1 header, so `²` (0xB2), `³`, `¹` can reach valid_id.
    str.isdigit() counts them as digits, but int() (id_key) and Redis (XRANGE) refuse them:
    valid_id must refuse them too, or the stream fails after its 200 was sent."""
    assert not events.valid_id(event_id)


def test_parse_live_splits_at_the_first_space() -> None:
    payload = events.encode(EventType.DELTA, content="two words and more")
    assert events.parse_live(f"1-2 {payload}") == ("1-2", payload)
    assert json.loads(events.parse_live(f"1-2 {payload}")[1])["content"] == "two words and more"


def test_parse_live_without_payload() -> None:
    assert events.parse_live("1-2") == ("1-2", "")


def test_encode_is_compact_json_with_type_first() -> None:
    text = events.encode(EventType.STATUS, message="queued")
    assert text == '{"type":"status","message":"queued"}'
    assert events.encode(EventType.DELTA, content="héllo") == '{"type":"delta","content":"héllo"}'


def test_from_entries_and_is_terminal() -> None:
    done, delta = events.encode(EventType.DONE), events.encode(EventType.DELTA, content="x")
    assert events.from_entries([("1-0", {"e": delta}), ("1-1", {"e": done})]) == [("1-0", delta), ("1-1", done)]
    assert events.is_terminal(done)
    assert not events.is_terminal(delta)
