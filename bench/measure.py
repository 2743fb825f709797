"""The measurements.  Every loop runs a fixed number of times and every request has a timeout.

Clients are httpx: a sync ``httpx.Client`` for the sequential figures (one connection, kept
alive, the same client for Parley and for the model server), an ``httpx.AsyncClient`` with one
connection per simulated user for the concurrent ones.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from parley.worker.turn.context import build_messages

from . import sysinfo
from .timed_model import parse_first_chunk_time

MODEL = "gpt-4o-mini"
"""What Parley sends as the model name (PARLEY_MODEL's default); the direct calls send it too."""

AGENT = {
    "name": "bench-agent",
    "context": "You are a helpful assistant used to benchmark Parley.",
    "instructions": "Answer in one short sentence.",
    "first_message": "Hello! Ask me anything.",
}


def message(index: int) -> str:
    """A user message of constant length (7 words, 50 characters)."""
    return f"benchmark message {index % 100000:05d} about the weather today"


def direct_messages(index: int) -> list[dict[str, str]]:
    """The exact messages a worker sends the model for the first turn of a new session."""
    history = [{"role": "assistant", "content": AGENT["first_message"]}]
    return build_messages(AGENT, history, message(index))


# -- statistics ----------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    values = sorted(s * 1000 for s in seconds)
    if not values:
        return {"n": 0}
    return {
        "n": len(values), "p50": percentile(values, 0.50), "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99), "mean": sum(values) / len(values), "min": values[0], "max": values[-1],
    }  # fmt: skip


# -- setup ---------------------------------------------------------------------------------


def create_agent(client: httpx.Client, base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post(f"{base_url}/api/v1/agents", json=AGENT, headers=headers)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def sync_client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0))


# -- 1. sequential request latency ---------------------------------------------------------


def _sequential(call: Callable[[int], None], n: int, warmup: int) -> list[float]:
    latencies = []
    for index in range(warmup + n):
        started = time.perf_counter()
        call(index)
        elapsed = time.perf_counter() - started
        if index >= warmup:
            latencies.append(elapsed)
    return latencies


def chat_latency(client: httpx.Client, base_url: str, headers: dict[str, str], n: int, warmup: int) -> dict[str, Any]:
    """POST /api/v1/chat, one at a time, each in a NEW session (no session_id)."""

    def call(index: int) -> None:
        response = client.post(f"{base_url}/api/v1/chat", json={"agent": AGENT["name"], "message": message(index)},
                               headers=headers)  # fmt: skip
        if response.status_code != 200 or not response.json()["response"].startswith("echo: benchmark"):
            raise RuntimeError(f"/api/v1/chat answered {response.status_code}: {response.text[:300]}")

    return summary_ms(_sequential(call, n, warmup))


def model_latency(client: httpx.Client, model_base_url: str, n: int, warmup: int, stream: bool) -> dict[str, Any]:
    """POST /v1/chat/completions straight to the model server, with the worker's messages."""
    url = f"{model_base_url}/chat/completions"

    def call(index: int) -> None:
        body = {"model": MODEL, "messages": direct_messages(index), "stream": stream}
        if stream:
            with client.stream("POST", url, json=body) as response:
                data = response.read()
                ok = response.status_code == 200 and data.rstrip().endswith(b"[DONE]")
        else:
            response = client.post(url, json=body)
            ok = response.status_code == 200 and "echo: benchmark" in response.text
        if not ok:
            raise RuntimeError(f"the model server answered {response.status_code}")

    return summary_ms(_sequential(call, n, warmup))


def provider_latency(model_base_url: str, n: int, warmup: int) -> dict[str, Any]:
    """The worker's own model call, in this process: Parley's OpenAIProvider (the OpenAI SDK's async
    client), read as a turn reads it (`async with provider.stream(...)`, `async for`), the calls one after
    the other on one event loop, as they would share the worker's loop and its connection pool.

    Same messages and server as `model_latency`; the difference to the plain-httpx stream is
    what the SDK adds per turn.  Also counts the TCP connections the calls open.
    """
    import asyncio
    import socket
    from unittest import mock

    from parley.shared.settings import Settings
    from parley.worker.providers.openai import OpenAIProvider

    settings = Settings(OPENAI_BASE_URL=model_base_url, OPENAI_API_KEY="x", PARLEY_LLM="openai",
                        REDIS_URL="redis://127.0.0.1:1/0")  # type: ignore[call-arg]  # fmt: skip
    opened = [0]
    real_connect = socket.socket.connect

    def counting_connect(sock: socket.socket, address: Any) -> None:
        opened[0] += 1  # the event loop's connect, as the blocking one, goes through socket.connect
        real_connect(sock, address)

    async def call(provider: OpenAIProvider, index: int) -> None:
        async with provider.stream(model=MODEL, messages=direct_messages(index), temperature=None,
                                   max_tokens=None) as stream:  # fmt: skip
            if not "".join([piece async for piece in stream]).startswith("echo: benchmark"):
                raise RuntimeError("unexpected answer from the model server")

    async def run_all() -> list[float]:
        provider = OpenAIProvider(settings)  # its pool belongs to this loop
        latencies = []
        try:
            for index in range(warmup + n):
                started = time.perf_counter()
                await call(provider, index)
                if index >= warmup:
                    latencies.append(time.perf_counter() - started)
        finally:
            await provider.aclose()
        return latencies

    with mock.patch.object(socket.socket, "connect", counting_connect):
        result: dict[str, Any] = summary_ms(asyncio.run(run_all()))
    result["tcp_connections_opened"] = opened[0]
    result["calls"] = n + warmup
    return result


def sdk_transform_cost(message_counts: tuple[int, ...] = (4, 20, 40), calls: int = 200) -> dict[str, Any]:
    """ms per call of the OpenAI SDK's client-side request transform (`maybe_transform`), which
    `chat.completions.create` runs over the whole message list before sending it.

    Uses the SDK's private module; returns {"error": ...} if a newer SDK moved it.
    """
    try:
        from openai._utils._transform import maybe_transform
        from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
    except ImportError as error:
        return {"error": str(error)}
    exchange = [{"role": "user", "content": message(1)}, {"role": "assistant", "content": "echo: " + message(1)}]
    result: dict[str, Any] = {}
    for count in message_counts:
        messages = direct_messages(1)
        while len(messages) < count:
            messages = messages + exchange
        body = {"model": MODEL, "messages": messages[:count], "stream": True}
        for _ in range(20):
            maybe_transform(body, CompletionCreateParamsStreaming)
        started = time.perf_counter()
        for _ in range(calls):
            maybe_transform(body, CompletionCreateParamsStreaming)
        result[str(count)] = (time.perf_counter() - started) / calls * 1000
    return result


# -- 2. streaming: time to `session`, model's first chunk -> client's first `delta` -------


def stream_latency(client: httpx.Client, base_url: str, headers: dict[str, str], n: int, warmup: int) -> dict[str, Any]:
    """POST /api/v1/chat/stream, one at a time, each in a new session; workers use bench.timed_model.

    to_session: perf_counter from just before the request is sent to the line carrying the
    `session` event.  first_delta_lag: time.time() when the first `delta` line arrived minus the
    time.time() the model server wrote into that chunk just before sending it.
    """
    to_session: list[float] = []
    first_delta_lag: list[float] = []
    to_done: list[float] = []
    for index in range(warmup + n):
        body = {"agent": AGENT["name"], "message": message(index)}
        session_at = lag = done_at = None
        started = time.perf_counter()
        with client.stream("POST", f"{base_url}/api/v1/chat/stream", json=body, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"/api/v1/chat/stream answered {response.status_code}: {response.read()[:300]!r}")
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                wall, now = time.time(), time.perf_counter()
                event = json.loads(line[6:])
                kind = event.get("type")
                if kind == "session" and session_at is None:
                    session_at = now - started
                elif kind == "delta" and lag is None:
                    sent = parse_first_chunk_time(event.get("content", ""))
                    if sent is None:
                        raise RuntimeError(f"the first delta carries no send time: {event!r}")
                    lag = wall - sent
                elif kind in ("error",):
                    raise RuntimeError(f"the turn failed: {event!r}")
                elif kind == "done":
                    done_at = now - started
                    break
        if session_at is None or lag is None or done_at is None:
            raise RuntimeError("a stream ended without session, delta and done events")
        if index >= warmup:
            to_session.append(session_at)
            first_delta_lag.append(lag)
            to_done.append(done_at)
    return {"to_session": summary_ms(to_session), "first_delta_lag": summary_ms(first_delta_lag),
            "to_done": summary_ms(to_done)}  # fmt: skip


# -- 3. throughput -------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds each process used between start() and stop() (from /proc/<pid>/stat)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.pids["bench-client"] = os.getpid()
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self.before = {name: sysinfo.cpu_seconds(pid) or 0.0 for name, pid in self.pids.items()}
        self.machine = sysinfo.MachineMeter().start()

    def stop(self) -> None:
        self.machine_busy = self.machine.stop()
        for name, pid in self.pids.items():
            after = sysinfo.cpu_seconds(pid)
            if after is not None:
                self.used[name] = after - self.before.get(name, 0.0)

    def other_cores(self, elapsed: float) -> float:
        """Cores kept busy by processes other than ours during the measurement."""
        if elapsed <= 0:
            return 0.0
        return max(0.0, self.machine_busy * sysinfo.usable_cores() - sum(self.used.values()) / elapsed)


def metered(pids: dict[str, int], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """run(), plus how busy the machine was meanwhile and how much of that was not us."""
    meter = CpuMeter(pids)
    meter.start()
    started = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - started
    meter.stop()
    result["machine_busy"] = round(meter.machine_busy, 3)
    result["other_load_cores"] = round(meter.other_cores(elapsed), 3)
    return result


async def _run_clients(turns: int, concurrency: int, one: Callable[[Any, int, int], Any],
                       client: httpx.AsyncClient, timeout_s: float,
                       until: float | None = None) -> tuple[float, list[float], Counter[str]]:  # fmt: skip
    """`concurrency` loops share `turns` calls of one(client, user, index); (elapsed, latencies, errors).

    With `until` (a time.monotonic() value) the loops also stop starting calls at that time.
    """
    numbers = iter(range(turns))
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def user(slot: int) -> None:
        for index in numbers:
            if until is not None and time.monotonic() >= until:
                return
            started = time.perf_counter()
            try:
                await one(client, slot, index)
            except Exception as error:  # noqa: BLE001 - counted and reported
                errors[f"{type(error).__name__}: {str(error)[:120]}"] += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(user(slot) for slot in range(concurrency)))
    return time.perf_counter() - started, latencies, errors


def _async_client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0, connect=5.0))


def chat_throughput(base_url: str, headers: dict[str, str], turns: int, concurrency: int, pids: dict[str, int],
                    timeout_s: float, seconds: float | None = None) -> dict[str, Any]:  # fmt: skip
    """`concurrency` users, each in its own session, POST /api/v1/chat until `turns` are done.

    Before the clock starts each user has one turn (creating its session and connection).
    """
    run = uuid.uuid4().hex[:8]
    sessions = [f"tp-{run}-{slot:03d}" for slot in range(concurrency)]

    async def one(client: httpx.AsyncClient, slot: int, index: int) -> None:
        response = await client.post(
            f"{base_url}/api/v1/chat", headers=headers,
            json={"agent": AGENT["name"], "session_id": sessions[slot], "message": message(index)},
        )  # fmt: skip
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code} {response.text[:100]}")

    async def main() -> dict[str, Any]:
        async with _async_client(concurrency) as client:
            await _run_clients(concurrency, concurrency, one, client, timeout_s)  # warm-up: sessions, connections
            meter = CpuMeter(pids)
            meter.start()
            until = None if seconds is None else time.monotonic() + seconds
            elapsed, latencies, errors = await _run_clients(turns, concurrency, one, client, timeout_s, until)
            meter.stop()
        return _throughput_result(turns, concurrency, elapsed, latencies, errors, meter)

    return asyncio.run(main())


def model_throughput(model_base_url: str, turns: int, concurrency: int, pids: dict[str, int],
                     timeout_s: float, stream: bool = False) -> dict[str, Any]:  # fmt: skip
    """`concurrency` users call the model server directly (the worker's messages) `turns` times."""
    url = f"{model_base_url}/chat/completions"

    async def one(client: httpx.AsyncClient, slot: int, index: int) -> None:
        body = {"model": MODEL, "messages": direct_messages(index), "stream": stream}
        if stream:
            async with client.stream("POST", url, json=body) as response:
                await response.aread()
        else:
            response = await client.post(url, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")

    async def main() -> dict[str, Any]:
        async with _async_client(concurrency) as client:
            await _run_clients(concurrency, concurrency, one, client, timeout_s)
            meter = CpuMeter(pids)
            meter.start()
            elapsed, latencies, errors = await _run_clients(turns, concurrency, one, client, timeout_s)
            meter.stop()
        return _throughput_result(turns, concurrency, elapsed, latencies, errors, meter)

    return asyncio.run(main())


def _throughput_result(turns: int, concurrency: int, elapsed: float, latencies: list[float],
                       errors: Counter[str], meter: CpuMeter) -> dict[str, Any]:  # fmt: skip
    done = len(latencies)
    return {
        "turns": done + sum(errors.values()), "ok": done, "errors": dict(errors), "concurrency": concurrency,
        "elapsed_s": elapsed,
        "per_s": done / elapsed if elapsed > 0 else 0.0, "latency": summary_ms(latencies),
        "cpu_s": {name: round(value, 3) for name, value in meter.used.items()},
        "cpu_ms_per_turn": {name: round(value / done * 1000, 3) for name, value in meter.used.items()} if done else {},
        "cpu_util_of_machine": sum(meter.used.values()) / elapsed / sysinfo.usable_cores() if elapsed else 0.0,
        "machine_busy": meter.machine_busy, "other_load_cores": meter.other_cores(elapsed),
    }  # fmt: skip
