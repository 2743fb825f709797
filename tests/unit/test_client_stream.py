"""Resumable event streams: a fake service drops the connection after N events; the SDK resumes
with Last-Event-ID and the caller sees every event exactly once, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest

from parley.client import AsyncParley, ConnectionError, Event, NotFoundError, Parley

JOB = "job_1"
EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("100-0", {"type": "session", "session_id": "s", "agent_id": "a", "agent_name": "A", "job_id": JOB}),
    ("100-1", {"type": "status", "message": "queued"}),
    ("101-0", {"type": "status", "message": "started"}),
    *[(f"102-{i}", {"type": "delta", "content": f"w{i} "}) for i in range(5)],
    ("103-0", {"type": "response", "content": "w0 w1 w2 w3 w4 ", "intent": None, "session_id": "s"}),
    ("103-1", {"type": "done"}),
]
IDS = [event_id for event_id, _ in EVENTS]


def frame(event_id: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\ndata: {json.dumps(data)}\n\n".encode()


class FakeService:
    """Answers the stream routes from EVENTS. `plan[n]` says how connection n ends: an int k sends
    k events (then half of the next frame) and drops the connection; None sends the rest. With
    `ends_cleanly` a cut connection closes normally instead of failing. With `honours_last_event_id`
    False the resume route replays from the start, as a sloppy proxy might."""

    def __init__(self, plan: Sequence[int | None], *, ends_cleanly: bool = False, honours_last_event_id: bool = True,
                 events_status: int = 200, asynchronous: bool = False) -> None:  # fmt: skip
        self.plan = list(plan)
        self.asynchronous = asynchronous
        self.ends_cleanly = ends_cleanly
        self.honours_last_event_id = honours_last_event_id
        self.events_status = events_status
        self.requests: list[httpx.Request] = []
        self.closed = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST" and request.url.path == "/api/v1/chat/stream":
            start = 0
        elif request.method == "GET" and request.url.path == f"/api/v1/jobs/{JOB}/events":
            if self.events_status != 200:
                return httpx.Response(self.events_status, json={"error": {"code": "not_found", "message": "gone"}})
            last = request.headers.get("Last-Event-ID")
            start = IDS.index(last) + 1 if last and self.honours_last_event_id else 0
        else:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": request.url.path}})
        cut = self.plan.pop(0) if self.plan else None
        body = b": ping\n\n" + b"".join(frame(*event) for event in EVENTS[start : None if cut is None else start + cut])
        if cut is not None and start + cut < len(EVENTS):
            body += frame(*EVENTS[start + cut])[:12]  # half a frame: must never come out as an event
        failing = cut is not None and not self.ends_cleanly
        chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
        headers = {"content-type": "text/event-stream"}
        if self.asynchronous:
            return httpx.Response(200, headers=headers, stream=self._async_body(chunks, failing, request))
        return httpx.Response(200, headers=headers, stream=self._body(chunks, failing, request))

    def _body(self, chunks: list[bytes], failing: bool, request: httpx.Request) -> Body:
        return Body(self, chunks, failing, request)

    def _async_body(self, chunks: list[bytes], failing: bool, request: httpx.Request) -> AsyncBody:
        return AsyncBody(self, chunks, failing, request)

    def last_event_ids(self) -> list[str | None]:
        return [r.headers.get("Last-Event-ID") for r in self.requests]


class Body(httpx.SyncByteStream):
    """A response body that fails after its chunks when `failing`, and counts its closing."""

    def __init__(self, service: FakeService, chunks: list[bytes], failing: bool, request: httpx.Request) -> None:
        self.service, self.chunks, self.failing, self.request = service, chunks, failing, request

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.failing:
            raise httpx.ReadError("connection reset by peer", request=self.request)

    def close(self) -> None:
        self.service.closed += 1


class AsyncBody(httpx.AsyncByteStream):
    def __init__(self, service: FakeService, chunks: list[bytes], failing: bool, request: httpx.Request) -> None:
        self.service, self.chunks, self.failing, self.request = service, chunks, failing, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.failing:
            raise httpx.ReadError("connection reset by peer", request=self.request)

    async def aclose(self) -> None:
        self.service.closed += 1


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("parley.client._sync.time.sleep", slept.append)
    return slept


def client_for(service: FakeService, **options: Any) -> Parley:
    http = httpx.Client(transport=httpx.MockTransport(service.handler))
    return Parley("http://parley.test", "key", http_client=http, **options)


def pairs(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    return [(event.id, event.data) for event in events]


def test_dropped_stream_resumes_with_last_event_id_and_nothing_repeats_or_goes_missing(sleeps: list[float]) -> None:
    service = FakeService([4, 3, None])
    with client_for(service) as client:
        stream = client.stream("hello", agent="A", session_id="s")
        events = list(stream)
    assert pairs(events) == EVENTS
    assert [(r.method, r.url.path) for r in service.requests] == [
        ("POST", "/api/v1/chat/stream"), ("GET", f"/api/v1/jobs/{JOB}/events"), ("GET", f"/api/v1/jobs/{JOB}/events"),
    ]  # fmt: skip
    assert service.last_event_ids() == [None, IDS[3], IDS[6]]
    post = service.requests[0]
    assert json.loads(post.content) == {"message": "hello", "agent": "A", "session_id": "s"}
    assert post.headers["Idempotency-Key"] and post.headers["Authorization"] == "Bearer key"
    assert stream.job_id == JOB and stream.last_event_id == IDS[-1] and stream.connections == 3
    assert service.closed == 3
    assert sleeps[0] == 0.0  # the first reconnection is immediate


def test_a_stream_that_ends_without_done_is_resumed_too(sleeps: list[float]) -> None:
    service = FakeService([5, None], ends_cleanly=True)
    with client_for(service) as client:
        assert pairs(list(client.stream("hello"))) == EVENTS
    assert service.last_event_ids() == [None, IDS[4]]


def test_events_a_server_replays_are_dropped(sleeps: list[float]) -> None:
    service = FakeService([6, 2, None], honours_last_event_id=False)
    with client_for(service) as client:
        assert pairs(list(client.stream("hello"))) == EVENTS
    assert service.last_event_ids() == [None, IDS[5], IDS[5]]


def test_a_drop_before_the_session_event_sends_the_post_again_with_the_same_key(sleeps: list[float]) -> None:
    service = FakeService([0, 2, None])
    with client_for(service) as client:
        assert pairs(list(client.stream("hello", idempotency_key="k-1"))) == EVENTS
    assert [r.method for r in service.requests] == ["POST", "POST", "GET"]
    assert [r.headers.get("Idempotency-Key") for r in service.requests[:2]] == ["k-1", "k-1"]
    assert service.last_event_ids() == [None, None, IDS[1]]


def test_reconnects_without_progress_are_bounded_and_progress_resets_the_count(sleeps: list[float]) -> None:
    progressing = FakeService([1] * 9 + [None])
    with client_for(progressing, max_reconnects=1) as client:
        assert pairs(list(client.stream("hello"))) == EVENTS

    stuck = FakeService([3] + [0] * 10)
    seen: list[Event] = []
    with client_for(stuck, max_reconnects=2) as client, pytest.raises(ConnectionError) as raised:
        for event in client.stream("hello"):
            seen.append(event)
    assert pairs(seen) == EVENTS[:3]
    assert len(stuck.requests) == 3 and "2 reconnections" in str(raised.value)
    assert sleeps[-2] == 0.0 and sleeps[-1] > 0  # first immediate, then backing off


def test_an_expired_job_on_resume_raises_not_found(sleeps: list[float]) -> None:
    service = FakeService([3], events_status=404)
    seen: list[Event] = []
    with client_for(service) as client, pytest.raises(NotFoundError):
        for event in client.stream("hello"):
            seen.append(event)
    assert len(seen) == 3


def test_job_events_start_after_last_event_id_and_resume(sleeps: list[float]) -> None:
    service = FakeService([2, None])
    with client_for(service) as client:
        stream = client.jobs.events(JOB, last_event_id=IDS[4])
        assert pairs(list(stream)) == EVENTS[5:]
    assert [r.method for r in service.requests] == ["GET", "GET"]
    assert service.last_event_ids() == [IDS[4], IDS[6]]


def test_stopping_early_closes_the_response(sleeps: list[float]) -> None:
    service = FakeService([None])
    with client_for(service) as client:
        with client.stream("hello") as stream:
            for event in stream:
                if event.type == "delta":
                    break
        assert service.closed == 1 and stream.last_event_id == IDS[3]
        assert len(service.requests) == 1


def test_a_refused_connection_at_the_start_is_retried(sleeps: list[float]) -> None:
    service = FakeService([None])
    refused = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        if refused:
            refused.pop()
            raise httpx.ConnectError("refused", request=request)
        return service.handler(request)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with Parley("http://parley.test", "key", http_client=http) as client:
        assert pairs(list(client.stream("hello"))) == EVENTS
    assert len(service.requests) == 1


def test_async_stream_resumes_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(delay: float) -> None:
        return None

    monkeypatch.setattr("parley.client._async.anyio.sleep", no_sleep)
    service = FakeService([4, 0, 3, None], asynchronous=True)

    async def run() -> tuple[list[Event], list[Event]]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(service.handler))
        async with AsyncParley("http://parley.test", "key", http_client=http) as client:
            streamed = [event async for event in client.stream("hello")]
            async with client.jobs.events(JOB, last_event_id=IDS[7]) as tail:
                rest = [event async for event in tail]
        await http.aclose()
        return streamed, rest

    streamed, rest = asyncio.run(run())
    assert pairs(streamed) == EVENTS and pairs(rest) == EVENTS[8:]
    assert service.closed == 5
    assert service.last_event_ids() == [None, IDS[3], IDS[3], IDS[6], IDS[7]]
