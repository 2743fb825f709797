"""A Server-Sent Events decoder following the WHATWG rules ("Interpreting an event stream").

Feed it bytes as they arrive, in chunks of any size; it returns the events each chunk completes:

    decoder = SSEDecoder()
    for chunk in response.iter_bytes():
        for event in decoder.feed(chunk):
            ...
    decoder.last_event_id   # what to send as Last-Event-ID when reconnecting

The rules it follows: the stream is UTF-8 (a leading BOM is dropped); lines end with CRLF, LF or
CR (a CRLF split across two chunks is one line end); a line starting with `:` is a comment; a
field's value loses one leading space; `data` lines are joined with `\\n`; `id` sets the last event
id unless it contains NUL, and it persists to later events that carry no `id`; `retry` takes only
ASCII digits; unknown fields are ignored; a blank line dispatches the event, unless it has no data
(then only the last event id is updated); an event not ended by a blank line when the stream ends
is never dispatched.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: `event` is "message" unless the stream named another type."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        """The id of the last event dispatched (or set by an `id` field of a data-less event)."""
        self.retry: int | None = None
        """The last `retry` field: the server's reconnection time in milliseconds."""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._pending_cr = False
        self._data: list[str] = []
        self._event_type = ""
        self._id_buffer = last_event_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by this chunk, in order."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._pending_cr and text:
            if text.startswith("\n"):
                text = text[1:]  # the LF of a CRLF whose CR ended the previous chunk
            self._pending_cr = False
        events: list[ServerSentEvent] = []
        self._buffer += text
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, ending = self._buffer[:cut], self._buffer[cut]
            rest = self._buffer[cut + 1 :]
            if ending == "\r":
                if rest.startswith("\n"):
                    rest = rest[1:]
                elif not rest:
                    self._pending_cr = True
            self._buffer = rest
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        data, event_type = self._data, self._event_type
        self._data, self._event_type = [], ""
        if not data:
            return None
        return ServerSentEvent(data="\n".join(data), event=event_type or "message", id=self.last_event_id,
                               retry=self.retry)  # fmt: skip


def _line_end(text: str) -> int | None:
    """Index of the first CR or LF in `text`, or None."""
    cr, lf = text.find("\r"), text.find("\n")
    if cr < 0:
        return lf if lf >= 0 else None
    return cr if lf < 0 else min(cr, lf)
