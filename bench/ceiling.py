"""``python -m bench redis-ceiling``: how many turns per second ONE Redis (one core) carries with Parley's
real command mix, without the model and without web or worker CPU in the way.

    python -m bench redis-ceiling                      # every phase, ~3 minutes; markdown + --output JSON
    python -m bench redis-ceiling --quick              # a smoke run: the `real` phase, short, and the profile
    python -m bench redis-ceiling --phases real --seconds 60 --processes 4 --in-flight 16

What runs: a fresh Redis per phase (parley.local.redis_server.RedisServer: `redis-server` from PATH, AOF on
with `appendfsync everysec`, as deployed), one agent, and `--processes` client processes (multiprocessing,
spawned), each holding `--in-flight` turns at once. Every Redis call is Parley's own code; only the model
is gone (its answer is `--deltas` ready-made chunks) and nothing waits between calls:

* the web's half, on an asyncio loop as in `web`: the per-request rate check (api/deps.py
  `check_request_rate`), the accept (api/service/turns.py `_accept`: agent resolution, rq's job saved,
  ACCEPT_TURN) in a thread pool, then the job's events followed to `done` through the real event hub
  (api/hub.py `EventHub`, api/streams.py `job_events`: SUBSCRIBE, XRANGE, live PUBLISHes, UNSUBSCRIBE);
  a slot keeps its session for `--session-turns` turns, then starts a new one;
* the worker's half, on one asyncio event loop per process as in `worker` (issue 13): in the `real` and
  `batched` phases the real engine (worker/engine.py `Engine` over worker/rq_side.py `RqSide`, built as
  worker/__main__.py's `make_engine` builds it, with the bench's job class: rq's dequeue, execution records,
  registries, results and heartbeats) runs each turn as a task whose function is :func:`worker_turn`:
  START_TURN (`WorkerTurns.start`), READ_CONTEXT (`WorkerTurns.read_context`: the agent and the session's
  memory), the context window built from it in the worker's thread pool (worker/memory/window.py
  `remembered`), the deltas through `WorkerTurns.emit` in batches of `--batch` (1: each delta its own batch,
  as the outbox sends a model streaming 20 chunks over 5 s), and the commit (worker/turn/run.py `_commit`:
  FINISH_TURN, then the summary check). In the `parley` phase no rq runs: tasks take job ids off RQ's queue
  with BLPOP and run the same function, so that phase is Parley's own Redis work alone.
* the watch: as the engine's, ONE pipelined round trip per process (`WorkerTurns.running`) asks Redis about
  every turn due a check, not one per turn. The engine ticks every 0.5 s and a turn is due only when none
  of its emits vouched for it since the last tick; the bench's model answers at once, so the bench's watch
  (:class:`Watch`, standing in for the engine's) is paced by the turns instead of the clock: each turn is
  due the checks the engine's rule gives a `--watch-checks`-tick answer (10: 5 s) with its EMIT batches
  evenly spread (:func:`unvouched_checks`: none with 20 batches, 6 with 4).

Until issue 13 the worker's half was the threaded `TurnWorker` (a thread per turn, the sync `TurnStore`,
one cancel-watch round trip per turn every 0.5 s); the figures of docs/scaling.md were measured with it.

Measured over `--seconds` after `--warmup`: turns completed (each seen to `done` by its web half), Redis CPU
(INFO cpu: `used_cpu_*_main_thread`, the one thread that bounds Redis, and the whole process), the implied
ceiling (one core / main-thread CPU per turn), commands per turn (INFO commandstats, commands run inside
scripts included) and their execution time, the latency of each Redis call at that load (client-side), and
the client processes' CPU. Then a *profile*: one client, turns one after the other with no rq worker, each
step bracketed by `INFO cpu commandstats`, so each step's commands, execution time and Redis CPU are its own.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis

from parley.local.redis_server import RedisServer

from . import sysinfo
from .load import probe

TENANT = "bench"
API_KEY = "key-bench"
AGENT = {
    "name": "bench-agent",
    "context": "You are a helpful assistant used to benchmark Parley.",
    "instructions": "Answer in one short sentence.",
    "first_message": "Hello! Ask me anything.",
}
"""The agent of bench/measure.py's runs (a context, instructions and a first message)."""

WAIT, WARMUP, MEASURING, STOPPING = 0, 1, 2, 3
TURN_TIMEOUT_S = 60.0
"""A turn not `done` within this is counted as an error (a web slot never hangs)."""
"""The phase flag the parent sets and every client process reads."""

ENV = {
    "PARLEY_TENANT_CONCURRENCY": "0", "PARLEY_MAX_TURNS_IN_FLIGHT": "0", "PARLEY_MAX_STREAMS_PER_TENANT": "1000000",
    "PARLEY_MAX_QUEUE_DEPTH": "1000000", "PARLEY_TENANT_REQUESTS_PER_S": "1000000", "PARLEY_LOG_LEVEL": "WARNING",
    "PARLEY_RQ_LOG_LEVEL": "WARNING", "PARLEY_LLM": "demo", "PARLEY_API_KEYS": f"{TENANT}:{API_KEY}",
}  # fmt: skip
"""One tenant, so its fairness limits are lifted (as bench/stack.py's BENCH_LIMITS); the request-rate check
stays on (every web request makes it) with a limit it never reaches."""


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    rq: bool
    """The engine runs the turns, with rq (else tasks BLPOP RQ's queue: Parley's own work alone)."""
    batch: int
    """Deltas per EMIT pipeline."""


PHASES = {
    "real": Phase("real", "the real mix: web half, the worker's engine with rq, each delta its own EMIT batch (a "
                          "model streaming 20 chunks over 5 s)", rq=True, batch=1),
    "parley": Phase("parley", "Parley's own work alone: as `real` without rq (tasks BLPOP RQ's queue)",
                    rq=False, batch=1),
    "batched": Phase("batched", "as `real`, the deltas 5 to an EMIT batch (a faster model: the outbox finds "
                                "several queued)", rq=True, batch=5),
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phases", default="real,parley,batched",
                        help=f"comma-separated, of {', '.join(PHASES)} (default: all, in that order)")  # fmt: skip
    parser.add_argument("--processes", type=int, default=4, help="client processes (4)")
    parser.add_argument("--in-flight", type=int, default=16, help="turns each client process holds at once (16)")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per phase (40)")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first (5)")
    parser.add_argument("--deltas", type=int, default=20, help="`delta` events per turn (20)")
    parser.add_argument("--watch-checks", type=int, default=10,
                        help="the watch's ticks during a turn (10: a 5 s answer, a tick every 0.5 s); a tick asks "
                             "about the turn only if no EMIT came since the last (the engine's rule)")  # fmt: skip
    parser.add_argument("--session-turns", type=int, default=5, help="turns per session before a new one (5)")
    parser.add_argument("--profile-turns", type=int, default=150, help="turns of the step profile (150; 0: skip)")
    parser.add_argument("--nice", type=int, default=5, help="niceness of the client processes (5: Redis first)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: `real` only, 2 x 8 turns, 6 s")
    parser.add_argument("--keep-logs", action="store_true", help="keep Redis's directory (its AOF and log)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")


def finish_arguments(args: argparse.Namespace) -> None:
    if args.quick:
        args.phases, args.processes, args.in_flight = "real", 2, 8
        args.seconds, args.warmup, args.profile_turns = 6.0, 2.0, 20
    unknown = [name for name in args.phases.split(",") if name not in PHASES]
    if unknown:
        raise SystemExit(f"bench redis-ceiling: unknown phase(s) {unknown}; known: {', '.join(PHASES)}")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the figures' arithmetic (pure) ------------------------------------------------------------


def unvouched_checks(ticks: int, sends: int) -> list[int]:
    """The engine's watch over one turn lasting `ticks` watch intervals, whose `sends` EMIT batches are evenly
    spread over it (the last at its end): at each tick it asks about the turn only when no EMIT came within
    the interval before (an emit's fence vouches that the attempt still runs; so does START, at time 0).
    Returns `sends + 1` counts: the asks due before each batch, then those due after the last."""
    due = [0] * (sends + 1)
    for tick in range(max(ticks, 0)):  # tick `tick` comes at (tick + 1) intervals and looks back one
        # batch i goes at (i + 1) * ticks / sends intervals; in whole numbers, times `sends`:
        sent_by = [(i + 1) * ticks <= (tick + 1) * sends for i in range(sends)]
        vouched = any(tick * sends < (i + 1) * ticks <= (tick + 1) * sends for i in range(sends))
        if not vouched:
            due[sum(sent_by)] += 1
    return due


def batches(items: list[str], size: int) -> list[list[str]]:
    size = max(size, 1)
    return [items[start : start + size] for start in range(0, len(items), size)]


def percentiles(values: list[float]) -> dict[str, Any]:
    """n, p50, p90, p99, max and mean of `values` (ms), rounded; {'n': 0} when empty."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)

    return {"n": len(ordered), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1], 3),
            "mean": round(statistics.fmean(ordered), 3)}  # fmt: skip


def redis_cpu(info: dict[str, Any]) -> dict[str, float]:
    """CPU seconds Redis has used: its main thread (what bounds it: one core) and the whole process."""
    whole = float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))
    if "used_cpu_sys_main_thread" not in info:  # before Redis 6.2: the process as a whole
        return {"main": whole, "whole": whole}
    main = float(info["used_cpu_sys_main_thread"]) + float(info.get("used_cpu_user_main_thread", 0.0))
    return {"main": main, "whole": whole}


def ceiling(turns: int, seconds: float, main_cpu_s: float, whole_cpu_s: float) -> dict[str, Any]:
    """The phase's figures: turns/s, Redis CPU ms per turn, how busy its main thread was, and the implied
    ceiling: one core divided by the main thread's CPU per turn."""
    per_turn = main_cpu_s / turns if turns else None
    return {
        "turns": turns, "seconds": round(seconds, 3), "turns_per_s": round(turns / seconds, 1) if seconds else None,
        "redis_main_cpu_ms_per_turn": round(per_turn * 1000, 4) if per_turn else None,
        "redis_process_cpu_ms_per_turn": round(whole_cpu_s / turns * 1000, 4) if turns else None,
        "redis_main_busy": round(main_cpu_s / seconds, 3) if seconds else None,
        "implied_ceiling_turns_per_s": round(1 / per_turn) if per_turn else None,
    }  # fmt: skip


def command_time(before: dict[str, Any], after: dict[str, Any], turns: int) -> dict[str, Any]:
    """Per command, from two INFO commandstats: calls and execution time (usec) per turn, usec per call.
    A script's inner commands are counted in their own rows *and* in its EVALSHA's time."""
    rows = {}
    for name, stats in after.items():
        if not name.startswith("cmdstat_") or name == "cmdstat_info":
            continue
        old = before.get(name, {"calls": 0, "usec": 0})
        calls, usec = int(stats["calls"]) - int(old["calls"]), int(stats["usec"]) - int(old["usec"])
        if calls > 0 and turns:
            rows[name.removeprefix("cmdstat_")] = {"calls_per_turn": round(calls / turns, 2),
                                                   "usec_per_turn": round(usec / turns, 2),
                                                   "usec_per_call": round(usec / calls, 2)}  # fmt: skip
    return dict(sorted(rows.items(), key=lambda item: -item[1]["usec_per_turn"]))


# -- the client processes ----------------------------------------------------------------------


class Recorder:
    """Client-side latency of each kind of Redis call, kept only while the phase is measured."""

    def __init__(self, flag: Any) -> None:
        self.flag = flag
        self.samples: dict[str, list[float]] = {}

    def run(self, kind: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = call(*args, **kwargs)
        self.add(kind, started)
        return result

    async def arun(self, kind: str, call: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        result = await call()
        self.add(kind, started)
        return result

    def add(self, kind: str, started: float) -> None:
        if self.flag.value == MEASURING:
            self.samples.setdefault(kind, []).append((time.perf_counter() - started) * 1000)


class Watch:
    """The engine's watch (worker/engine.py `_watch`) as the bench runs it: one pipelined round trip
    (`WorkerTurns.running`) asks about every turn of the process that is due a check.

    The engine ticks every `WATCH_INTERVAL_S` and asks only about turns no emit has vouched for since the
    last tick; the bench's turns take milliseconds, so its clock would hardly ever find one due. Instead each
    turn owes the asks :func:`unvouched_checks` finds for a 5 s answer (`--watch-checks` ticks, its EMIT
    batches evenly spread), and one round trip pays one ask of every turn owing one. With `inline` (the step
    profile) a turn asks at once, alone; otherwise :meth:`run`, a task on the worker's loop, asks beside the
    turns, as the engine's watch does. Asks a turn owed are still paid after its commit if the task lagged:
    the engine would have made them while the turn streamed."""

    KIND = "worker: watch (one round trip, every turn due a check)"

    def __init__(self, turns: Any, meter: Any, *, inline: bool) -> None:
        self.turns = turns
        self.meter = meter
        self.inline = inline
        self.owing: dict[str, list[Any]] = {}
        """Job id -> [its Attempt, asks it still owes], from its START until it has ended and owes none."""
        self._ended: set[str] = set()
        self._due = asyncio.Event()

    def begin(self, turn: Any) -> None:
        self.owing[turn.job_id] = [turn, 0]

    def end(self, turn: Any) -> None:
        self._ended.add(turn.job_id)
        self._forget_paid()

    async def owe(self, turn: Any, asks: int) -> None:
        """`turn` is due `asks` more checks."""
        if asks <= 0:
            return
        self.owing[turn.job_id][1] += asks
        if self.inline:
            await self._ask_while_owed()
        else:
            self._due.set()

    async def run(self) -> None:
        """Ask whenever checks are due (until cancelled)."""
        while True:
            await self._due.wait()
            self._due.clear()
            await self._ask_while_owed()

    async def _ask_while_owed(self) -> None:
        while due := [entry for entry in self.owing.values() if entry[1] > 0]:
            for entry in due:
                entry[1] -= 1
            self._forget_paid()
            try:
                await self.meter.arun(self.KIND, functools.partial(self.turns.running, [entry[0] for entry in due]))
            except redis.RedisError:
                pass  # as the engine: asked again next time; the turns' own writes are fenced

    def _forget_paid(self) -> None:
        for job_id in [job_id for job_id in self._ended if self.owing.get(job_id, [None, 0])[1] <= 0]:
            self._ended.discard(job_id)
            self.owing.pop(job_id, None)


def _bench_runtime(config: dict[str, Any], meter: Any, *, inline_watch: bool = False) -> Any:
    """The worker's runtime over the phase's Redis, built as a worker builds it (worker/runtime.py
    `Runtime.build`), plus the phase's knobs and the bench's watch."""
    os.environ.update(config["env"])
    from parley.shared.settings import Settings
    from parley.worker.runtime import SYNC_THREADS, Runtime

    settings = Settings()  # type: ignore[call-arg]
    rt = Runtime.build(settings)
    # The web's half shares these sync clients here (a web process has its own): room for its pool too.
    for client in (rt.clients.text, rt.clients.raw):
        pool = client.connection_pool
        pool.max_connections = max(pool.max_connections, SYNC_THREADS + _web_threads(config) + 10)
    rt.meter = meter
    rt.deltas = [_delta(index) for index in range(config["deltas"])]
    rt.batch = config["batch"]
    rt.watch_checks = config["watch_checks"]
    rt.watch = Watch(rt.worker_turns, meter, inline=inline_watch)
    from parley.shared.tokens import count_message

    count_message({"role": "user", "content": "warm"}, settings.default_model)  # the encoding loads before a turn
    return rt


def _web_threads(config: dict[str, Any]) -> int:
    """The web half's thread pool (FastAPI's holds 40)."""
    return min(config["in_flight"], 40)


def _delta(index: int) -> str:
    from parley.shared import events
    from parley.shared.events import EventType

    return events.encode(EventType.DELTA, content=f"word{index:02d} ")


async def _read_context(rt: Any, tenant: str, record: dict[str, str]) -> tuple[dict[str, Any], str]:
    """worker/turn/run.py `_context`'s reads, each metered: READ_CONTEXT on the loop (the agent and the
    session's memory), then the window built from it in the worker's pool (older messages read there only
    when the budget takes more)."""
    from parley.worker.memory.window import remembered
    from parley.worker.turn.loop import in_thread

    meter = rt.meter
    read = await meter.arun("worker: READ_CONTEXT (agent, memory)", functools.partial(
        rt.worker_turns.read_context, tenant, record["agent_id"], record["session_id"]))  # fmt: skip
    agent = read.agent
    model = agent.get("model") or rt.settings.default_model
    images = json.loads(record.get("images") or "[]")
    await in_thread(rt.threads, meter.run, "worker: window (remembered, from READ_CONTEXT)", remembered, rt, tenant,
                    record, agent, model, images, read.prefetched(model))  # fmt: skip
    return agent, model


async def worker_turn(tenant: str, job_id: str, *, rt: Any) -> str:
    """A worker's turn with the model taken out: every Redis call run_turn makes, through the same functions
    (worker/turn/run.py), the deltas sent as the outbox sends them, and the watch's checks owed."""
    from parley.shared import telemetry
    from parley.shared.store.worker_turns import Attempt
    from parley.worker.turn.loop import Outcome
    from parley.worker.turn.run import _commit

    meter, call = rt.meter, functools.partial
    state, attempt, record = await meter.arun("worker: START_TURN", call(rt.worker_turns.start, tenant, job_id))
    if state != "started":
        return str(state)
    turn = Attempt(tenant, job_id, attempt)
    rt.watch.begin(turn)
    try:
        agent, model = await _read_context(rt, tenant, record)
        sent = batches(rt.deltas, rt.batch)
        due = unvouched_checks(rt.watch_checks, len(sent))
        for batch, asks in zip(sent, due, strict=False):
            await rt.watch.owe(turn, asks)
            if not await meter.arun("worker: EMIT_TURN_EVENT batch", call(rt.worker_turns.emit, turn, batch)):
                return "stopped"
        await rt.watch.owe(turn, due[-1])
    finally:
        rt.watch.end(turn)
    telemetry.first_token(0.25)
    telemetry.tokens(agent["name"], model, 60, 40)
    answer = "".join(json.loads(payload)["content"] for payload in rt.deltas)
    outcome = Outcome(answer=answer, usage={"prompt_tokens": 60, "completion_tokens": 40})
    return str(await meter.arun("worker: commit (FINISH_TURN, summary check)",
                                call(_commit, rt, turn, agent, record, outcome, model)))  # fmt: skip


def _message(slot: int, turn: int) -> str:
    return f"benchmark message {slot:03d}-{turn:05d} about the weather today"


async def _web_half(rt: Any, config: dict[str, Any], flag: Any, finished: Any, index: int,
                    errors: dict[str, int]) -> None:
    """`in_flight` slots, each a web request after another: rate check, accept, follow the events to `done`."""
    from parley.api.deps import check_request_rate
    from parley.api.hub import EventHub
    from parley.api.service.turns import _accept
    from parley.api.streams import job_events
    from parley.shared.schema import ChatRequest

    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=_web_threads(config)))
    hub = EventHub(rt.settings)
    await hub.start()
    await asyncio.wait_for(hub.connected.wait(), 10)
    web = SimpleNamespace(settings=rt.settings, hub=hub)
    meter: Recorder = rt.meter

    async def one_turn(number: int, turn: int, session_id: str | None) -> str:
        await meter.arun("web: request-rate check", functools.partial(check_request_rate, web, TENANT))
        body = ChatRequest(message=_message(number, turn), agent=AGENT["name"], session_id=session_id)
        accepted = await meter.arun("web: accept (agent, rq job, ACCEPT_TURN)", functools.partial(
            loop.run_in_executor, None, _accept, rt, TENANT, body, None, API_KEY, None))  # fmt: skip
        started = time.perf_counter()
        async with asyncio.timeout(TURN_TIMEOUT_S):
            async for _ in job_events(hub, TENANT, accepted.job_id, None, ping_s=rt.settings.sse_ping_s):
                pass  # to `done`
        meter.add("web: accepted -> `done` (the whole turn)", started)
        return accepted.session_id

    async def slot(number: int) -> None:
        session_id: str | None = None
        turn = 0
        while flag.value < STOPPING:
            if turn % config["session_turns"] == 0:
                session_id = None
            try:
                session_id = await one_turn(number, turn, session_id)
            except Exception as error:  # noqa: BLE001 - counted and reported; the slot goes on
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                session_id = None
            else:
                if flag.value == MEASURING:
                    finished[index] += 1  # this loop's thread alone writes this process's slot
            turn += 1

    try:
        await asyncio.gather(*(slot(number) for number in range(config["in_flight"])))
    finally:
        await hub.stop()


def _bench_job_class(rt: Any) -> type:
    from parley.worker.runtime import RuntimeJob

    class BenchJob(RuntimeJob):
        """rq's job as the worker runs it, its function :func:`worker_turn` (run_turn without the model)."""

        @property
        def func(self) -> Any:
            return functools.partial(worker_turn, rt=self.runtime)

    return BenchJob.bound_to(rt)


def _engine(rt: Any, config: dict[str, Any]) -> Any:
    """worker/__main__.py's make_engine, with the bench's job class and the bench's watch instead of the
    engine's (`turns=None`: see :class:`Watch`)."""
    from rq import Queue

    from parley.worker.engine import Engine
    from parley.worker.rq_side import RqSide

    job_class = _bench_job_class(rt)
    settings = rt.settings
    side = RqSide(
        [Queue(settings.queue_name, connection=rt.clients.raw, job_class=job_class)],
        connection=rt.clients.raw, job_class=job_class, heartbeat_ttl_s=settings.heartbeat_ttl_s,
        worker_ttl=settings.maintenance_interval_s + 15, maintenance_interval=settings.maintenance_interval_s,
        job_monitoring_interval=settings.heartbeat_ttl_s,
    )  # fmt: skip
    return Engine(side, concurrency=config["in_flight"], drain_grace_s=settings.drain_grace_s, turns=None,
                  threads=rt.threads)  # fmt: skip


async def _queue_takers(rt: Any, config: dict[str, Any], stop: threading.Event) -> None:
    """The `parley` phase's stand-in for rq: `in_flight` tasks taking job ids off RQ's queue (BLPOP, 1 s) on
    a client of their own (a BLPOP holds its connection), each running the turn it took."""
    from parley.shared.store import keys
    from parley.shared.store.connection import connect_async

    queue_key = keys.rq_queue(rt.settings.queue_name)
    takers = connect_async(rt.settings, max_connections=config["in_flight"])

    async def take() -> None:
        while not stop.is_set():
            found = await takers.blpop([queue_key], timeout=1)
            if found:
                await worker_turn(TENANT, found[1], rt=rt)

    try:
        await asyncio.gather(*(take() for _ in range(config["in_flight"])))
    finally:
        await takers.aclose()


async def _worker_half(rt: Any, config: dict[str, Any], stop: threading.Event) -> None:
    """The worker process's loop: the engine (or the BLPOP tasks) and the bench's watch, until `stop`, set when
    the web half is done; the engine then drains as on SIGTERM (`request_stop`)."""
    side = [asyncio.create_task(rt.watch.run(), name="watch")]
    try:
        if config["rq"]:
            engine = _engine(rt, config)
            side.append(asyncio.create_task(_on_stop(stop, engine.request_stop), name="stop"))
            await engine.run(logging_level="WARNING")
        else:
            await _queue_takers(rt, config, stop)
    finally:
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        await rt.provider.aclose()
        await rt.aio.aclose()
        rt.threads.shutdown(wait=False, cancel_futures=True)


async def _on_stop(stop: threading.Event, then: Callable[[], None]) -> None:
    while not stop.is_set():
        await asyncio.sleep(0.1)
    then()


def client_main(index: int, config: dict[str, Any], flag: Any, finished: Any, results: Any) -> None:
    """One client process: the web half on an asyncio loop in a thread, the worker half on another on the main
    thread (the engine's signal handlers need it), uvloop's as in `worker`."""
    from parley.worker.__main__ import _loop_factory

    os.nice(config["nice"])
    recorder = Recorder(flag)
    rt = _bench_runtime(config, recorder)
    stop = threading.Event()
    web_error: list[str] = []
    errors: dict[str, int] = {}

    def web() -> None:
        try:
            asyncio.run(_web_half(rt, config, flag, finished, index, errors))
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            web_error.append(repr(error))
            traceback.print_exc()
        finally:
            stop.set()  # the worker half drains its running turns and returns

    results.put(("ready", index, None))
    while flag.value == WAIT:
        time.sleep(0.01)
    web_thread = threading.Thread(target=web, name="web", daemon=True)
    web_thread.start()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_worker_half(rt, config, stop))
    except Exception as error:  # noqa: BLE001 - reported to the parent
        web_error.append(f"worker: {error!r}")
        traceback.print_exc()
        flag.value = STOPPING  # the others stop too: this process no longer runs turns
    web_thread.join(timeout=60)
    results.put(("done", index, {"samples": recorder.samples, "error": web_error[0] if web_error else None,
                                 "turn_errors": errors}))


# -- the parent: one phase ----------------------------------------------------------------------


def _info(client: redis.Redis) -> dict[str, Any]:
    return dict(client.info("cpu", "commandstats"))


def _setup(url: str) -> None:
    """The agent every turn talks to, created through the store as the API creates it."""
    from parley.shared.schema import AgentCreate
    from parley.shared.store.agents import AgentStore

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        AgentStore(client).create(TENANT, AgentCreate(**AGENT))  # type: ignore[arg-type]
    finally:
        client.close()


def _config(args: argparse.Namespace, phase: Phase, url: str) -> dict[str, Any]:
    return {"env": {**ENV, "REDIS_URL": url, "PARLEY_WORKER_CONCURRENCY": str(args.in_flight)}, "rq": phase.rq,
            "batch": phase.batch, "deltas": args.deltas, "watch_checks": args.watch_checks,
            "session_turns": args.session_turns, "in_flight": args.in_flight, "nice": args.nice}  # fmt: skip


class _Clients:
    """The phase's client processes, their shared flag and counters; stopped (killed if need be) on close."""

    def __init__(self, args: argparse.Namespace, config: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.flag = ctx.Value("i", WAIT, lock=False)
        self.finished = ctx.Array("q", args.processes, lock=False)
        self.results = ctx.Queue()
        self.procs = [ctx.Process(target=client_main, args=(n, config, self.flag, self.finished, self.results),
                                  name=f"ceiling-client-{n}", daemon=True) for n in range(args.processes)]  # fmt: skip

    def start(self, timeout_s: float = 120.0) -> None:
        for proc in self.procs:
            proc.start()
        self._expect("ready", timeout_s)

    def _expect(self, kind: str, timeout_s: float) -> dict[int, Any]:
        found: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"bench redis-ceiling: {len(found)}/{len(self.procs)} clients {kind} in time")
            try:
                got, index, payload = self.results.get(timeout=min(left, 1.0))
            except queue.Empty:
                if not any(proc.is_alive() for proc in self.procs):
                    raise RuntimeError(f"bench redis-ceiling: the clients died before {kind}") from None
                continue
            if got == kind:
                found[index] = payload
        return found

    def cpu_s(self) -> float:
        return sum(sysinfo.cpu_seconds(proc.pid) or 0.0 for proc in self.procs if proc.pid)

    def finish(self, timeout_s: float = 90.0) -> dict[int, Any]:
        self.flag.value = STOPPING
        return self._expect("done", timeout_s)

    def close(self) -> None:
        self.flag.value = STOPPING
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)


def _window(server: RedisServer, client: redis.Redis, clients: _Clients) -> dict[str, Any]:
    assert server.pid is not None
    return {"t": time.perf_counter(), "info": _info(client), "finished": sum(clients.finished),
            "redis_proc_cpu_s": sysinfo.cpu_seconds(server.pid) or 0.0, "clients_cpu_s": clients.cpu_s(),
            "ticks": sysinfo.machine_ticks()}  # fmt: skip


def _calls(info: dict[str, Any]) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()
            if name.startswith("cmdstat_")}  # fmt: skip


def _figures(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    turns = last["finished"] - first["finished"]
    seconds = last["t"] - first["t"]
    before, after = redis_cpu(first["info"]), redis_cpu(last["info"])
    figures = ceiling(turns, seconds, after["main"] - before["main"], after["whole"] - before["whole"])
    figures["commands"] = probe.commands_per_turn(_calls(first["info"]), _calls(last["info"]), turns)
    figures["command_time"] = command_time(first["info"], last["info"], turns)
    total, idle = last["ticks"][0] - first["ticks"][0], last["ticks"][1] - first["ticks"][1]
    figures["machine_busy"] = round(1 - idle / total, 3) if total else None
    figures["clients_cpu_ms_per_turn"] = round((last["clients_cpu_s"] - first["clients_cpu_s"]) / turns * 1000, 3) \
        if turns else None  # fmt: skip
    figures["clients_cores"] = round((last["clients_cpu_s"] - first["clients_cpu_s"]) / seconds, 2)
    figures["redis_proc_cores_from_proc"] = round((last["redis_proc_cpu_s"] - first["redis_proc_cpu_s"]) / seconds, 3)
    return figures


def _latency(done: dict[int, Any]) -> dict[str, Any]:
    merged: dict[str, list[float]] = {}
    for payload in done.values():
        for kind, values in payload["samples"].items():
            merged.setdefault(kind, []).extend(values)
    return {kind: percentiles(values) for kind, values in sorted(merged.items())}


def _turn_errors(done: dict[int, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for payload in done.values():
        for name, count in payload["turn_errors"].items():
            total[name] = total.get(name, 0) + count
    return total


def run_phase(args: argparse.Namespace, phase: Phase, root: Path) -> dict[str, Any]:
    server = RedisServer(dir=root / phase.name, die_with_parent=True)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    clients = _Clients(args, _config(args, phase, server.url))
    try:
        _setup(server.url)
        say(f"bench redis-ceiling: phase {phase.name}: {args.processes} processes x {args.in_flight} turns; "
            f"warm-up {args.warmup:g} s, measured {args.seconds:g} s")  # fmt: skip
        clients.start()
        clients.flag.value = WARMUP
        time.sleep(args.warmup)
        clients.flag.value = MEASURING
        first = _window(server, client, clients)
        time.sleep(args.seconds)
        last = _window(server, client, clients)
        done = clients.finish()
        figures = _figures(first, last)
        persistence = client.info("persistence")
        memory = client.info("memory")
        return {
            "phase": phase.name, "title": phase.title, "rq_worker": phase.rq, "batch": phase.batch, **figures,
            "latency_ms": _latency(done), "errors": [p["error"] for p in done.values() if p["error"]],
            "turn_errors": _turn_errors(done),
            "aof_rewrites": int(persistence.get("aof_rewrites", 0)),
            "redis_used_memory_mib": round(int(memory["used_memory"]) / 2**20, 1),
        }  # fmt: skip
    finally:
        clients.close()
        client.close()
        server.stop()


# -- the step profile -------------------------------------------------------------------------


class Profiler:
    """Brackets each step with `INFO cpu commandstats`: its commands, their execution time and the Redis
    main thread's CPU, less what an empty bracket costs (measured first)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.steps: dict[str, dict[str, Any]] = {}
        self.baseline_s = self._baseline()

    def _baseline(self, reps: int = 200) -> float:
        spent = []
        for _ in range(reps):
            before = redis_cpu(_info(self.client))["main"]
            spent.append(redis_cpu(_info(self.client))["main"] - before)
        return statistics.fmean(spent)

    def _record(self, kind: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        step = self.steps.setdefault(kind, {"calls": 0, "cpu_s": 0.0, "commands": {}, "usec": {}})
        step["calls"] += 1
        step["cpu_s"] += redis_cpu(after)["main"] - redis_cpu(before)["main"] - self.baseline_s
        for name, stats in after.items():
            if not name.startswith("cmdstat_") or name == "cmdstat_info":
                continue
            old = before.get(name, {"calls": 0, "usec": 0})
            calls = int(stats["calls"]) - int(old["calls"])
            if calls:
                short = name.removeprefix("cmdstat_")
                step["commands"][short] = step["commands"].get(short, 0) + calls
                step["usec"][short] = step["usec"].get(short, 0) + int(stats["usec"]) - int(old["usec"])

    def run(self, kind: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        before = _info(self.client)
        result = call(*args, **kwargs)
        self._record(kind, before, _info(self.client))
        return result

    async def arun(self, kind: str, call: Callable[[], Awaitable[Any]]) -> Any:
        before = _info(self.client)
        result = await call()
        self._record(kind, before, _info(self.client))
        return result

    def add(self, kind: str, started: float) -> None:
        pass

    def table(self, turns: int) -> list[dict[str, Any]]:
        rows = []
        for kind, step in self.steps.items():
            calls = step["calls"]
            script_usec = step["usec"].get("evalsha", 0) + step["usec"].get("eval", 0)
            usec = script_usec if script_usec else sum(step["usec"].values())
            commands = sum(step["commands"].values())
            rows.append({
                "step": kind, "calls_per_turn": round(calls / turns, 2),
                "commands_per_call": round(commands / calls, 1),
                "commands": {name: round(n / calls, 2) for name, n in sorted(step["commands"].items(),
                                                                              key=lambda item: -item[1])},
                "exec_usec_per_call": round(usec / calls, 1),
                "redis_cpu_usec_per_call": round(step["cpu_s"] / calls * 1e6, 1),
                "redis_cpu_usec_per_turn": round(step["cpu_s"] / turns * 1e6, 1),
            })  # fmt: skip
        return rows


async def _profile_turns(rt: Any, profiler: Profiler, turns: int, session_turns: int) -> None:
    """Turns one after the other with the same calls as the load phases; the stream is read after the commit
    (its SUBSCRIBE, its backlog to `done`, its UNSUBSCRIBE)."""
    from parley.api.deps import check_request_rate
    from parley.api.hub import EventHub
    from parley.api.service.turns import _accept
    from parley.api.streams import job_events
    from parley.shared.schema import ChatRequest
    from parley.shared.store import keys

    hub = EventHub(rt.settings)
    await hub.start()
    await asyncio.wait_for(hub.connected.wait(), 10)
    web = SimpleNamespace(settings=rt.settings, hub=hub)
    session_id: str | None = None

    async def follow(job_id: str) -> None:
        async for _ in job_events(hub, TENANT, job_id, None, ping_s=rt.settings.sse_ping_s):
            pass

    try:
        for turn in range(turns):
            if turn % session_turns == 0:
                session_id = None
            await profiler.arun("web: request-rate check", functools.partial(check_request_rate, web, TENANT))
            body = ChatRequest(message=_message(0, turn), agent=AGENT["name"], session_id=session_id)
            accepted = profiler.run("web: accept (agent, rq job, ACCEPT_TURN)", _accept, rt, TENANT, body, None,
                                    API_KEY, None)  # fmt: skip
            session_id = accepted.session_id
            rt.clients.text.lrem(keys.rq_queue(rt.settings.queue_name), 0, accepted.job_id)  # not a step: no worker
            await worker_turn(TENANT, accepted.job_id, rt=rt)
            await profiler.arun("web: stream to `done` (SUBSCRIBE, XRANGE, UNSUBSCRIBE)",
                                functools.partial(follow, accepted.job_id))  # fmt: skip
    finally:
        await hub.stop()
        await rt.provider.aclose()
        await rt.aio.aclose()
        rt.threads.shutdown(wait=False, cancel_futures=True)


def run_profile(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    server = RedisServer(dir=root / "profile", die_with_parent=True)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        _setup(server.url)
        say(f"bench redis-ceiling: step profile, {args.profile_turns} turns one after the other")
        config = _config(args, PHASES["real"], server.url)
        saved = dict(os.environ)
        try:
            profiler = Profiler(client)
            rt = _bench_runtime(config, profiler, inline_watch=True)
            asyncio.run(_profile_turns(rt, profiler, args.profile_turns, args.session_turns))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        rows = profiler.table(args.profile_turns)
        return {"turns": args.profile_turns, "batch": config["batch"], "steps": rows,
                "info_bracket_cpu_usec": round(profiler.baseline_s * 1e6, 1),
                "commands_per_turn": round(sum(r["commands_per_call"] * r["calls_per_turn"] for r in rows), 1),
                "redis_cpu_usec_per_turn": round(sum(r["redis_cpu_usec_per_turn"] for r in rows), 1)}  # fmt: skip
    finally:
        client.close()
        server.stop()


# -- the command ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "kind": "redis-ceiling", "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": args.command, "options": args.options, "code": sysinfo.git_state(),
        "machine_busy_before": round(sysinfo.machine_busy(2.0), 3), "phases": [],
    }  # fmt: skip
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="parley-ceiling-"))
    version_server = RedisServer(dir=root / "version", die_with_parent=True)
    results["machine"] = sysinfo.machine("?", str(version_server.binary))
    try:
        for name in args.phases.split(","):
            results["phases"].append(run_phase(args, PHASES[name], root))
        if args.profile_turns > 0:
            results["profile"] = run_profile(args, root)
    finally:
        if not args.keep_logs:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"bench redis-ceiling: Redis directories kept in {root}")
    results["machine"]["redis_server"] = _redis_version(version_server)
    results["duration_s"] = round(time.perf_counter() - began, 1)
    results["ok"] = all(not phase["errors"] and not phase["turn_errors"] and phase["turns"] > 0
                        for phase in results["phases"])
    return results


def _redis_version(server: RedisServer) -> str:
    import subprocess

    try:
        done = subprocess.run([str(server.binary), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return next((part.removeprefix("v=") for part in done.stdout.split() if part.startswith("v=")), "?")
