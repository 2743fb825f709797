"""What one turn may spend: its tenant's daily budget (PARLEY_TENANT_BUDGETS), checked before each model call and
counted after it, and the turn's own token cap (the agent's `max_turn_tokens`, PARLEY_MAX_TURN_TOKENS).

The loop (loop.py) asks `check()` before each model call (the repair call too): a tenant at or over its budget
stops the turn there (OverBudget: it ends `failed`, `budget_exceeded`, nothing committed). After the call, `count`
adds its tokens to the tenant's day (shared/budgets.py) and to the turn's own total; once that total reaches the
turn's cap, `capped()` says so and the loop ends the turn before its next model step with an answer saying why, as
the step limit does (a finished turn, so the session's memory stays whole).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from redis.exceptions import RedisError

from parley.shared import budgets, telemetry
from parley.shared.clock import now_ms
from parley.shared.settings import Settings
from parley.shared.tokens import count_message, count_text

from ..providers.base import ToolCall

log = logging.getLogger("parley.worker.budget")

TURN_CAP_ANSWER = (
    "I stopped here: this turn used {used} tokens, past the {cap} this agent may use in one turn. "
    "Please narrow the question down or ask again."
)


class OverBudget(Exception):
    """The tenant's tokens for the UTC day are spent: the turn stops before its next model call."""


def turn_cap(agent: dict[str, Any], settings: Settings) -> int:
    """The turn's token cap (0: none): the agent's `max_turn_tokens`, at most PARLEY_MAX_TURN_TOKENS when set."""
    caps = [cap for cap in (agent.get("max_turn_tokens"), settings.max_turn_tokens) if cap]
    return min(caps) if caps else 0


def max_steps(agent: dict[str, Any], settings: Settings) -> int:
    """The agent's `max_tool_steps`, else PARLEY_MAX_TOOL_STEPS."""
    return int(agent.get("max_tool_steps") or settings.max_tool_steps)


def estimate(messages: Sequence[dict[str, Any]], text: str, calls: Sequence[ToolCall], model: str) -> int:
    """Tokens of a call whose provider reported none: what was sent and what came back, by shared/tokens.py."""
    sent = sum(count_message(message, model) for message in messages)
    received = count_text(text, model) + sum(count_text(call.name + call.arguments, model) for call in calls)
    return sent + received


async def tokens_of(usage: dict[str, Any], messages: list[dict[str, Any]], text: str, calls: Sequence[ToolCall],
                    model: str, threads: Executor | None = None) -> int:  # fmt: skip
    """One model call's tokens: as reported, else estimated in `threads` (counting is CPU work)."""
    tokens = budgets.usage_tokens(usage)
    if not tokens:
        loop = asyncio.get_running_loop()
        tokens = await loop.run_in_executor(threads, estimate, list(messages), text, list(calls), model)
    return tokens


async def spend(aio: Any, tenant: str, model: str, usage: dict[str, Any], messages: list[dict[str, Any]], text: str,
                calls: Sequence[ToolCall] = (), threads: Executor | None = None) -> int:  # fmt: skip
    """Add one model call's tokens (`tokens_of`) to the tenant's day; how many. A Redis failure here loses this
    call's count (logged), never the turn."""
    tokens = await tokens_of(usage, messages, text, calls, model, threads)
    try:
        await budgets.add_spent(aio, tenant, tokens, now_ms())
    except RedisError as error:
        log.warning("could not count %d tokens against the tenant's budget: %s", tokens, error)
    return tokens


async def day_spent(aio: Any, settings: Settings, tenant: str) -> bool:
    """Whether the tenant has a budget and its tokens for today are spent (a summary job asks before its call)."""
    daily = settings.tenant_budget(tenant)
    return daily is not None and await budgets.spent(aio, tenant, now_ms()) >= daily


class TurnBudget:
    """One turn's spending: the tenant's day and the turn's own total."""

    def __init__(self, *, aio: Any, settings: Settings, tenant: str, agent: dict[str, Any], model: str,
                 threads: Executor | None = None, used: int = 0) -> None:  # fmt: skip
        """`used`: the tokens the turn spent before (a turn resumed after decisions goes on from its usage)."""
        self.aio = aio
        self.tenant = tenant
        self.model = model
        self.threads = threads
        self.daily = settings.tenant_budget(tenant)
        self.cap = turn_cap(agent, settings)
        self.used = used

    async def check(self) -> None:
        """Before a model call: OverBudget when the tenant's tokens for today are spent."""
        if self.daily is None:
            return
        at = now_ms()
        spent = await budgets.spent(self.aio, self.tenant, at)
        if spent >= self.daily:
            telemetry.budget_stop("stopped")
            raise OverBudget(f"this tenant's tokens for today are spent ({spent} of {self.daily}); the turn stopped "
                             f"before its next model call; try again after {budgets.next_day(at)}")  # fmt: skip

    async def count(self, usage: dict[str, Any], messages: list[dict[str, Any]], text: str,
                    calls: list[ToolCall]) -> None:  # fmt: skip
        """After a model call: its tokens to the turn and, for a tenant with a budget, to its day (`spend`). With
        neither a budget nor a cap there is nothing to enforce: no count, no Redis round trip."""
        if self.daily is not None:
            self.used += await spend(self.aio, self.tenant, self.model, usage, messages, text, calls, self.threads)
        elif self.cap:
            self.used += await tokens_of(usage, messages, text, calls, self.model, self.threads)

    def capped(self) -> bool:
        """The turn used its token cap: no further model step."""
        return bool(self.cap) and self.used >= self.cap

    def cap_answer(self) -> str:
        telemetry.budget_stop("turn_cap")
        log.info("turn reached its token cap (%d of %d)", self.used, self.cap)
        return TURN_CAP_ANSWER.format(used=self.used, cap=self.cap)
