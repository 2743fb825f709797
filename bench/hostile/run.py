"""``python -m bench hostile``: does one hostile tenant slow the other tenants of a worker down?

Issue 11's "done when": a worker running a hostile tenant's turn and 20 other tenants' turns at once finishes
the others at their normal latency. This starts Redis, bench/hostile/model.py (the model, and a compression
bomb), one web and ONE worker process (the Procfile's commands, through tests/harness.py), 21 tenants with
their own keys and agents, and measures two phases, each on a fresh worker:

1. ``quiet``: 20 ordinary tenants, each sending ``--turns`` sequential turns (``POST /api/v1/chat``, one
   session per tenant) that the model answers in ``--answer-ms``;
2. ``hostile``: the same, while a 21st tenant keeps its worst turns running: ``--regex-turns`` turns at once
   of an agent whose response_shape has the pattern ``^(a+)+$`` that the model answers with ``n`` ``a`` and a
   ``!`` (``--regex-chars``; a backtracking engine takes about 2**n steps, and Python's ``re`` holds the GIL
   all along), and ``--fetch-turns`` turns at once that make ``http_get`` fetch a ``gzip, gzip`` bomb
   (``--bomb-mib`` MiB of zeros) from the model server (the worker runs with PARLEY_HTTP_GET_ALLOW_PRIVATE so
   it may reach 127.0.0.1). Each hostile slot sends its next turn as soon as the last one ends.

The figures: the ordinary turns' latency (p50/p90/p99/max), their errors, the hostile turns' outcomes and
times, and the worker's peak RSS, per phase. Written to bench/hostile/results.json; docs/benchmarks.md
("Hostile tenant") discusses them.

    python -m bench hostile [--turns 10] [--regex-chars 26] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from .. import sysinfo
from ..measure import AGENT, summary_ms
from ..stack import Stack

RESULTS = Path(__file__).resolve().parent / "results.json"
HOSTILE = "hostile"
PATTERN = "^(a+)+$"
REGEX_AGENT = {
    "name": "strict", "context": "Answer in the shape.", "first_message": "Ask.",
    "response_shape": {"type": "object", "required": ["answer"],
                       "properties": {"answer": {"type": "string", "pattern": PATTERN}}},
}  # fmt: skip
FETCH_AGENT = {"name": "fetcher", "context": "Fetch what you are asked.", "first_message": "Hi.", "tools": ["http_get"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenants", type=int, default=20, help="ordinary tenants (20)")
    parser.add_argument("--turns", type=int, default=10, help="sequential turns per ordinary tenant (10)")
    parser.add_argument("--answer-ms", type=float, default=200.0, help="the model's time per ordinary answer (200)")
    parser.add_argument("--regex-turns", type=int, default=2, help="hostile response-shape turns at once (2)")
    parser.add_argument("--regex-chars", type=int, default=26, help="length of the almost-matching answer (26)")
    parser.add_argument("--fetch-turns", type=int, default=1, help="hostile http_get-a-bomb turns at once (1)")
    parser.add_argument("--bomb-mib", type=int, default=100, help="MiB the bomb decompresses to (100)")
    parser.add_argument("--phase-timeout-s", type=float, default=240.0, help="a phase is cut after this (240)")
    parser.add_argument("--only", choices=("quiet", "hostile"), default=None, help="run one phase only")
    parser.add_argument("--quick", action="store_true", help="5 tenants, 3 turns each: a smoke run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")


def finish_arguments(args: argparse.Namespace) -> None:
    if args.quick:
        args.tenants, args.turns = 5, 3


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_stack(args: argparse.Namespace) -> Stack:
    """Redis, bench/hostile/model.py, one web; ``--tenants`` ordinary tenants and the hostile one, each its key."""
    ordinary = [f"tenant{i:02d}" for i in range(1, args.tenants + 1)]
    env = {
        # The bomb is served from 127.0.0.1: http_get may reach it (the older and the newer setting).
        "PARLEY_HTTP_GET_ALLOW_PRIVATE": "true", "PARLEY_PRIVATE_NETWORKS_ALLOWED": "127.0.0.1/32",
    }  # fmt: skip
    return Stack(keys={name: f"key-{name}" for name in [*ordinary, HOSTILE]}, env=env, model="hostile",
                 model_args=["--answer-ms", str(args.answer_ms), "--bomb-mib", str(args.bomb_mib)],
                 keep_logs=args.keep_logs)  # fmt: skip


def ordinary_tenants(stack: Stack) -> list[str]:
    return [tenant for tenant in stack.keys if tenant != HOSTILE]


def stop_worker(stack: Stack, worker: Any) -> float | None:
    """Stop the phase's worker; its peak RSS (VmHWM) in MiB."""
    stack.stop(worker, timeout=5)
    kb = stack.peak_rss_kb.get(worker.name)
    return round(kb / 1024, 1) if kb is not None else None


def model_counts(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(stack.model_url + "/_control/counts", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


async def _ordinary(base_url: str, key: str, tenant: str, turns: int, latencies: list[tuple[int, float]],
                    outcomes: Counter[str]) -> None:  # fmt: skip
    """One tenant's sequential turns in its session; each answered turn's wall time from request to answer."""
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=httpx.Timeout(300.0, connect=10.0)) as http:  # fmt: skip
        for index in range(turns):
            began = time.perf_counter()
            try:
                response = await http.post("/api/v1/chat", json={"message": f"{tenant} turn {index}",
                                                                 "session_id": f"{tenant}-session"})  # fmt: skip
            except httpx.HTTPError as error:
                outcomes[f"exception:{type(error).__name__}"] += 1
                continue
            if response.status_code == 200:
                latencies.append((index, time.perf_counter() - began))
            outcomes[str(response.status_code)] += 1


async def _hostile_slot(base_url: str, key: str, agent: str, message: str, slot: str, record: list[dict[str, Any]],
                        stop: asyncio.Event) -> None:  # fmt: skip
    """One hostile turn after the other, each in a new session, until `stop`."""
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=httpx.Timeout(600.0, connect=10.0)) as http:  # fmt: skip
        serial = 0
        while not stop.is_set():
            serial += 1
            began = time.perf_counter()
            body = {"agent": agent, "message": message, "session_id": f"{slot}-{serial}"}
            try:
                response = await http.post("/api/v1/chat", json=body)
                outcome = str(response.status_code)
                if response.status_code != 200:
                    outcome += ":" + str(response.json().get("error", {}).get("code"))
            except httpx.HTTPError as error:
                outcome = f"exception:{type(error).__name__}"
            except asyncio.CancelledError:
                record.append({"slot": slot, "outcome": "still running at the end", "s": time.perf_counter() - began})
                raise
            record.append({"slot": slot, "outcome": outcome, "s": round(time.perf_counter() - began, 3)})


async def _phase(stack: Stack, args: argparse.Namespace, hostile: bool) -> dict[str, Any]:
    """One warm-up turn per tenant on the fresh worker (not measured), then the measured turns."""
    latencies: list[tuple[int, float]] = []
    outcomes: Counter[str] = Counter()
    record: list[dict[str, Any]] = []
    stop = asyncio.Event()
    slots: list[asyncio.Task[None]] = []
    warm: Counter[str] = Counter()
    await asyncio.gather(*(_ordinary(stack.base_url, stack.keys[t], t, 1, [], warm) for t in ordinary_tenants(stack)))
    if hostile:
        key = stack.keys[HOSTILE]
        regex = f"HOSTILE-REGEX {args.regex_chars}"
        fetch = f"HOSTILE-FETCH {stack.model_url}/bomb"
        slots = [asyncio.create_task(_hostile_slot(stack.base_url, key, "strict", regex, f"regex-{i}", record, stop))
                 for i in range(args.regex_turns)]  # fmt: skip
        slots += [asyncio.create_task(_hostile_slot(stack.base_url, key, "fetcher", fetch, f"fetch-{i}", record, stop))
                  for i in range(args.fetch_turns)]  # fmt: skip
        await asyncio.sleep(0.3)  # its turns are in the worker before the others start
    began = time.perf_counter()
    tenants = [asyncio.create_task(_ordinary(stack.base_url, stack.keys[t], t, args.turns, latencies, outcomes))
               for t in ordinary_tenants(stack)]  # fmt: skip
    done, pending = await asyncio.wait(tenants, timeout=args.phase_timeout_s)
    elapsed = time.perf_counter() - began
    for task in pending:
        task.cancel()
    stop.set()
    for task in slots:
        task.cancel()
    await asyncio.gather(*pending, *slots, return_exceptions=True)
    return {
        "ordinary_turns": args.tenants * args.turns, "answered": len(latencies), "outcomes": dict(outcomes),
        "cut_after_s": args.phase_timeout_s if pending else None, "elapsed_s": round(elapsed, 2),
        "latency_ms": {k: round(v, 1) for k, v in summary_ms([s for _, s in latencies]).items()},
        "by_round_ms": _by_round(latencies),
        "hostile_turns": _hostile_report(record) if hostile else None,
    }  # fmt: skip


def _by_round(latencies: list[tuple[int, float]]) -> list[dict[str, float]]:
    """p50 and max of each round (every tenant's n-th turn): shows whether the slow turns are the first ones."""
    rounds = sorted({index for index, _ in latencies})
    figures = [summary_ms([s for i, s in latencies if i == index]) for index in rounds]
    pairs = zip(rounds, figures, strict=True)
    return [{"round": index, "p50": round(f["p50"], 1), "max": round(f["max"], 1)} for index, f in pairs]


def _hostile_report(record: list[dict[str, Any]]) -> dict[str, Any]:
    by_slot: dict[str, dict[str, Any]] = {}
    for kind in sorted({r["slot"].split("-")[0] for r in record}):
        mine = [r for r in record if r["slot"].startswith(kind)]
        ended = [r["s"] for r in mine if r["outcome"] != "still running at the end"]
        by_slot[kind] = {
            "turns": len(mine),
            "outcomes": dict(Counter(r["outcome"] for r in mine)),
            "seconds": {k: round(v / 1000, 2) for k, v in summary_ms(ended).items() if k != "n"},
        }
    return by_slot


def _setup(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        for tenant in ordinary_tenants(stack):
            http.post("/api/v1/agents", json=AGENT, headers=stack.auth(tenant)).raise_for_status()
        for agent in (REGEX_AGENT, FETCH_AGENT):
            response = http.post("/api/v1/agents", json=agent, headers=stack.auth(HOSTILE))
            if response.status_code != 201:
                raise SystemExit(f"bench hostile: the hostile agent {agent['name']!r} was refused: {response.text}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": args.command, "options": args.options,
        "code": sysinfo.git_state(), "machine_busy_before": sysinfo.machine_busy(2.0), "phases": {},
    }  # fmt: skip
    stack = make_stack(args)
    try:
        say(f"bench hostile: starting Redis, the model and a web (logs in {stack.log_dir})")
        stack.start()
        assert stack.redis is not None
        results["machine"] = sysinfo.machine(stack.redis_version, str(stack.redis.binary))
        _setup(stack)
        for phase in ("quiet", "hostile"):
            if args.only not in (None, phase):
                continue
            (worker,) = stack.start_workers(1, name=f"worker.{phase}")  # fresh: each phase's peak RSS its own
            say(f"bench hostile: phase {phase}: {args.tenants} tenants x {args.turns} turns"
                + (f", hostile: {args.regex_turns} regex + {args.fetch_turns} fetch turns at once" if phase == "hostile"
                   else ""))  # fmt: skip
            figures = asyncio.run(_phase(stack, args, hostile=phase == "hostile"))
            figures["worker_peak_rss_mib"] = stop_worker(stack, worker)
            figures["model_counts"] = model_counts(stack)
            results["phases"][phase] = figures
            say(f"bench hostile: {phase}: {json.dumps(figures['latency_ms'])}")
    finally:
        stack.close()
    return results
