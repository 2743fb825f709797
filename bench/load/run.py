"""`python -m bench load`: many turns in flight against a slow model, a drain under that load, rq's
WorkerPool for comparison, and idle SSE streams on one web process. Prints a markdown report and
writes every figure to bench/load_results.json. docs/benchmarks.md ("Load") explains each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from .. import sysinfo
from ..measure import AGENT, CpuMeter
from ..stack import API_KEY, Stack, raise_fd_limit
from . import clients, probe

QUEUE = "parley-turns"
"""PARLEY_QUEUE's default, which the benchmark does not change."""
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "load_results.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--webs", type=int, default=2, help="web processes serving the turns")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=100, help="PARLEY_WORKER_CONCURRENCY of each worker")
    parser.add_argument("--clients", type=int, default=200, help="concurrent streaming clients")
    parser.add_argument("--rounds", type=int, default=3, help="turns per client in the load phase")
    parser.add_argument("--model-ms", type=float, default=5000, help="how long each model answer takes")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per model answer")
    parser.add_argument("--drain-grace-s", type=float, default=2.0,
                        help="PARLEY_DRAIN_GRACE_S of the workers SIGTERMed in the drain phase")  # fmt: skip
    parser.add_argument("--pool-workers", type=int, default=20, help="SimpleWorkers in rq's WorkerPool (0: skip)")
    parser.add_argument("--idle-streams", type=int, default=10_000, help="idle SSE streams on one web (0: skip)")
    parser.add_argument("--idle-hold-s", type=float, default=20.0, help="how long the idle streams are held")
    parser.add_argument("--sse-ping-s", type=float, default=15.0,
                        help="PARLEY_SSE_PING_S of the idle-streams web (15: the default)")  # fmt: skip
    parser.add_argument("--burst", action="store_true",
                        help="start every client in the same instant (default: spread over one answer's time)")
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--skip-load", action="store_true", help="skip the model-alone and load phases")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run of every phase")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)


def finish_arguments(args: argparse.Namespace) -> None:
    if args.quick:
        args.clients, args.rounds, args.concurrency = 20, 1, 10
        args.pool_workers, args.idle_streams, args.idle_hold_s, args.sse_ping_s = 4, 300, 6.0, 5.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _group_pids(stack: Stack, procs: list[Any]) -> dict[str, int]:
    return {proc.name: stack.pid(proc) for proc in procs}


def _stagger_s(args: argparse.Namespace) -> float:
    """Clients start spread over half an answer's time: all of them overlap for the other half."""
    return 0.0 if args.burst else args.model_ms / 1000 / 2


def _service_pids(stack: Stack) -> dict[str, int]:
    found = {"model-server": stack.pid(stack.model)}
    if stack.redis is not None and stack.redis.pid:
        found["redis"] = stack.redis.pid
    return found


def _cpu_report(cpu: CpuMeter, elapsed_s: float, turns: int) -> dict[str, Any]:
    """CPU ms per finished turn by process, how busy the machine was, and how much of it was not us."""
    return {
        "ms_per_turn": {name: round(seconds * 1000 / max(turns, 1), 2) for name, seconds in cpu.used.items()},
        "cores_used": {name: round(seconds / elapsed_s, 2) for name, seconds in cpu.used.items()},
        "machine_busy": round(cpu.machine_busy, 3), "other_work_cores": round(cpu.other_cores(elapsed_s), 2),
    }  # fmt: skip


def load_phase(stack: Stack, args: argparse.Namespace, first_chunk_s: float) -> dict[str, Any]:
    """`clients` streamed turns at once, `rounds` each, on `workers` processes of `concurrency` turns."""
    workers = stack.start_workers(args.workers, {"PARLEY_WORKER_CONCURRENCY": str(args.concurrency)})
    urls = [str(web.url) for web in stack.webs]
    asyncio.run(clients.stream_turns(urls, stack.headers, min(10, args.clients), 1, 60, "warmup"))
    before = probe.command_counts(stack.redis_url)
    worker_pids, web_pids = _group_pids(stack, workers), _group_pids(stack, stack.webs)
    cpu = CpuMeter({**worker_pids, **web_pids, **_service_pids(stack)})
    cpu.start()
    with probe.MemorySampler(worker_pids) as worker_memory, probe.MemorySampler(web_pids) as web_memory, \
            probe.ModelGauge(stack.model) as gauge, probe.RunningGauge(stack.redis_url, QUEUE) as running:  # fmt: skip
        run = asyncio.run(clients.stream_turns(urls, stack.headers, args.clients, args.rounds, 120, "load",
                                               stagger_s=_stagger_s(args)))
    cpu.stop()
    after = probe.command_counts(stack.redis_url)
    report = run.report(first_chunk_s)
    return {
        "cpu": _cpu_report(cpu, run.elapsed_s, report["finished"]),
        "workers": args.workers, "concurrency": args.concurrency, "webs": len(stack.webs), "clients": args.clients,
        "rounds": args.rounds, "clients_start_spread_over_s": _stagger_s(args), **report,
        "peak_model_calls_at_once": gauge.peak, "peak_turns_running_at_once": running.peak,
        "worker_memory": worker_memory.result(), "web_memory": web_memory.result(),
        "redis_commands": probe.commands_per_turn(before, after, report["finished"], {"zcard": running.samples}),
    }  # fmt: skip


def drain_phase(stack: Stack, args: argparse.Namespace, first_chunk_s: float) -> dict[str, Any]:
    """The same load; while every client has a turn in flight, new workers start and every old one gets SIGTERM."""
    extra = {"PARLEY_WORKER_CONCURRENCY": str(args.concurrency), "PARLEY_DRAIN_GRACE_S": str(args.drain_grace_s)}
    old = stack.start_workers(args.workers, extra)
    urls = [str(web.url) for web in stack.webs]
    exits: dict[str, Any] = {}

    async def run() -> clients.LoadRun:
        progress = clients.LoadRun()
        load = asyncio.create_task(clients.stream_turns(urls, stack.headers, args.clients, 2, 120, "drain",
                                                        stagger_s=_stagger_s(args), run=progress))
        deadline = time.monotonic() + 60  # until every client's first turn has streamed its first delta
        while time.monotonic() < deadline and \
                sum(1 for turn in progress.turns if turn.first_delta_s is not None) < args.clients:  # fmt: skip
            await asyncio.sleep(0.05)
        new = await asyncio.to_thread(stack.start_workers, args.workers, extra)
        exits["in_flight_at_sigterm"] = stack.model.control("stats")["open_streams"]
        exits["turns_done_before_sigterm"] = sum(1 for turn in progress.turns if turn.done_s is not None)
        exits["replacements"] = [proc.name for proc in new]
        signalled = time.monotonic()
        for proc in old:
            proc.send_signal(signal.SIGTERM)

        def wait_old() -> None:
            for proc in old:
                code = proc.wait(60)
                exits[proc.name] = {"exit_code": code, "exited_after_s": round(time.monotonic() - signalled, 2)}

        await asyncio.to_thread(wait_old)
        return await load

    result = asyncio.run(run())
    for proc in old:
        stack.stop(proc, timeout=5)
    client = redis.Redis.from_url(stack.redis_url)
    try:
        failed_registry = int(client.zcard(f"rq:failed:{QUEUE}"))
    finally:
        client.close()
    return {"drain_grace_s": args.drain_grace_s, "sigterm": exits, **result.report(first_chunk_s),
            "rq_failed_registry": failed_registry}  # fmt: skip


def pool_phase(stack: Stack, args: argparse.Namespace, first_chunk_s: float) -> dict[str, Any]:
    """rq's WorkerPool of one-at-a-time SimpleWorkers, every worker holding one turn."""
    pool = stack.start_pool(args.pool_workers)
    pool_pid = stack.pid(pool)
    pids = {"pool": pool_pid, **{f"pool-worker.{i + 1}": pid for i, pid in enumerate(sysinfo.children(pool_pid))}}
    urls = [str(web.url) for web in stack.webs]
    with probe.MemorySampler(pids) as memory, probe.ModelGauge(stack.model) as gauge:
        run = asyncio.run(clients.stream_turns(urls, stack.headers, args.pool_workers, 2, 120, "pool",
                                               stagger_s=_stagger_s(args)))
    stack.stop(pool, timeout=30)
    return {"workers": args.pool_workers, "clients": args.pool_workers, "rounds": 2, **run.report(first_chunk_s),
            "peak_model_calls_at_once": gauge.peak, "memory": memory.result()}  # fmt: skip


def idle_phase(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """`idle_streams` SSE streams of queued turns (no worker runs: they stay open, with pings) on one web."""
    web = stack.start_web({"PARLEY_SSE_PING_S": str(args.sse_ping_s), "PARLEY_MAX_QUEUE_DEPTH": "100000"})
    others = [str(w.url) for w in stack.webs if w is not web]
    pid = stack.pid(web)
    sessions = max(1, args.idle_streams // 100)

    async def create_jobs() -> list[str]:
        ids: list[str] = []
        numbers = iter(range(args.idle_streams))
        async with httpx.AsyncClient(headers=stack.headers, timeout=30) as http:
            async def creator(slot: int) -> None:
                for index in numbers:
                    body = {"message": f"idle {index}", "session_id": f"idle-{index % sessions}"}
                    response = await http.post(f"{others[slot % len(others)]}/api/v1/chat/jobs", json=body)
                    response.raise_for_status()
                    ids.append(response.json()["job_id"])
            await asyncio.gather(*(creator(slot) for slot in range(32)))
        return ids

    async def hold(job_ids: list[str]) -> dict[str, Any]:
        warm, _, _ = await clients.open_idle_streams(str(web.url), API_KEY, job_ids[:200])
        clients.close_idle_streams(warm)  # the web's first streams allocate what later ones reuse
        await asyncio.sleep(2)
        rss_before, pss_before = probe.rss_kb(pid), probe.pss_kb(pid) or 0
        streams, errors, open_s = await clients.open_idle_streams(str(web.url), API_KEY, job_ids)
        readers = [asyncio.create_task(clients.read_idle_stream(stream)) for stream in streams]
        cpu_before = sysinfo.cpu_seconds(pid) or 0.0
        await asyncio.sleep(args.idle_hold_s)
        cpu_used = (sysinfo.cpu_seconds(pid) or 0.0) - cpu_before
        rss_after, pss_after = probe.rss_kb(pid), probe.pss_kb(pid) or 0
        pubsub = _pubsub_connections(stack.redis_url)
        open_now = sum(1 for stream in streams if not stream.closed)
        pinged = sum(1 for stream in streams if stream.pings > 0)
        for reader in readers:
            reader.cancel()
        clients.close_idle_streams(streams)
        await asyncio.gather(*readers, return_exceptions=True)
        return {
            "requested": len(job_ids), "opened": len(streams), "open_errors": dict(errors),
            "open_seconds": round(open_s, 1), "held_s": args.idle_hold_s, "still_open_after_hold": open_now,
            "streams_with_a_ping": pinged, "ping_interval_s": args.sse_ping_s,
            "web_rss_mib_before": round(rss_before / 1024, 1), "web_rss_mib_with_streams": round(rss_after / 1024, 1),
            "rss_kib_per_stream": round((rss_after - rss_before) / max(len(streams), 1), 2),
            "pss_kib_per_stream": round((pss_after - pss_before) / max(len(streams), 1), 2),
            "web_threads": probe.threads(pid), "web_cpu_s_while_held": round(cpu_used, 2),
            "pubsub_connections": pubsub,
        }  # fmt: skip

    began = time.perf_counter()
    job_ids = asyncio.run(create_jobs())
    created_s = time.perf_counter() - began
    result = asyncio.run(hold(job_ids))
    ended = [line.split("stream ended: ", 1)[1] for line in web.read_log().splitlines() if "stream ended: " in line]
    return {"jobs_created_s": round(created_s, 1), **result,
            "streams_ended_by_the_web": dict(Counter(ended))}  # fmt: skip


def _pubsub_connections(redis_url: str) -> list[dict[str, int]]:
    """Every client connection of Redis in pub/sub mode with more than one channel: (channels, memory)."""
    client = redis.Redis.from_url(redis_url)
    try:
        found = []
        for entry in client.client_list():
            channels = int(entry.get("sub", 0)) + int(entry.get("psub", 0))
            if channels > 1:
                found.append({"channels": channels, "output_buffer_bytes": int(entry.get("omem", 0))})
        return found
    finally:
        client.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": args.command, "options": args.options,
        "code": sysinfo.git_state(), "fd_limit": raise_fd_limit(), "machine_busy_before": sysinfo.machine_busy(2.0),
    }  # fmt: skip
    stack = Stack(keep_logs=args.keep_logs)
    began = time.perf_counter()
    try:
        say(f"bench load: starting Redis, the model server and {args.webs} web(s) (logs in {stack.log_dir})")
        stack.start()
        for _ in range(args.webs - 1):
            stack.start_web()
        assert stack.redis is not None
        results["machine"] = sysinfo.machine(stack.redis_version, str(stack.redis.binary))
        step_ms = args.model_ms / args.chunks
        model_options = {"first_chunk_delay_ms": step_ms, "chunk_delay_ms": step_ms, "chunks": args.chunks}
        stack.model.control("options", model_options)
        results["model"] = {**model_options, "answer_ms": args.model_ms}
        first_chunk_s = step_ms / 1000
        with httpx.Client(headers=stack.headers, timeout=30) as http:
            http.post(f"{stack.webs[0].url}/api/v1/agents", json=AGENT).raise_for_status()

        if not args.skip_load:
            say(f"bench load: 1/5 the model alone, {args.clients} streams at once")
            results["model_direct"] = asyncio.run(clients.model_streams(stack.model.base_url, args.clients, 60))
            say(f"bench load: 2/5 {args.clients} clients x {args.rounds} streamed turns, {args.workers} workers "
                f"x {args.concurrency} turns")  # fmt: skip
            results["load"] = load_phase(stack, args, first_chunk_s)
            for proc in list(stack.workers):
                stack.stop(proc)

        if not args.skip_drain:
            say(f"bench load: 3/5 drain: SIGTERM to every worker with {args.clients} turns in flight")
            results["drain"] = drain_phase(stack, args, first_chunk_s)
            for proc in list(stack.workers):
                stack.stop(proc)

        if args.pool_workers:
            say(f"bench load: 4/5 rq WorkerPool of {args.pool_workers} SimpleWorkers, one turn each")
            results["pool"] = pool_phase(stack, args, first_chunk_s)

        if args.idle_streams:
            say(f"bench load: 5/5 {args.idle_streams} idle SSE streams on one web process")
            results["idle"] = idle_phase(stack, args)
    finally:
        stack.close()
        results["duration_s"] = round(time.perf_counter() - began, 1)
    return results
