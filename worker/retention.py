"""Retention: the sessions of an agent with `session_ttl_s` are deleted once they went that long without a turn.

Their keys carry Redis TTLs (lib_session_ttl.lua sets them when the session's lane empties), so a session's hash
is gone at its expiry and neither lists nor reads show it from then on. What Redis does not remove by itself is
the session's place in the tenant's and the agent's lists, and any key of it that was written without a TTL:
this sweeper does that, from the deployment-wide `keys.session_expiries()` zset, one SWEEP_SESSION step per
session (which leaves alone a session with a turn in its lane, or one made again since). Any worker may run it,
at the same time as others: each step checks the session's expiry again.
"""

from __future__ import annotations

import asyncio
import json
import logging

import redis
import redis.asyncio as aredis

from parley.shared.clock import now_ms
from parley.shared.store import keys, scripts
from parley.shared.store.scripts.calls import SweepSessionCall

log = logging.getLogger("parley.worker.retention")

BATCH = 100
"""Expired sessions one sweep deletes at most; the next sweep takes the rest."""
BUSY_RETRY_MS = 60_000
"""A session with a turn in its lane is looked at again this much later (that turn's end pushes its expiry)."""


async def sweep(aio: aredis.Redis, now: int | None = None, limit: int = BATCH) -> int:
    """Delete what is left of the sessions whose expiry passed (`now`, ms: the clock, unless a test moves it);
    how many were deleted."""
    now = now_ms() if now is None else now
    run = aio.register_script(scripts.SWEEP_SESSION)
    deleted = 0
    for member in await aio.zrangebyscore(keys.session_expiries(), "-inf", now, start=0, num=limit):
        try:
            tenant, agent_id, session_id = json.loads(member)
        except ValueError:
            await aio.zrem(keys.session_expiries(), member)  # not one keys.session_expiry_member made
            continue
        call = SweepSessionCall(
            session_expiries=keys.session_expiries(), session=keys.session(tenant, session_id),
            messages=keys.messages(tenant, session_id), notes=keys.notes(tenant, session_id),
            session_images=keys.session_images(tenant, session_id), summary_lock=keys.summary_lock(tenant, session_id),
            lane=keys.lane(tenant, session_id), sessions=keys.sessions(tenant),
            agent_sessions=keys.agent_sessions(tenant, agent_id), member=member, session_id=session_id, now_ms=now,
            busy_retry_ms=BUSY_RETRY_MS, agent_id=agent_id,
        )  # fmt: skip
        outcome = await run(keys=call.keys(), args=call.args())
        if outcome == "deleted":
            deleted += 1
            log.info("session %s/%s expired: deleted", tenant, session_id)
    return deleted


async def sweep_forever(aio: aredis.Redis, interval_s: float) -> None:
    """Every `interval_s` (PARLEY_SESSION_SWEEP_S), `sweep`; a Redis failure is logged and tried again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            while await sweep(aio) == BATCH:
                pass  # more are due: go on at once
        except redis.RedisError:
            log.warning("could not sweep expired sessions; trying again", exc_info=True)
