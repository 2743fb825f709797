"""A small SSE reader for tests: parses `id:`/`data:` frames the way the seed's clients do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    id: str
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.data["type"])


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """Events of an open streaming response, in order; comment lines (pings) are skipped."""
    event_id = ""
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield Event(event_id, json.loads("\n".join(data)))
            event_id, data = "", []
        elif line.startswith(":"):
            continue
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])


def collect(client: httpx.Client, method: str, url: str, **kwargs: Any) -> list[Event]:
    """Every event of a stream until it closes."""
    with client.stream(method, url, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(iter_events(response))
