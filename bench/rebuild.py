"""``python -m bench rebuild``: how long rebuilding a turn's context takes from a 100-message and
from a 100,000-message session (the target: the long one within 1.5x the short one's p50).

    python -m bench rebuild                    # a fresh redis-server on a free port, 2,000 rebuilds each
    python -m bench rebuild --redis-url redis://127.0.0.1:6379/15 --rebuilds 500   # a server you run

What runs: a fresh Redis (parley.local.redis_server.RedisServer: `redis-server` from PATH, AOF on),
two sessions written straight into it as committed turns leave them (first message, then
user/assistant turns, each message with its `tokens`), and `parley.shared.store.memory.read_window`
called on each, alternately, with the default budget (PARLEY_CONTEXT_TOKENS, 16,000) for
`gpt-4o-mini`. Messages are sized so that 100 of them already overflow the budget (a user message
of about 60 tokens, an answer of about 400), so both windows hold the same number of turns: what
differs is only the history behind them. The old way (the whole list, LRANGE 0 -1, decoded) is
timed too, a few times, to show what the window saves. Same again for messages stored without
`tokens` (before counts were kept: each is counted with tiktoken as it is read).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from parley.local.redis_server import RedisServer
from parley.shared.store import keys, memory
from parley.shared.store.sessions import message_json
from parley.shared.tokens import count_message

from . import sysinfo

MODEL = "gpt-4o-mini"
BUDGET = 16_000
TENANT = "bench"
SIZES = (100, 100_000)
USER_TEXT = "Could you suggest another dish with the vegetables I listed, and how long would it take? " * 3
ANSWER_TEXT = (
    "Here is a recipe that uses what you have: roast the peppers and aubergine with olive oil, "
    "garlic and thyme for 35 minutes, then toss them with warm chickpeas, lemon and parsley. "
) * 8


def build(r: redis.Redis, session_id: str, messages: int, *, with_tokens: bool) -> None:
    """A session of `messages` messages (the first message, then turns), pipelined in batches."""
    r.delete(keys.session(TENANT, session_id), keys.messages(TENANT, session_id))
    turns = (messages - 1) // 2
    r.hset(keys.session(TENANT, session_id), mapping={"agent_id": "agent-bench", "created_at": 0,
                                                      "metadata": "{}", "exchanges": turns})  # fmt: skip
    rows = [message_json("assistant", "Hello! What shall we cook?", job_id=None, created_at=0)]
    counts = {role: count_message({"role": role, "content": text}, MODEL)
              for role, text in (("user", USER_TEXT), ("assistant", ANSWER_TEXT))}  # fmt: skip
    total = 0
    while len(rows) < messages:
        turn = len(rows) // 2
        role = "user" if len(rows) % 2 else "assistant"
        text = f"({turn}) " + (USER_TEXT if role == "user" else ANSWER_TEXT)
        extra = {"tokens": counts[role] + 3} if with_tokens else {}
        total += counts[role] + 3
        rows.append(message_json(role, text, job_id=f"job_{turn}", created_at=turn, **extra))
    with r.pipeline(transaction=False) as pipe:
        for start in range(0, len(rows), 2_000):
            pipe.rpush(keys.messages(TENANT, session_id), *rows[start : start + 2_000])
        pipe.hset(keys.session(TENANT, session_id), memory.TOKENS_FIELD, total)
        pipe.execute()


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(r: redis.Redis, sessions: dict[int, str], rebuilds: int, warmup: int) -> dict[int, dict[str, Any]]:
    """read_window on each session, alternately (so drift on a shared machine hits both alike)."""
    samples: dict[int, list[float]] = {size: [] for size in sessions}
    windows: dict[int, memory.Window] = {}

    for round_ in range(warmup + rebuilds):
        for size, session_id in sessions.items():
            start = time.perf_counter()
            windows[size] = memory.read_window(r, TENANT, session_id, budget_tokens=BUDGET, model=MODEL)
            elapsed = (time.perf_counter() - start) * 1000
            if round_ >= warmup:
                samples[size].append(elapsed)
    return {
        size: {"p50_ms": statistics.median(values), "p99_ms": percentile(values, 0.99),
               "mean_ms": statistics.fmean(values), "window_messages": len(windows[size].messages),
               "window_tokens": windows[size].tokens, "history_messages": windows[size].total}
        for size, values in samples.items()
    }  # fmt: skip


def full_history(r: redis.Redis, sessions: dict[int, str], repeats: int) -> dict[int, float]:
    """The old rebuild (every message, decoded): median ms of `repeats` reads (100 for short histories)."""
    return {
        size: statistics.median(
            timed(lambda s=session_id: [json.loads(m) for m in r.lrange(keys.messages(TENANT, s), 0, -1)])
            for _ in range(repeats if size > 1_000 else 100)
        )
        for size, session_id in sessions.items()
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None,
                        help="use this Redis (its bench keys are overwritten); default: start one")  # fmt: skip
    parser.add_argument("--rebuilds", type=int, default=2_000, help="timed rebuilds per session (2000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed rebuilds per session first (100)")
    parser.add_argument("--full-reads", type=int, default=3, help="whole-history reads of the long session (3)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both variants (with and without stored token counts); ``ok`` when every p50 ratio is within 1.5."""
    server: RedisServer | None = None
    try:
        if args.redis_url:
            url = args.redis_url
        else:
            server = RedisServer(dir=Path(tempfile.mkdtemp(prefix="parley-rebuild-")), die_with_parent=True)
            server.start()
            url = server.url
        r = redis.Redis.from_url(url, decode_responses=True)
        info = r.info("server")
        results: dict[str, Any] = {
            "command": args.command, "options": args.options, "cpu_model": sysinfo.cpu_model(),
            "cores": sysinfo.usable_cores(), "redis_version": info["redis_version"],
            "commit": sysinfo.git_state()["commit"], "budget": BUDGET, "model": MODEL, "rebuilds": args.rebuilds,
            "warmup": args.warmup, "load_average_before": list(os.getloadavg()), "variants": [],
        }  # fmt: skip
        variants = ((True, "Messages with their stored `tokens` (as turns commit them)"),
                    (False, "Messages stored before token counts (counted with tiktoken on read)"))
        for with_tokens, title in variants:
            sessions = {size: f"rebuild-{size}-{'t' if with_tokens else 'c'}" for size in SIZES}
            for size, session_id in sessions.items():
                build(r, session_id, size, with_tokens=with_tokens)
            figures = measure(r, sessions, args.rebuilds, args.warmup)
            old = full_history(r, sessions, args.full_reads)
            small, large = figures[SIZES[0]], figures[SIZES[1]]
            results["variants"].append({
                "title": title, "figures": [figures[size] for size in SIZES],
                "whole_history_ms": [old[size] for size in SIZES],
                "p50_ratio": large["p50_ms"] / small["p50_ms"], "p99_ratio": large["p99_ms"] / small["p99_ms"],
            })  # fmt: skip
            r.delete(*[key(TENANT, s) for s in sessions.values() for key in (keys.messages, keys.session)])
        r.close()
        results["ok"] = max(v["p50_ratio"] for v in results["variants"]) <= 1.5
        return results
    finally:
        if server is not None:
            server.stop()
