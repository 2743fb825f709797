"""The Python SDK (`parley.client`) against the real stack: every resource, the error classes, and
event streams whose connection is cut for real (a TCP proxy closes it, or the web behind it dies)
and resumed with nothing repeated or missing."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from typing import Any

import pytest

from parley.client import (
    AsyncParley,
    AuthenticationError,
    ConflictError,
    Event,
    NotFoundError,
    Parley,
    PayloadTooLargeError,
    ValidationError,
)
from tests.integration.helpers import client as http_client
from tests.sse_client import collect

AGENT: dict[str, Any] = {
    "context": "You are a chef.",
    "first_message": "Hello, I am your chef.",
    "instructions": "Keep it short.",
}
STORY = "tell me a long story about the sea"  # nine words: nine deltas


class Proxy:
    """A TCP proxy on 127.0.0.1 forwarding each connection to `upstream` (changeable: new
    connections go to the new port). `cut()` closes every open connection, as a network failure
    would; `sent` keeps the bytes each connection carried from the client, for its request heads."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.sent: list[bytearray] = []
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            record = bytearray()
            with self._lock:
                self._open += [downstream, upstream]
                self.sent.append(record)
            threading.Thread(target=self._pump, args=(downstream, upstream, record), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, None), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, record: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if record is not None:
                    record += data
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            self._shut(sock)

    def requests(self) -> list[tuple[str, str | None]]:
        """(request line, Last-Event-ID) of every request that went through, in order."""
        found = []
        for record in self.sent:
            for head in re.findall(rb"(?:GET|POST|PATCH|DELETE) [^\r\n]*\r\n(?:[^\r\n]+\r\n)*", bytes(record)):
                text = head.decode("latin-1")
                last = re.search(r"(?im)^last-event-id: *(\S+)", text)
                found.append((text.splitlines()[0], last.group(1) if last else None))
        return found

    def close(self) -> None:
        self.listener.close()
        self.cut()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def pairs(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    return [(event.id, event.data) for event in events]


def whole_stream(stack: Any, job_id: str, web_url: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The job's events as the API replays them, read with the tests' own SSE reader."""
    with http_client(web_url or stack.web_url, stack.api_key) as http:
        return [(e.id, e.data) for e in collect(http, "GET", f"/api/v1/jobs/{job_id}/events")]


def test_agents_crud_and_error_classes(stack) -> None:
    stack.start_web(env={"PARLEY_MAX_MESSAGE_CHARS": "50"})
    with Parley(stack.web_url, stack.api_key) as client:
        chef = client.agents.create("Chef", **AGENT, temperature=0.5)
        assert chef.name == "Chef" and chef.context == "You are a chef." and chef.temperature == 0.5
        assert client.agents.get(chef.id) == client.agents.get("Chef") == chef
        other = client.agents.create("Baker")
        assert [a.name for a in client.agents.list()] == ["Chef", "Baker"]
        changed = client.agents.update("Chef", description="Mediterranean", temperature=None)
        assert changed.description == "Mediterranean" and changed.temperature is None
        assert changed.context == chef.context

        with pytest.raises(ConflictError) as conflict:
            client.agents.create("Chef")
        assert conflict.value.status == 409 and conflict.value.code == "conflict"
        with pytest.raises(ValidationError) as invalid:
            client.agents.create("Pastry", temperature=7)
        assert invalid.value.status == 422 and [d["field"] for d in invalid.value.details] == ["temperature"]
        with pytest.raises(NotFoundError) as missing:
            client.agents.get("nobody")
        assert missing.value.code == "not_found"
        with pytest.raises(PayloadTooLargeError):
            client.chat("x" * 51, agent="Chef")
        client.sessions.create("Chef", session_id="bound")
        with pytest.raises(ConflictError):
            client.chat("hello", agent="Baker", session_id="bound")

        client.agents.delete(other.id)
        with pytest.raises(NotFoundError):
            client.agents.get("Baker")
        assert [a.name for a in client.agents.list()] == ["Chef"]

    for key in ("wrong-key", ""):
        with Parley(stack.web_url, key) as stranger, pytest.raises(AuthenticationError) as denied:
            stranger.agents.list()
        assert denied.value.status == 401 and denied.value.headers.get("www-authenticate") == "Bearer"
    with Parley(stack.web_url, stack.api_keys["bob"]) as bob, pytest.raises(NotFoundError):
        bob.agents.get("Chef")


def test_sessions_chat_jobs_and_streams(stack) -> None:
    stack.start_web()
    stack.start_workers()
    with Parley(stack.web_url, stack.api_key) as client:
        chef = client.agents.create("Chef", **AGENT)
        created = [client.sessions.create("Chef", session_id=f"s{i}", metadata={"i": i}) for i in range(5)]
        assert created[0].message_count == 1 and created[0].metadata == {"i": 0} and created[0].agent_name == "Chef"
        first_page = client.sessions.page(limit=2)
        assert [s.session_id for s in first_page.data] == ["s4", "s3"] and first_page.next_cursor
        newest_first = ["s4", "s3", "s2", "s1", "s0"]
        assert [s.session_id for s in client.sessions.list(page_size=2)] == newest_first
        assert [s.session_id for s in client.sessions.list(agent="Chef", page_size=100)] == newest_first

        first = client.chat("I like basil", session_id="s1")
        assert first.response == "echo: I like basil" and first.agent_id == chef.id and first.session_id == "s1"
        second = client.chat("and tomatoes", session_id="s1", idempotency_key="k-1")
        assert second.response == "echo: and tomatoes | earlier: I like basil"
        assert client.chat("and tomatoes", session_id="s1", idempotency_key="k-1") == second  # same key, same turn
        history = client.sessions.messages("s1")
        assert [(m.role, m.content) for m in history] == [
            ("assistant", "Hello, I am your chef."), ("user", "I like basil"), ("assistant", "echo: I like basil"),
            ("user", "and tomatoes"), ("assistant", "echo: and tomatoes | earlier: I like basil"),
        ]  # fmt: skip
        assert [m.id for m in client.sessions.messages("s1", limit=2)] == ["msg_3", "msg_4"]
        assert [m.id for m in client.sessions.messages("s1", limit=2, before="msg_3")] == ["msg_1", "msg_2"]
        assert client.sessions.get("s1").message_count == 5

        accepted = client.chat_job("poll me", session_id="s2")
        assert accepted.status == "queued" and accepted.session_id == "s2"
        job = client.jobs.wait(accepted.job_id, timeout=30)
        assert job.status == "finished" and job.result is not None and job.result.response == "echo: poll me"
        assert client.jobs.get(accepted.job_id) == job

        stream = client.stream("one two three", session_id="s3")
        events = list(stream)
        assert [e.type for e in events][:3] == ["session", "status", "status"] and events[-1].type == "done"
        assert "".join(e.content or "" for e in events if e.type == "delta") == "echo: one two three"
        assert events[-2].type == "response" and events[-2].content == "echo: one two three"
        job_id = stream.job_id
        assert job_id is not None and job_id == events[0].job_id and stream.connections == 1
        assert pairs(list(client.jobs.events(job_id))) == pairs(events)
        assert pairs(list(client.jobs.events(job_id, last_event_id=events[3].id))) == pairs(events[4:])

        stack.model_server.control("script", [{"hang": True}])
        hanging = client.chat_job("hang", session_id="c")
        deadline = time.monotonic() + 20
        while client.jobs.get(hanging.job_id).status != "started":
            assert time.monotonic() < deadline, "the turn never started"
            time.sleep(0.05)
        canceled = client.jobs.cancel(hanging.job_id)
        assert canceled.canceled is True and canceled.job_id == hanging.job_id
        assert client.jobs.wait(hanging.job_id, timeout=20).status == "canceled"
        tail = list(client.jobs.events(hanging.job_id))
        assert [e.type for e in tail][-2:] == ["error", "done"] and tail[-2].code == "canceled"
        assert client.jobs.cancel(hanging.job_id).canceled is False

        client.sessions.delete("s1")
        with pytest.raises(NotFoundError):
            client.sessions.get("s1")
        with pytest.raises(NotFoundError):
            client.jobs.get("job_unknown")


def test_async_client_against_the_stack(stack) -> None:
    stack.start_web()
    stack.start_workers()

    async def run() -> None:
        async with AsyncParley(stack.web_url, stack.api_key) as client:
            await client.agents.create("Chef", **AGENT)
            answer = await client.chat("I like basil", session_id="a")
            assert answer.response == "echo: I like basil"
            events = [event async for event in client.stream("and tomatoes", session_id="a")]
            assert events[-2].content == "echo: and tomatoes | earlier: I like basil" and events[-1].type == "done"
            job = await client.chat_job("third", session_id="a")
            assert (await client.jobs.wait(job.job_id, timeout=30)).status == "finished"
            assert [s.session_id async for s in client.sessions.list()] == ["a"]
            assert len(await client.sessions.messages("a")) == 7
            with pytest.raises(NotFoundError):
                await client.sessions.get("nope")

    asyncio.run(run())


def read_with_cuts(stream: Any, on_delta: dict[int, Any]) -> tuple[list[Event], list[int]]:
    """Every event of `stream`, calling `on_delta[n]()` right after the n-th delta; also the
    stream's connection count after each event."""
    seen: list[Event] = []
    connections: list[int] = []
    for event in stream:
        seen.append(event)
        connections.append(stream.connections)
        deltas = sum(e.type == "delta" for e in seen)
        if event.type == "delta" and deltas in on_delta:
            on_delta.pop(deltas)()
    return seen, connections


def test_stream_cut_mid_way_resumes_with_nothing_repeated_or_missing(stack) -> None:
    stack.start_web()
    stack.start_workers()
    stack.model_server.control("options", {"chunk_delay_ms": 80})
    proxy = Proxy(port_of(stack.web_url))
    try:
        with Parley(proxy.url, stack.api_key) as client:
            client.agents.create("Chef", **AGENT)
            stream = client.stream(STORY, session_id="cut")
            seen, connections = read_with_cuts(stream, {2: proxy.cut, 5: proxy.cut})
        assert stream.connections == 3
        assert seen[-1].type == "done" and seen[-2].content == f"echo: {STORY}"
        assert "".join(e.content or "" for e in seen if e.type == "delta") == f"echo: {STORY}"
        assert pairs(seen) == whole_stream(stack, seen[0].job_id or "")
        # Each resumed request named the last event the caller had before it.
        last_before = [seen[connections.index(n) - 1].id for n in (2, 3)]
        resumed = [(line, last) for line, last in proxy.requests() if "/events" in line]
        assert resumed == [(f"GET /api/v1/jobs/{seen[0].job_id}/events HTTP/1.1", last) for last in last_before]
    finally:
        proxy.close()


def test_stream_resumes_on_another_web_when_its_web_is_killed(stack) -> None:
    web_one, web_two = stack.start_web(2)
    stack.start_workers()
    stack.model_server.control("options", {"chunk_delay_ms": 80})
    proxy = Proxy(port_of(str(web_one.url)))

    def fail_over() -> None:
        proxy.upstream_port = port_of(str(web_two.url))
        web_one.kill()

    try:
        with Parley(proxy.url, stack.api_key) as client:
            client.agents.create("Chef", **AGENT)
            stream = client.stream(STORY, session_id="failover")
            seen, connections = read_with_cuts(stream, {3: fail_over})
        assert stream.connections >= 2 and not web_one.alive
        resumed = [last for line, last in proxy.requests() if "/events" in line]
        assert resumed[0] == seen[connections.index(2) - 1].id
        assert pairs(seen) == whole_stream(stack, seen[0].job_id or "", str(web_two.url))
        assert seen[-1].type == "done" and seen[-2].content == f"echo: {STORY}"
    finally:
        proxy.close()
