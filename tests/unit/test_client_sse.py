"""The SDK's SSE decoder against the WHATWG rules, fed whole and byte by byte."""

from __future__ import annotations

import pytest

from parley.client import Event, SSEDecoder, StreamError
from parley.client.sse import ServerSentEvent


def decode(raw: bytes, *, split: bool = False) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    chunks = [raw[i : i + 1] for i in range(len(raw))] if split else [raw]
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events, decoder


@pytest.fixture(params=[False, True], ids=["whole", "byte-by-byte"])
def split(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_id_and_data_lines_make_an_event(split: bool) -> None:
    events, decoder = decode(b'id: 1-0\ndata: {"type": "session"}\n\nid: 1-1\ndata: {"type": "done"}\n\n', split=split)
    assert events == [ServerSentEvent(data='{"type": "session"}', id="1-0"),
                      ServerSentEvent(data='{"type": "done"}', id="1-1")]  # fmt: skip
    assert decoder.last_event_id == "1-1"


def test_data_lines_are_joined_with_newlines_and_one_leading_space_is_removed(split: bool) -> None:
    events, _ = decode(b"data:a\ndata:  b\ndata\ndata: c\n\n", split=split)
    assert [e.data for e in events] == ["a\n b\n\nc"]


def test_comments_pings_unknown_fields_and_data_less_events_are_ignored(split: bool) -> None:
    raw = b": ping\n\n:another comment\nfoo: bar\ndata: x\n\n\n\nevent: custom\n\n: ping\n\n"
    events, _ = decode(raw, split=split)
    assert events == [ServerSentEvent(data="x")]


def test_cr_lf_and_crlf_line_endings_even_when_split_across_chunks(split: bool) -> None:
    events, _ = decode(b"id: 1\rdata: a\r\rid: 2\r\ndata: b\r\n\r\nid: 3\ndata: c\n\n", split=split)
    assert [(e.id, e.data) for e in events] == [("1", "a"), ("2", "b"), ("3", "c")]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # the LF completing CRLF is not a blank line
    assert decoder.feed(b"\r\n") == [ServerSentEvent(data="a")]


def test_an_event_not_ended_by_a_blank_line_is_never_dispatched(split: bool) -> None:
    events, decoder = decode(b"id: 1\ndata: complete\n\nid: 2\ndata: cut off", split=split)
    assert [e.data for e in events] == ["complete"]
    assert decoder.last_event_id == "1"


def test_id_persists_to_later_events_and_a_data_less_event_still_sets_it(split: bool) -> None:
    events, decoder = decode(b"id: 7\ndata: a\n\ndata: b\n\nid: 9\n\n", split=split)
    assert [(e.id, e.data) for e in events] == [("7", "a"), ("7", "b")]
    assert decoder.last_event_id == "9"


def test_id_with_nul_is_ignored_and_empty_id_resets(split: bool) -> None:
    events, _ = decode(b"id: 5\ndata: a\n\nid: x\x00y\ndata: b\n\nid\ndata: c\n\n", split=split)
    assert [e.id for e in events] == ["5", "5", ""]


def test_event_type_retry_and_no_space_after_colon(split: bool) -> None:
    events, decoder = decode(b"event:update\nretry: 2500\nretry: soon\ndata:x\n\ndata: y\n\n", split=split)
    assert [(e.event, e.data) for e in events] == [("update", "x"), ("message", "y")]
    assert decoder.retry == 2500


def test_bom_is_dropped_and_utf8_split_inside_a_character_survives(split: bool) -> None:
    raw = "\ufeffdata: caf\u00e9 \u2603\n\n".encode()
    events, _ = decode(raw, split=split)
    assert [e.data for e in events] == ["caf\u00e9 \u2603"]


def test_a_field_name_alone_with_colon_inside_value() -> None:
    events, _ = decode(b'data: {"a": "b: c"}\n\n')
    assert events[0].data == '{"a": "b: c"}'


def test_event_from_sse_parses_the_json_object() -> None:
    event = Event.from_sse(ServerSentEvent(id="1-2", data='{"type": "delta", "content": "hi"}'))
    assert (event.id, event.type, event.content, event.message) == ("1-2", "delta", "hi", None)
    status = Event.from_sse(ServerSentEvent(id="1-3", data='{"type": "status", "message": "queued"}'))
    assert status.message == "queued" and status.content is None
    session = Event.from_sse(ServerSentEvent(id="1-0", data='{"type":"session","job_id":"job_1","session_id":"s"}'))
    assert session.job_id == "job_1" and session.session_id == "s"
    error = Event.from_sse(ServerSentEvent(id="1-4", data='{"type":"error","message":"canceled","code":"canceled"}'))
    assert error.message == "canceled" and error.code == "canceled"


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '{"no": "type"}', '{"type": 3}'])
def test_event_from_sse_refuses_what_is_not_an_event(data: str) -> None:
    with pytest.raises(StreamError):
        Event.from_sse(ServerSentEvent(id="1-0", data=data))
