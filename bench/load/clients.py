"""asyncio clients of the load benchmark. Every loop is bounded by a count and a deadline, and
every address is 127.0.0.1.

* `stream_turns`: `clients` concurrent users, each sending `rounds` turns (`POST
  /api/v1/chat/stream`, a new session each), reading every event until `done`.
* `model_streams`: the same shape straight to the model server (its own first chunk and end).
* `idle_streams`: many `GET /api/v1/jobs/{id}/events` held open on raw sockets, reading pings.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..measure import summary_ms


@dataclass
class Turn:
    """One streamed turn as its client saw it (times in seconds from sending the request)."""

    message: str
    first_delta_s: float | None = None
    done_s: float | None = None
    outcome: str = "lost"
    """`finished` (a `response`), `error:<code>`, `http:<status>` or `lost` (no `done` in time)."""
    retried: bool = False
    content: str = ""
    marks: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds (time.time) of the turn's milestones: `sent`, `received` (the first `delta`), and
    Redis' own time of `queued`, `started` and the first `delta` (their stream ids are Redis' clock in ms)."""


@dataclass
class LoadRun:
    turns: list[Turn] = field(default_factory=list)
    elapsed_s: float = 0.0
    exceptions: Counter[str] = field(default_factory=Counter)

    def report(self, model_first_chunk_s: float) -> dict[str, Any]:
        outcomes = Counter(turn.outcome for turn in self.turns)
        finished = [t for t in self.turns if t.outcome == "finished"]
        first = [t.first_delta_s for t in finished if t.first_delta_s is not None]
        done = [t.done_s for t in finished if t.done_s is not None]
        added = [s - model_first_chunk_s for s in first]
        phases = first_delta_phases([t.marks for t in finished], model_first_chunk_s)
        return {
            "turns": len(self.turns), "finished": len(finished), "outcomes": dict(outcomes),
            "errors": len(self.turns) - len(finished), "retried": sum(t.retried for t in self.turns),
            "wrong_answers": sum(1 for t in finished if not t.content.startswith("echo: " + t.message)),
            "elapsed_s": round(self.elapsed_s, 2),
            "turns_per_s": round(len(finished) / self.elapsed_s, 2) if self.elapsed_s else None,
            "first_delta_ms": summary_ms(first), "done_ms": summary_ms(done),
            "first_delta_added_ms": summary_ms(added), "first_delta_phases_ms": phases,
            "exceptions": dict(self.exceptions),
        }  # fmt: skip


FIRST_DELTA_PHASES = (
    ("web: request -> `queued` written (HTTP, auth, ACCEPT)", "sent", "queued"),
    ("queue: `queued` -> `started` (queue, dequeue, START)", "queued", "started"),
    ("worker: `started` -> first `delta` written, minus the model's first-chunk delay", "started", "delta"),
    ("web: first `delta` written -> client has it (pub/sub, SSE, client)", "delta", "received"),
)
"""Where the time from request to first `delta` goes, by the Redis stream ids of the turn's events (Redis'
clock, the same machine's as the client's)."""


def first_delta_phases(marks: list[dict[str, float]], model_first_chunk_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, start, end in FIRST_DELTA_PHASES:
        spans = [m[end] - m[start] for m in marks if start in m and end in m]
        if start == "started":
            spans = [span - model_first_chunk_s for span in spans]
        out[name] = summary_ms(spans)
    return out


def _client(connections: int, timeout_s: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout_s, connect=10.0))


async def _one_turn(client: httpx.AsyncClient, url: str, headers: dict[str, str], turn: Turn) -> None:
    started = time.perf_counter()
    turn.marks["sent"] = time.time()
    event_id = ""
    async with client.stream("POST", url, headers=headers, json={"message": turn.message}) as response:
        if response.status_code != 200:
            turn.outcome = f"http:{response.status_code}"
            return
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            kind = event.get("type")
            mark = "delta" if kind == "delta" else event.get("message") if kind == "status" else None
            if mark in ("queued", "started", "delta") and mark not in turn.marks and event_id:
                turn.marks[mark] = int(event_id.split("-")[0]) / 1000
            if kind == "delta" and turn.first_delta_s is None:
                turn.first_delta_s = time.perf_counter() - started
                turn.marks["received"] = time.time()
            elif kind == "status" and event.get("message") == "retrying":
                turn.retried = True
            elif kind == "response":
                turn.outcome, turn.content = "finished", event.get("content", "")
            elif kind == "error":
                turn.outcome = f"error:{event.get('code')}"
            elif kind == "done":
                turn.done_s = time.perf_counter() - started
                if turn.outcome == "lost":
                    turn.outcome = "done-without-answer"
                return


async def stream_turns(web_urls: list[str], headers: dict[str, str], clients: int, rounds: int,
                       timeout_s: float, tag: str, stagger_s: float = 0.0,
                       run: LoadRun | None = None) -> LoadRun:  # fmt: skip
    """`clients` users at once, each `rounds` streamed turns in new sessions, spread over `web_urls`.

    With `stagger_s` the users start evenly spread over that many seconds (user i after
    i * stagger_s / clients), so turns arrive at a steady rate rather than all in the same instant.
    Pass `run` to watch the turns while they run.
    """
    run = run if run is not None else LoadRun()

    async def user(client: httpx.AsyncClient, slot: int) -> None:
        url = f"{web_urls[slot % len(web_urls)]}/api/v1/chat/stream"
        await asyncio.sleep(slot * stagger_s / clients)
        for round_ in range(rounds):
            turn = Turn(message=f"load {tag} user {slot} round {round_} says hello")
            run.turns.append(turn)
            try:
                await _one_turn(client, url, headers, turn)
            except (httpx.HTTPError, json.JSONDecodeError) as error:
                run.exceptions[f"{type(error).__name__}: {str(error)[:100]}"] += 1

    began = time.perf_counter()
    async with _client(clients, timeout_s) as client:
        tasks = [asyncio.create_task(user(client, slot)) for slot in range(clients)]
        try:
            async with asyncio.timeout(timeout_s * rounds + stagger_s + 60):
                await asyncio.gather(*tasks)
        except TimeoutError:
            for task in tasks:
                task.cancel()
    run.elapsed_s = time.perf_counter() - began
    return run


async def model_streams(model_base_url: str, clients: int, timeout_s: float) -> dict[str, Any]:
    """`clients` streamed completions at once straight to the model: its own first chunk and end."""
    firsts: list[float] = []
    ends: list[float] = []
    errors: Counter[str] = Counter()
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "direct call to the model"}]}

    async def one(client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            async with client.stream("POST", f"{model_base_url}/chat/completions", json=body) as response:
                first = None
                async for line in response.aiter_lines():
                    if first is None and line.startswith("data: ") and '"content":"' in line and \
                            '"content":""' not in line:  # fmt: skip
                        first = time.perf_counter() - started
                if first is not None:
                    firsts.append(first)
                    ends.append(time.perf_counter() - started)
        except httpx.HTTPError as error:
            errors[type(error).__name__] += 1

    async with _client(clients, timeout_s) as client:
        async with asyncio.timeout(timeout_s + 30):
            await asyncio.gather(*(one(client) for _ in range(clients)))
    return {"clients": clients, "first_chunk_ms": summary_ms(firsts), "end_ms": summary_ms(ends),
            "errors": dict(errors)}  # fmt: skip


class IdleStream:
    """One SSE stream on a raw socket: what arrived, and how many pings."""

    __slots__ = ("reader", "writer", "head", "pings", "events", "closed")

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.head = b""
        self.pings = 0
        self.events = 0
        self.closed = False


async def open_idle_stream(base_url: str, api_key: str, job_id: str, stream: IdleStream) -> None:
    """Connect, send the GET, and wait until the response head and the backlog's events arrived."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=4096)
    stream.reader, stream.writer = reader, writer
    request = (f"GET /api/v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Authorization: Bearer {api_key}\r\nAccept: text/event-stream\r\n\r\n")  # fmt: skip
    writer.write(request.encode())
    await writer.drain()
    stream.head = await reader.readuntil(b"\r\n\r\n")
    while stream.events < 2:  # `session` and `status: queued`
        chunk = await reader.read(4096)
        if not chunk:
            stream.closed = True
            return
        stream.events += chunk.count(b"\ndata: ") + chunk.startswith(b"data: ")


async def read_idle_stream(stream: IdleStream) -> None:
    """Read pings until the stream closes or the task is cancelled."""
    assert stream.reader is not None
    while True:
        chunk = await stream.reader.read(4096)
        if not chunk:
            stream.closed = True
            return
        stream.pings += chunk.count(b": ping")


async def open_idle_streams(base_url: str, api_key: str, job_ids: list[str], batch: int = 50,
                            timeout_s: float = 300.0) -> tuple[list[IdleStream], Counter[str], float]:  # fmt: skip
    """Open one stream per job, `batch` at a time; (streams, errors, seconds).

    `batch` stays below the web's Redis pool (redis-py 8: 100 connections, and an error past
    that): each opening stream reads its backlog with one pooled connection."""
    streams: list[IdleStream] = []
    errors: Counter[str] = Counter()
    began = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        for start in range(0, len(job_ids), batch):
            group = [IdleStream() for _ in job_ids[start:start + batch]]
            results = await asyncio.gather(*(open_idle_stream(base_url, api_key, job_id, stream)
                                             for job_id, stream in zip(job_ids[start:start + batch], group,
                                                                       strict=True)),
                                           return_exceptions=True)  # fmt: skip
            for stream, result in zip(group, results, strict=True):
                if isinstance(result, BaseException):
                    errors[type(result).__name__] += 1
                elif not stream.head.startswith(b"HTTP/1.1 200"):
                    errors[stream.head.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
                else:
                    streams.append(stream)
    return streams, errors, time.perf_counter() - began


def close_idle_streams(streams: list[IdleStream]) -> None:
    for stream in streams:
        if stream.writer is not None:
            stream.writer.close()
