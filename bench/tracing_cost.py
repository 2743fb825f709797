"""``python -m bench.tracing_cost``: what tracing (shared/tracing.py) costs per turn, in-process, without the noise
of a whole stack: the off path (no OTLP endpoint: the hooks a turn calls, as pass-throughs) and the on path (the
spans of one turn with tools made, batched and exported over OTLP/HTTP to tests/otlp_receiver.py, run as a process
of its own so its decoding is not counted). docs/benchmarks.md ("Tracing") has the figures and the stack runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import timeit
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from parley.shared import tracing

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
RECORD = {"agent_name": "Chef", "agent_id": "agent_1", "session_id": "s1", "tenant": "alice", "traceparent": CALLER}
SPANS_PER_TURN = 7
"""What `turn` makes: the web's request, the queue wait, invoke_agent, three model calls, one tool call."""


class Stream:
    usage = {"prompt_tokens": 120, "completion_tokens": 30}
    response = {"model": "gpt-4o-mini", "id": "chatcmpl-1"}


class Result:
    ok = True


@asynccontextmanager
async def model_call() -> AsyncIterator[Stream]:
    yield Stream()


async def tool_call() -> Result:
    return Result()


@tracing.traced_turn
async def turn(tenant: str, job_id: str) -> str:
    """The hooks of one turn as web and worker call them (both in this one process)."""
    with tracing.request_span("POST", [(b"traceparent", CALLER.encode())]) as request:
        fields = tracing.job_fields()
        tracing.accepted(job_id, "s1")
        if request is not None:
            request.answered("/api/v1/chat", 200)
    record = {**RECORD, **fields, "enqueued_at": str(time.time_ns() // 1_000_000)}
    tracing.turn_started(record, 1)
    for _ in range(3):
        with tracing.chat("gpt-4o-mini") as call:
            async with model_call() as stream:
                pass
            call.answered(stream)
    await tracing.tool("calculator", "call_0", tool_call())
    tracing.turn_usage("gpt-4o-mini", Stream.usage)
    return "finished"


async def turns(count: int) -> None:
    for index in range(count):
        await turn("alice", f"job_{index}")


def off_path(count: int) -> dict[str, float]:
    """ns per turn of the hooks with tracing off, against the same loop of plain calls."""
    assert not tracing.enabled()

    async def plain(tenant: str, job_id: str) -> str:
        return "finished"

    async def plains(n: int) -> None:
        for index in range(n):
            await plain("alice", f"job_{index}")

    started = time.perf_counter()
    asyncio.run(plains(count))
    base = time.perf_counter() - started
    started = time.perf_counter()
    asyncio.run(turns(count))
    traced = time.perf_counter() - started
    hooks = timeit.timeit(lambda: tracing.tool("calculator", "call_0", None), number=count) / count  # type: ignore[arg-type]
    return {"turn_hooks_ns": (traced - base) / count * 1e9, "one_pass_through_ns": hooks * 1e9}


def on_path(count: int, port: int) -> dict[str, float]:
    """CPU µs per turn (this process, the exporter's thread included) with spans made and exported."""
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", str(count * SPANS_PER_TURN * 2))  # none dropped: all counted
    assert tracing.setup("parley-bench")
    spans: Any = tracing._spans
    asyncio.run(turns(200))  # warm-up
    spans.provider.force_flush()
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(turns(count))
    made_cpu = time.process_time() - cpu
    spans.provider.force_flush()
    all_cpu = time.process_time() - cpu
    return {"made_us_cpu": made_cpu / count * 1e6, "made_and_exported_us_cpu": all_cpu / count * 1e6,
            "wall_us": (time.perf_counter() - wall) / count * 1e6}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5000)
    parser.add_argument("--port", type=int, default=4397)
    args = parser.parse_args()
    for name in tracing.ENDPOINT_VARIABLES:
        os.environ.pop(name, None)
    off = off_path(args.turns * 10)
    print(f"off: the hooks of a turn cost {off['turn_hooks_ns']:.0f} ns in all; one pass-through "
          f"{off['one_pass_through_ns']:.0f} ns")  # fmt: skip
    receiver = subprocess.Popen([sys.executable, "-m", "tests.otlp_receiver", "--port", str(args.port)],
                                stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(2)
        on = on_path(args.turns, args.port)
    finally:
        tracing.shutdown()
        receiver.terminate()
        receiver.wait(10)
    print(f"on: {on['made_us_cpu']:.0f} µs CPU per turn to make its spans, {on['made_and_exported_us_cpu']:.0f} µs "
          f"made and exported (OTLP/HTTP protobuf), {on['wall_us']:.0f} µs wall")  # fmt: skip


if __name__ == "__main__":
    main()
