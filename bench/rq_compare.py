"""RQ's forking ``Worker`` against ``SimpleWorker`` (and Parley's worker ``engine``): cost per job.

Each worker class runs in its own fresh process (``python -m bench rq-compare --worker ...``) so a fork
copies only what a worker process really holds.  The process enqueues ``--jobs`` no-op jobs on
its own queue, then times the worker in burst mode, which dequeues and runs them all and returns when
the queue is empty: ``worker.work(burst=True)`` for rq's classes; for ``engine``, worker/engine.py's
``Engine`` over worker/rq_side.py's ``RqSide`` (as worker/__main__.py's ``make_engine`` builds it, at
``PARLEY_WORKER_CONCURRENCY``'s default) with ``burst=True``, on an event loop as in ``worker`` (uvloop).
Time per job = that time / jobs: everything RQ does around a job (dequeue, bookkeeping in Redis, and
for ``Worker`` the fork and wait of a work horse; for ``engine`` its dequeue thread, its rq bookkeeping
thread and the hop to its pool, where a sync job function runs). The engine's time ends with its last
job's end: its burst mode then still waits out one empty dequeue (``DEQUEUE_WAIT_S``) before it leaves,
which is no job's cost. (Until issue 13 the third class was the threaded ``TurnWorker``.)

    python -m bench rq-compare --redis-url redis://127.0.0.1:6379/0 --worker simple --jobs 500   # one class, once
    python -m bench rq-compare --jobs 500      # every class, 3 interleaved rounds, on a fresh Redis (as in `turn`)
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_CLASSES = ("fork", "simple", "engine")


def noop() -> None:
    """The job: nothing, so the figure is RQ's own cost per job."""


def _worker_class(kind: str) -> type:
    if kind == "fork":
        from rq import Worker

        return Worker
    from rq import SimpleWorker

    return SimpleWorker


def run_one(redis_url: str, kind: str, jobs: int) -> dict[str, Any]:
    import redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    connection = redis.Redis.from_url(redis_url)
    queue = Queue(f"bench-rq-{kind}-{uuid.uuid4().hex[:8]}", connection=connection)
    started = time.perf_counter()
    queue.enqueue_many([Queue.prepare_data(noop, result_ttl=60) for _ in range(jobs)])
    enqueue_s = time.perf_counter() - started
    if kind == "engine":
        name, work_s = _run_engine(queue, connection)
    else:
        worker = _worker_class(kind)([queue], connection=connection)
        name = f"{type(worker).__module__}.{type(worker).__name__}"
        started = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")
        work_s = time.perf_counter() - started
    finished = FinishedJobRegistry(queue=queue).count
    return {
        "worker": kind, "class": name, "jobs": jobs, "finished": finished, "work_s": work_s,
        "per_job_ms": work_s / jobs * 1000, "enqueue_per_job_ms": enqueue_s / jobs * 1000,
    }  # fmt: skip


def _run_engine(queue: Any, connection: Any) -> tuple[str, float]:
    """The engine in burst mode over `queue`: its class name and the seconds from its start to its last job's end."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from parley.shared.settings import Settings
    from parley.worker.__main__ import _loop_factory
    from parley.worker.engine import Engine
    from parley.worker.rq_side import RqSide
    from parley.worker.runtime import SYNC_THREADS

    ended: list[float] = []

    class TimedSide(RqSide):
        def end(self, *args: Any, **kwargs: Any) -> None:
            super().end(*args, **kwargs)
            ended.append(time.perf_counter())

    side = TimedSide([queue], connection=connection)
    threads = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="sync")
    fields = Settings.model_fields
    engine = Engine(side, concurrency=fields["worker_concurrency"].default, threads=threads, burst=True,
                    drain_grace_s=fields["drain_grace_s"].default)  # fmt: skip
    started = time.perf_counter()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(engine.run(logging_level="WARNING"))
    threads.shutdown()
    last = max(ended) if ended else time.perf_counter()
    return f"{type(engine).__module__}.{type(engine).__name__}", last - started


def thread_cycle_ms(cycles: int = 500) -> float:
    """Cost of the heartbeat pattern alone: start a thread waiting on an Event, set it, join it."""
    import threading

    started = time.perf_counter()
    for _ in range(cycles):
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait, args=(10.0,), daemon=True)
        thread.start()
        stop.set()
        thread.join()
    return (time.perf_counter() - started) / cycles * 1000


def compare(redis_url: str, jobs: int, rounds: int = 3, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Each worker class `rounds` times, interleaved, each in a fresh subprocess; median per class.

    Interleaving spreads any other load on the machine over all classes alike.
    """
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in WORKER_CLASSES}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="parley-rq-compare-") as scratch:
        for index in range(rounds):
            for kind in WORKER_CLASSES:
                output = Path(scratch) / f"{kind}-{index}.json"
                completed = subprocess.run(
                    [sys.executable, "-m", "bench", "rq-compare", "--redis-url", redis_url, "--worker", kind,
                     "--jobs", str(jobs), "--output", str(output)],
                    cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False,
                )  # fmt: skip
                if completed.returncode != 0 or not output.exists():
                    errors[kind] = (completed.stderr.strip().splitlines() or ["failed"])[-1]
                    continue
                runs[kind].append(json.loads(output.read_text(encoding="utf-8"))["rq_workers"][0])
    results = []
    for kind in WORKER_CLASSES:
        if not runs[kind]:
            results.append({"worker": kind, "error": errors.get(kind, "no run")})
            continue
        per_job = sorted(run["per_job_ms"] for run in runs[kind])
        first = runs[kind][0]
        results.append({
            "worker": kind, "class": first["class"], "jobs": jobs, "rounds": len(per_job),
            "finished": min(run["finished"] for run in runs[kind]), "per_job_ms": per_job[len(per_job) // 2],
            "per_job_ms_all": [round(value, 3) for value in per_job],
        })  # fmt: skip
    results.append({"worker": "thread", "class": "threading.Thread start + Event.set + join (heartbeat pattern)",
                    "jobs": 500, "rounds": 1, "finished": 500, "per_job_ms": thread_cycle_ms(),
                    "per_job_ms_all": []})  # fmt: skip
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help="the Redis to use (default: start a fresh one)")
    parser.add_argument("--worker", choices=WORKER_CLASSES, default=None,
                        help="run this class once, in this process (default: every class, each in a subprocess)")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds without --worker (3)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """``rq_workers``: one row (``--worker``) or the comparison's rows, as ``python -m bench turn`` records them."""
    results: dict[str, Any] = {"command": args.command, "options": args.options}
    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        if not args.redis_url:
            raise SystemExit("bench rq-compare: --worker needs --redis-url")
        results["rq_workers"] = [run_one(args.redis_url, args.worker, args.jobs)]
        return results
    from parley.local.redis_server import RedisServer

    server = None
    try:
        url = args.redis_url
        if not url:
            server = RedisServer(dir=Path(tempfile.mkdtemp(prefix="parley-rq-compare-")), die_with_parent=True)
            url = server.start().url
        results["rq_workers"] = compare(url, args.jobs, rounds=args.rounds)
    finally:
        if server is not None:
            server.stop()
    return results
