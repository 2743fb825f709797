"""``python -m bench turn`` (the default: ``python -m bench``): a turn's latency, streaming, throughput.

Starts Parley from scratch, measures it, prints a table, writes bench/results.json.

    make bench                          # .venv/bin/python -m bench
    python -m bench --quick             # smaller counts: a smoke run of every measurement
    python -m bench --profile           # also py-spy profiles of web and workers (summaries in the results)

What runs: a fresh Redis on a free port, tests/model_server.py (the scripted OpenAI-compatible
model), bench/timed_model.py (for the first-chunk timing), and web and worker processes from
the Procfile via tests/harness.py with PARLEY_LLM=openai, OPENAI_BASE_URL=<model>/v1,
OPENAI_API_KEY=x, PARLEY_API_KEYS=bench:key-bench, PARLEY_LOG_LEVEL=WARNING.  Everything talks
over 127.0.0.1 only and is stopped on exit, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import measure, sysinfo, trace
from .rq_compare import compare as rq_compare
from .stack import Stack

RESULTS = Path(__file__).resolve().parent / "results.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run (about 1 minute)")
    parser.add_argument("-n", "--requests", type=int, default=None, help="sequential requests measured (300)")
    parser.add_argument("--warmup", type=int, default=None, help="sequential requests before measuring (20)")
    parser.add_argument("--stream-requests", type=int, default=None, help="streamed turns measured (300)")
    parser.add_argument("--turns", type=int, default=None, help="turns per throughput run, zero-latency model (600)")
    parser.add_argument("--slow-turns", type=int, default=None, help="turns per throughput run, slow model (120)")
    parser.add_argument("--slow-ms", type=float, default=200.0, help="the slow model's time to answer, ms (200)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients in throughput runs (32)")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per model answer (8)")
    parser.add_argument("--rq-jobs", type=int, default=None, help="no-op jobs per RQ worker class (500)")
    parser.add_argument("--skip-rq", action="store_true", help="skip the RQ worker-class comparison")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, profile web and workers with py-spy (needs py-spy on PATH)")  # fmt: skip
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-dir", type=Path, default=None,
                        help="where py-spy's collapsed stacks go (default /tmp/parley-bench-profiles)")  # fmt: skip
    parser.add_argument("--trace-turns", type=int, default=None, help="turns traced with Redis MONITOR (20)")
    parser.add_argument("--wait-quiet", type=float, default=60.0,
                        help="wait up to this many seconds for other load on the machine to drop (60)")  # fmt: skip
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")


def finish_arguments(args: argparse.Namespace) -> None:
    """The counts not given: the full run's, or the smaller ones of ``--quick``."""
    quick = args.quick
    defaults = {"requests": (300, 40), "warmup": (20, 5), "stream_requests": (300, 40), "turns": (600, 100),
                "slow_turns": (120, 24), "rq_jobs": (500, 100), "trace_turns": (20, 5)}  # fmt: skip
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def wait_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (at most `limit_s`) until the machine is less than `threshold` busy; the last reading."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = sysinfo.machine_busy(2.0)
        if busy < threshold or time.monotonic() >= deadline:
            break
        say(f"bench: the machine is {busy:.0%} busy with other work; waiting for it to calm down")
    if busy >= threshold:
        say(f"bench: warning: measuring while the machine is {busy:.0%} busy with other work")
    return busy


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": args.command,
        "options": args.options,
    }
    results["code"] = sysinfo.git_state()
    results["background_busy_before"] = wait_quiet(args.wait_quiet)
    stack = Stack(timed_model=True, keep_logs=args.keep_logs)
    began = time.perf_counter()
    try:
        say(f"bench: starting Redis, model servers and web (logs in {stack.log_dir})")
        stack.start()
        assert stack.model is not None and stack.timed is not None and stack.redis is not None
        results["machine"] = sysinfo.machine(stack.redis_version, str(stack.redis.binary))
        model_options = {"chunk_delay_ms": 0, "first_chunk_delay_ms": 0, "chunks": args.chunks}
        stack.model.control("options", model_options)
        stack.set_workers(1, purpose="sequential latency")
        results["processes"] = stack.describe_pids()
        headers = stack.headers
        with measure.sync_client() as client:
            measure.create_agent(client, stack.base_url, headers)

            # 1. sequential latency: Parley's /chat against the model server on its own.
            say(f"bench: 1/5 POST /api/v1/chat, {args.requests} sequential requests (+{args.warmup} warm-up)")
            latency: dict[str, Any] = {"model_options": model_options, "sessions": "a new session per request"}
            pids = stack.processes()
            latency["chat"] = measure.metered(pids, lambda: measure.chat_latency(
                client, stack.base_url, headers, args.requests, args.warmup))  # fmt: skip
            latency["model_direct"] = measure.model_latency(client, stack.model.base_url, args.requests,
                                                            args.warmup, stream=False)  # fmt: skip
            latency["model_direct_stream"] = measure.model_latency(client, stack.model.base_url, args.requests,
                                                                   args.warmup, stream=True)  # fmt: skip
            latency["model_via_provider"] = measure.provider_latency(stack.model.base_url, args.requests, args.warmup)
            latency["sdk_transform_ms_by_messages"] = measure.sdk_transform_cost()
            results["latency"] = latency

        say(f"bench: 1/5 anatomy of a turn: {args.trace_turns} sequential turns under Redis MONITOR")
        results["trace"] = trace.trace_turns(stack.base_url, headers, stack.redis.url, stack.processes(),
                                             turns=args.trace_turns)  # fmt: skip

        # 3. throughput with 1 and 2 workers, zero-latency and slow model; the model on its own.
        throughput: dict[str, Any] = {
            "concurrency": args.concurrency, "endpoint": "POST /api/v1/chat",
            "sessions": "one session per client, reused for all its turns", "runs": [],
        }  # fmt: skip
        results["throughput"] = throughput
        slow_options = {"chunk_delay_ms": 0, "first_chunk_delay_ms": args.slow_ms, "chunks": args.chunks}
        timeout_s = 240.0
        for workers in (1, 2):
            stack.set_workers(workers, purpose=f"throughput with {workers}")
            for label, options, turns in (("zero-latency", model_options, args.turns),
                                          (f"{args.slow_ms:g} ms", slow_options, args.slow_turns)):  # fmt: skip
                say(f"bench: 2/5 throughput, {workers} worker(s), {label} model: {turns} turns, "
                    f"{args.concurrency} clients")  # fmt: skip
                stack.model.control("options", options)
                figures = measure.chat_throughput(stack.base_url, headers, turns, args.concurrency,
                                                  stack.processes(), timeout_s)  # fmt: skip
                throughput["runs"].append({"system": "parley", "workers": workers, "model": label, **figures})
            stack.record_peaks()
        for label, options, turns in (("zero-latency", model_options, args.turns),
                                      (f"{args.slow_ms:g} ms", slow_options, args.slow_turns)):  # fmt: skip
            say(f"bench: 3/5 throughput of the model server alone, {label}: {turns} requests")
            stack.model.control("options", options)
            for stream in (False, True):
                figures = measure.model_throughput(stack.model.base_url, turns, args.concurrency,
                                                   {"model-server": stack.processes()["model-server"]},
                                                   timeout_s, stream=stream)  # fmt: skip
                system = "model server direct" + (", stream" if stream else "")
                throughput["runs"].append({"system": system, "workers": 0, "model": label, **figures})
        stack.model.control("options", model_options)

        # 2. streaming: workers now talk to bench/timed_model.py.
        say(f"bench: 4/5 POST /api/v1/chat/stream, {args.stream_requests} sequential turns (+{args.warmup} warm-up)")
        stack.set_workers(1, model_base_url=f"{stack.timed.url}/v1", purpose="streaming")
        with measure.sync_client() as client:
            streaming = measure.metered(stack.processes(), lambda: measure.stream_latency(
                client, stack.base_url, headers, args.stream_requests, args.warmup))  # fmt: skip
        streaming["model"] = "bench/timed_model.py, first_chunk_delay_ms=0"
        streaming["sessions"] = "a new session per request"
        results["streaming"] = streaming

        # 4. RQ worker classes, against the same Redis.
        if not args.skip_rq:
            say(f"bench: 5/5 RQ Worker (fork) vs SimpleWorker vs the engine, {args.rq_jobs} no-op jobs each")
            results["rq_workers"] = rq_compare(stack.redis.url, args.rq_jobs)

        if args.profile:
            from .profile import profile_stack

            say("bench: profiling web and workers with py-spy")
            results["profiles"] = profile_stack(stack, args)

        stack.record_peaks()
        results["peak_rss_kb"] = dict(stack.peak_rss_kb)
        results["worker_purposes"] = dict(stack.purposes)
    finally:
        stack.close()
        results["duration_s"] = round(time.perf_counter() - began, 1)
    return results
