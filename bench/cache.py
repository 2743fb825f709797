"""``python -m bench cache``: the share of prompt tokens a provider's prompt cache serves over a 50-turn conversation.

    python -m bench cache                  # 50 turns, budget 2,000 tokens
    python -m bench cache --turns 20 --budget 1200

What runs: a fresh Redis, tests/model_server.py (the scripted model: it reports
``prompt_tokens_details.cached_tokens`` by longest common prefix with the earlier requests of the same
``prompt_cache_key``, or any earlier request without one: tests/prompt_cache.py), one web and one
worker from the Procfile. One agent (a system context, instructions, the `calculator` tool, a first
message, a small `context_budget` so the rolling summary and the window's sliding happen) and one
session; the conversation goes turn by turn through ``POST /api/v1/chat``, every ``--tool-every``-th
turn the model calls the calculator first. Between turns the benchmark waits until the session's rolling
summary job, if one was queued, has ended (a person's time to read and type: the summary is written
before the next turn, as it mostly is in life).

What it reports: prompt tokens and cached tokens as the model server counted them (every turn request,
and with the rolling summaries' requests too), the share cached, what Parley's own usage said
(``usage.cached_tokens`` of each turn), and for each turn request whose prefix broke, where: the first
message that differs from the previous turn request's.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis

from parley.shared.store import keys

from . import sysinfo
from .stack import TENANT, Stack

WORDS = (
    "kitchen garden recipes season vegetables market weekend budget oven pantry spices herbs lentils rice "
    "tomatoes onions garlic lemon yoghurt bread soup salad dinner lunch breakfast guests family children "
    "allergies dessert fruit cheese pasta beans roast grill simmer bake chop stir taste plate serve"
).split()
AGENT = {
    "name": "cache-bench-agent",
    "context": (
        "You are Sage, the cooking assistant of a small community kitchen. You help members plan meals for the "
        "week, adapt recipes to what they have, keep to their budgets and allergies, and explain techniques "
        "simply. The kitchen has two ovens, a six-burner stove, a large pantry of dry goods and a garden with "
        "herbs, tomatoes and beans in summer. Members cook for families of two to eight people."
    ),
    "instructions": (
        "Answer in a few short sentences. Ask one question when something needed is missing. Use the calculator "
        "tool for every quantity or cost you scale or add up, and never guess a number you can compute."
    ),
    "first_message": "Hello! I'm Sage. What would you like to cook this week?",
    "tools": ["calculator"],
}


def user_message(turn: int, words: int) -> str:
    """The user's message of `turn`: `words` words, different every turn."""
    picked = [WORDS[(turn * 7 + i * 3) % len(WORDS)] for i in range(words - 3)]
    return f"Turn {turn}: " + " ".join(picked) + "?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--turns", type=int, default=50, help="turns of the conversation (50)")
    parser.add_argument("--budget", type=int, default=2000, help="the agent's context_budget, tokens (2000)")
    parser.add_argument("--user-words", type=int, default=30, help="words per user message (30)")
    parser.add_argument("--answer-words", type=int, default=40, help="words per model answer and summary (40)")
    parser.add_argument("--tool-every", type=int, default=5, help="every n-th turn calls the calculator (5; 0: never)")
    parser.add_argument("--cache-block", type=int, default=1,
                        help="cached tokens rounded down to a multiple of this (1: exact)")  # fmt: skip
    parser.add_argument("--summary-delay-ms", type=float, default=4000.0,
                        help="how long each rolling summary takes in the scenario where it lags (4000)")  # fmt: skip
    parser.add_argument("--think-ms", type=float, default=200.0,
                        help="pause between turns in the scenario where the summary lags (200)")  # fmt: skip
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed)")
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")


def _wait_for_job(r: redis.Redis, job_id: str, timeout_s: float = 30.0) -> None:
    """Until RQ has the turn's job ended: by then the turn has queued its rolling summary, if one is due."""
    deadline = time.monotonic() + timeout_s
    while r.hget(keys.rq_job(job_id), "status") not in (b"finished", b"failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the turn's job {job_id} did not end in time")
        time.sleep(0.01)


def _wait_for_summary(r: redis.Redis, session_id: str, timeout_s: float = 60.0) -> None:
    """Until the session's rolling-summary job (if one is queued or running) has ended: its lock is gone."""
    deadline = time.monotonic() + timeout_s
    while r.exists(keys.summary_lock(TENANT, session_id)):
        if time.monotonic() > deadline:
            raise RuntimeError("the rolling summary job did not end in time")
        time.sleep(0.02)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else str(content)


def _break_point(previous: list[dict[str, Any]], current: list[dict[str, Any]]) -> str:
    """Where `current` first differs from `previous` (the turn request before it), by what is there."""
    for index, (old, new) in enumerate(zip(previous, current, strict=False)):
        if old != new:
            if new.get("role") == "system" and _content(new).startswith("Summary of the earlier"):
                return "the rolling summary (new or changed)"
            if old.get("role") == "system" and _content(old).startswith("Summary of the earlier"):
                return "the rolling summary (new or changed)"
            if index <= 2:
                return "the system prompt or first message"
            return "the window's oldest messages (it slid)"
    return "none (the previous request is a prefix)"


def analyse(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals from the model server's records: turn requests (they offer tools) and summary requests."""
    turn_requests = [item for item in requests if isinstance(item.get("body"), dict) and item["body"].get("tools")
                     and "usage" in item]  # fmt: skip
    others = [item for item in requests if item not in turn_requests and "usage" in item]

    def totals(items: list[dict[str, Any]]) -> dict[str, Any]:
        prompt = sum(item["usage"]["prompt_tokens"] for item in items)
        cached = sum(item["usage"]["prompt_tokens_details"]["cached_tokens"] for item in items)
        return {"requests": len(items), "prompt_tokens": prompt, "cached_tokens": cached,
                "cached_share": cached / prompt if prompt else 0.0}  # fmt: skip

    breaks: Counter[str] = Counter()
    rows = []
    previous: list[dict[str, Any]] | None = None
    for item in turn_requests:
        messages = item["body"]["messages"]
        usage = item["usage"]
        where = "first request" if previous is None else _break_point(previous, messages)
        if previous is not None and not where.startswith("none"):
            breaks[where] += 1
        rows.append({"prompt_tokens": usage["prompt_tokens"], "cached_tokens": usage["prompt_tokens_details"][
            "cached_tokens"], "messages": len(messages), "break": where,
            "prompt_cache_key": item["body"].get("prompt_cache_key")})  # fmt: skip
        previous = messages
    return {"turn_requests": totals(turn_requests), "all_requests": totals(turn_requests + others),
            "summary_requests": totals(others), "breaks": dict(breaks), "per_request": rows}  # fmt: skip


SCENARIOS = (
    ("the summary keeps up", False),
    ("the summary lags", True),
)
"""Each scenario runs the whole conversation on a new agent and session. *Keeps up*: the benchmark waits for the
rolling summary between turns. *Lags*: each summary request takes ``--summary-delay-ms`` and the turns go on every
``--think-ms`` meanwhile, so the history outgrows the budget and the window slides until the summary lands."""


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"command": args.command, "options": args.options, "code": sysinfo.git_state(),
                               "scenarios": []}  # fmt: skip
    stack = Stack(keep_logs=args.keep_logs)
    try:
        stack.start()
        stack.set_workers(1, purpose="cache")
        for title, lags in SCENARIOS:
            print(f"bench cache: {title}, {args.turns} turns", file=sys.stderr, flush=True)
            figures = conversation(stack, args, lags)
            results["scenarios"].append({"title": title, **figures})
    finally:
        stack.close()
    return results


def conversation(stack: Stack, args: argparse.Namespace, lags: bool) -> dict[str, Any]:
    """One agent, one session, `args.turns` turns; the model server's figures and Parley's usage."""
    assert stack.model is not None
    stack.model.control("reset", {})
    stack.model.control("options", {"echo_words": args.answer_words, "cache_block": args.cache_block})
    if lags:
        stack.model.control("script", [{"with_tools": False, "delay_ms": args.summary_delay_ms}] * args.turns)
    agent = {**AGENT, "name": f"{AGENT['name']}-{uuid.uuid4().hex[:6]}", "context_budget": args.budget}
    parley_usage = {"prompt_tokens": 0, "cached_tokens": 0, "turns_reporting_cached": 0}
    r = redis.Redis.from_url(stack.redis_url)
    session_id: str | None = None
    try:
        with httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0)) as client:
            created = client.post(f"{stack.base_url}/api/v1/agents", json=agent, headers=stack.headers)
            created.raise_for_status()
            for turn in range(1, args.turns + 1):
                if args.tool_every and turn % args.tool_every == 0:
                    stack.model.control("script", {"with_tools": True, "tool_calls": [
                        {"name": "calculator", "arguments": {"expression": f"{turn} * 12 + 7"}}]})  # fmt: skip
                body: dict[str, Any] = {"agent": agent["name"], "message": user_message(turn, args.user_words)}
                if session_id:
                    body["session_id"] = session_id
                answer = client.post(f"{stack.base_url}/api/v1/chat", json=body, headers=stack.headers)
                if answer.status_code != 200:
                    raise RuntimeError(f"turn {turn}: /api/v1/chat answered {answer.status_code}: {answer.text[:300]}")
                data = answer.json()
                session_id = data["session_id"]
                usage = data.get("usage") or {}
                parley_usage["prompt_tokens"] += int(usage.get("prompt_tokens", 0))
                parley_usage["cached_tokens"] += int(usage.get("cached_tokens", 0))
                parley_usage["turns_reporting_cached"] += int("cached_tokens" in usage)
                if lags:
                    time.sleep(args.think_ms / 1000)
                else:
                    _wait_for_job(r, data["job_id"])
                    _wait_for_summary(r, session_id)
        if session_id:
            _wait_for_summary(r, session_id, timeout_s=60 + args.summary_delay_ms / 1000)
    finally:
        r.close()
    return {**analyse(stack.model.control("requests")), "parley_usage": parley_usage, "session_id": session_id,
            "agent": agent, "lags": lags}
