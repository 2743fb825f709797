"""The turn's side of session memory: what a turn remembers (the window that fits the agent's
context budget: first message, rolling summary, newest whole turns), and, once the turn has
committed, queueing the rolling summary when the history beyond the summary nears the budget.

Neither calls a model; the summary jobs that do are in summary.py. The policy is shared/store/memory.py's
(docs/memory.md).
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import redis

from parley.shared.store import images as session_images
from parley.shared.store import keys, memory
from parley.shared.tokens import MESSAGE_OVERHEAD_TOKENS, count_message, count_text

from ..runtime import Runtime

log = logging.getLogger("parley.worker.summary")

SUMMARY_INTRO = "Summary of the earlier conversation (its older messages are not shown):\n"
LOCK_SLACK_S = 60
"""The summary lock outlives the job's timeout by this much, so a dead job's lock expires by itself."""


def agent_model(rt: Runtime, agent: dict[str, Any]) -> str:
    return agent.get("model") or rt.settings.default_model


def remembered(rt: Runtime, tenant: str, record: dict[str, str], agent: dict[str, Any], model: str,
               images: list[str], prefetched: memory.Prefetched | None = None,
               end: int | None = None) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """What the session remembers that fits the agent's context budget (shared/store/memory.py): the
    first message, the rolling summary, the newest whole turns (once they no longer all fit, the window's
    start moves in steps, so the prompt's prefix stays the same from turn to turn), their images resolved in one
    read; and how many exchanges the session has had. Reads O(window), never the whole history;
    with `prefetched` (the turn's READ_CONTEXT), only what that did not hold: older messages a large
    budget takes, and images. `end`: the history stops before that index (a regenerate). Blocking: the
    worker runs it in its pool."""
    r, session_id = rt.clients.text, record["session_id"]
    new_message = {"role": "user", "content": record["message"], "images": images}
    history_budget = memory.history_budget(agent, rt.settings.context_tokens, model)
    budget = history_budget - count_message(new_message, model)
    window = memory.read_window(r, tenant, session_id, budget_tokens=max(budget, 0), model=model,
                                prefetched=prefetched, end=end,
                                step_tokens=math.ceil(memory.WINDOW_STEP_SHARE * history_budget))  # fmt: skip
    history = [window.first] if window.first else []
    if window.summary:
        history.append({"role": "system", "content": SUMMARY_INTRO + window.summary})
    history.extend(window.messages)
    found = session_images.lookup(r, tenant, session_id, [ref for m in history for ref in m.get("images") or ()])
    for message in history:
        if message.get("images"):
            message["images"] = session_images.with_uris(message["images"], found)
    return history, window.exchanges


def maybe_schedule_summary(rt: Runtime, tenant: str, session_id: str, agent: dict[str, Any]) -> bool:
    """After a turn committed: queue a rolling-summary job when first message + summary + history
    beyond the summary near the agent's budget and no summary job of the session is queued or running.

    Two small reads when nothing is due; never raises (a summary must not fail a turn)."""
    try:
        model = agent_model(rt, agent)
        budget = memory.history_budget(agent, rt.settings.context_tokens, model)
        unsummarised, summary_tokens = rt.clients.text.hmget(
            keys.session(tenant, session_id), memory.TOKENS_FIELD, memory.SUMMARY_TOKENS_FIELD
        )
        first_tokens = count_text(agent.get("first_message") or "", model) + MESSAGE_OVERHEAD_TOKENS
        if not memory.needs_summary(int(unsummarised or 0), int(summary_tokens or 0), first_tokens, budget):
            return False
        token = f"sum_{uuid.uuid4().hex}"
        timeout_s = int(rt.settings.summary_timeout_s) + 1
        lock = keys.summary_lock(tenant, session_id)
        if not rt.clients.text.set(lock, token, nx=True, ex=timeout_s + LOCK_SLACK_S):
            return False  # one is queued or running
        try:
            rt.turns.queue.enqueue_call(
                memory.SUMMARY_FUNCTION, args=(tenant, session_id, token), job_id=token, timeout=timeout_s,
                result_ttl=600, failure_ttl=rt.settings.retention_s,
                description=f"rolling summary of {tenant}/{session_id}",
            )  # fmt: skip
        except redis.RedisError:
            rt.clients.text.delete(lock)
            raise
        log.info("session %s/%s: rolling summary %s queued", tenant, session_id, token)
        return True
    except Exception:  # whatever it is, the turn that called this has committed: log it, go on
        log.warning("session %s/%s: could not schedule a summary", tenant, session_id, exc_info=True)
        return False
