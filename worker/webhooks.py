"""The webhook dispatcher: a task on every worker's event loop (engine.py starts it beside the watch).

Two stages, each safe when any worker dies at any moment:

1. *Entries.* FINISH_TURN and PAUSE_TURN write each turn end of a tenant with webhooks to the deployment's
   `keys.turn_ends()` stream, in the step that ends the turn. The workers share one consumer group on it (`GROUP`):
   for each entry, a delivery is made (CREATE_DELIVERY) for each of the tenant's subscriptions that wants it, its
   body frozen then (the job as `GET /api/v1/jobs/{id}` shows it), its id derived from the subscription's and the
   entry's, and only then is the entry acknowledged (and deleted). An entry whose worker died before that is
   claimed by another worker after `reclaim_idle_ms` (XAUTOCLAIM) and handled again: the same deliveries, made once.
2. *Deliveries.* Due deliveries are leased (CLAIM_DELIVERIES) up to the free places of this worker
   (PARLEY_WEBHOOK_CONCURRENCY), no tenant more than PARLEY_WEBHOOK_TENANT_CONCURRENCY across the deployment,
   each sent (webhook_post.py) on a task of its own, and the attempt recorded (RECORD_ATTEMPT): delivered on a
   2xx; else retried with exponential backoff (PARLEY_WEBHOOK_BACKOFF_S doubling, at most
   PARLEY_WEBHOOK_BACKOFF_CAP_S) until PARLEY_WEBHOOK_GIVE_UP_S after it was made, then failed. A worker that
   dies mid-attempt leaves its lease to run out: the delivery is sent again (same `Parley-Delivery-Id`).

So each event is delivered at least once; a duplicate carries the same delivery id. Nothing here blocks the loop
(async Redis, async HTTP), and a slow receiver holds only its own task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import uuid
from typing import Any

import redis
import redis.asyncio as aredis

from parley.shared import a2a_task, telemetry
from parley.shared.clock import now_ms
from parley.shared.settings import Settings
from parley.shared.store import keys
from parley.shared.store.turns import TurnStore
from parley.shared.store.webhooks import KIND_A2A, KIND_WEBHOOK, Attempt, Deliveries, Webhook
from parley.tools import network

from . import webhook_post

log = logging.getLogger("parley.webhooks")

GROUP = "parley-webhooks"
"""The workers' consumer group on `keys.turn_ends()`."""
READ_BLOCK_MS = 500
"""How long one read of the stream waits for entries when there is nothing to do: also how often due deliveries
are looked for then."""
ENTRIES_PER_READ = 50
LEASE_MARGIN_S = 10.0
"""A delivery's lease: the attempt's timeout and this much more (Redis round trips, a busy loop)."""
ERROR_PAUSE_S = 1.0
PRUNE_INTERVAL_S = 60.0
PRUNE_IDLE_MS = 600_000
"""A consumer of the group that holds no entry and was idle this long is deleted (dead workers' names would
pile up in the group otherwise); a live one that is deleted is made again by its next read."""


def backoff_s(settings: Settings, attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: the base doubled each time, capped, with up to 10% jitter
    (so receivers coming back are not hit by every retry at once)."""
    wait = min(settings.webhook_backoff_cap_s, settings.webhook_backoff_s * 2 ** max(0, attempts - 1))
    return wait * (1 + random.random() / 10)  # noqa: S311 (jitter, not a secret)


def body_of(event_type: str, job: dict[str, Any]) -> bytes:
    """What a webhook is sent: the bytes signed and sent, on every attempt."""
    return json.dumps({"type": event_type, "job": job}, separators=(",", ":"), ensure_ascii=False).encode()


class Dispatcher:
    """This worker's part of the deployment's webhook deliveries."""

    def __init__(self, aio: aredis.Redis, settings: Settings) -> None:
        self.aio = aio
        self.settings = settings
        self.deliveries = Deliveries(aio, settings.sealer)
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ms = int((settings.webhook_timeout_s + LEASE_MARGIN_S) * 1000)
        self.reclaim_idle_ms = self.lease_ms
        self.sending: set[asyncio.Task[None]] = set()
        self._group_ready = False
        self._pruned_at = 0.0
        self._quiet = True
        """The last round found nothing to do: the next read may wait for entries."""

    @property
    def keep_ms(self) -> int:
        """How long a delivery is kept from its making: its retries, then the retention."""
        return (self.settings.webhook_give_up_s + self.settings.retention_s) * 1000

    async def run(self) -> None:
        """Until cancelled: take entries, send what is due. Redis failures pause it, never end it."""
        try:
            while True:
                try:
                    await self.step()
                except (redis.RedisError, OSError) as error:
                    log.warning("webhooks: Redis failed (%s); trying again", error)
                    self._group_ready = False
                    await asyncio.sleep(ERROR_PAUSE_S)
                except Exception:
                    log.exception("webhooks: unexpected failure; trying again")
                    await asyncio.sleep(ERROR_PAUSE_S)
        finally:
            for task in list(self.sending):
                task.cancel()  # their leases run out; another worker sends them
            await asyncio.gather(*self.sending, return_exceptions=True)

    async def step(self) -> None:
        """One round: entries other workers left, new entries, due deliveries. The read waits up to READ_BLOCK_MS
        only when the last round found nothing to do; with every place taken, the round waits for one to free."""
        await self._ensure_group()
        await self._reclaim()
        handled = await self._read_new(READ_BLOCK_MS if self._quiet else None)
        full = await self._send_due()
        self._quiet = not handled and not full
        if len(self.sending) >= self.settings.webhook_concurrency:
            await asyncio.wait(set(self.sending), timeout=READ_BLOCK_MS / 1000, return_when=asyncio.FIRST_COMPLETED)
        await self._prune()

    async def _prune(self) -> None:
        """Every PRUNE_INTERVAL_S: delete the group's consumers that hold nothing and were idle long (dead)."""
        now = asyncio.get_running_loop().time()
        if now - self._pruned_at < PRUNE_INTERVAL_S:
            return
        self._pruned_at = now
        for consumer in await self.aio.xinfo_consumers(keys.turn_ends(), GROUP):
            if consumer["name"] != self.consumer and not consumer["pending"] and consumer["idle"] > PRUNE_IDLE_MS:
                await self.aio.xgroup_delconsumer(keys.turn_ends(), GROUP, consumer["name"])

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the stream's start: entries written before any worker made the group are handled too.
            await self.aio.xgroup_create(keys.turn_ends(), GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def _reclaim(self) -> None:
        """Entries a worker read and never acknowledged (it died), idle for `reclaim_idle_ms`, are this one's now."""
        reply = await self.aio.xautoclaim(keys.turn_ends(), GROUP, self.consumer, self.reclaim_idle_ms,
                                          start_id="0-0", count=ENTRIES_PER_READ)  # fmt: skip
        for entry_id, fields in reply[1] if len(reply) > 1 else []:
            await self.handle_entry(entry_id, fields)

    async def _read_new(self, block_ms: int | None) -> int:
        """Handle the stream's new entries (waiting up to `block_ms` for one; None: not at all); how many."""
        try:
            reply = await self.aio.xreadgroup(GROUP, self.consumer, {keys.turn_ends(): ">"}, count=ENTRIES_PER_READ,
                                              block=block_ms)  # fmt: skip
        except redis.ResponseError as error:
            if "NOGROUP" in str(error):  # the stream was deleted (a flushed or new Redis): make the group again
                self._group_ready = False
                return 0
            raise
        handled = 0
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                await self.handle_entry(entry_id, fields)
                handled += 1
        return handled

    async def handle_entry(self, entry_id: str, fields: dict[str, str] | None) -> None:
        """Make the entry's deliveries (once each), then acknowledge and delete it."""
        fields = fields or {}  # an entry deleted meanwhile comes back without fields
        tenant, job_id, event_type = fields.get("t", ""), fields.get("j", ""), fields.get("type", "")
        if tenant and job_id and event_type:
            wanted = [hook for hook in await self.deliveries.subscriptions(tenant) if hook.wants(event_type, job_id)]
            try:
                if wanted:
                    await self._make(entry_id, tenant, job_id, event_type, wanted)
            except (redis.RedisError, OSError):
                raise  # not acknowledged: handled again, here or by another worker
            except Exception:  # a record that cannot be shown would fail every time: logged, and let go
                log.exception("webhooks: the %s of job %s of %r cannot be sent", event_type, job_id, tenant)
        async with self.aio.pipeline(transaction=True) as pipe:
            pipe.xack(keys.turn_ends(), GROUP, entry_id)
            pipe.xdel(keys.turn_ends(), entry_id)
            await pipe.execute()

    async def _make(self, entry_id: str, tenant: str, job_id: str, event_type: str, wanted: list[Webhook]) -> None:
        record = await self.aio.hgetall(keys.job(tenant, job_id))
        if not record:
            log.info("webhooks: job %s of %r is no longer kept; its %s is not sent", job_id, tenant, event_type)
            return
        job = TurnStore.public(job_id, record).model_dump(mode="json")
        body = body_of(event_type, job)
        for hook in wanted:
            sent = body if hook.kind == KIND_WEBHOOK else a2a_task.push_body(job_id, record, hook.legacy)
            await self.deliveries.create(tenant, hook, entry_id, event_type, job_id, sent, self.keep_ms)

    # -- deliveries ------------------------------------------------------------------------------------------

    async def _send_due(self) -> bool:
        """Lease due deliveries to the free places and send each on a task of its own; True when every free place
        was filled (more may be due)."""
        free = self.settings.webhook_concurrency - len(self.sending)
        if free <= 0:
            return True
        token = uuid.uuid4().hex
        claimed = await self.deliveries.claim(token, free, self.lease_ms, self.settings.webhook_tenant_concurrency)
        for member in claimed:
            task = asyncio.create_task(self.deliver(member, token), name=f"webhook-{member}")
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)
        return len(claimed) >= free

    async def deliver(self, member: str, token: str) -> None:
        """One attempt of the delivery `member` under the lease `token`, recorded with what follows it."""
        tenant, _, delivery = member.partition(" ")
        try:
            record = await self.deliveries.read(tenant, delivery)
            if not record or record.get("status") != "pending":
                return
            hook = await self.deliveries.subscription(tenant, record.get("webhook", ""))
            if hook is None:
                return  # deleted: the next claim ends it
            body = record.get("body", "").encode()
            outcome = await webhook_post.post(hook.url, body, self._headers(hook, delivery, body),
                                              allowed=network.parse_allowlist(self.settings.private_networks_allowed),
                                              timeout_s=self.settings.webhook_timeout_s)  # fmt: skip
            await self._record(member, token, record, outcome)
        except (redis.RedisError, OSError) as error:
            log.warning("webhooks: delivery %s could not be recorded (%s); it is sent again after its lease",
                        delivery, error)  # fmt: skip

    def _headers(self, hook: Webhook, delivery: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Parley-Delivery-Id": delivery}
        if hook.kind == KIND_A2A:  # A2A's own headers (the client set no secret to sign with)
            if hook.token:
                headers["X-A2A-Notification-Token"] = hook.token
            if hook.authorization:
                headers["Authorization"] = hook.authorization
            return headers
        headers["Parley-Signature"] = webhook_post.signature(hook.secret, body, now_ms() // 1000)
        return headers

    async def _record(self, member: str, token: str, record: dict[str, str], outcome: webhook_post.Outcome) -> None:
        attempt: Attempt = outcome.attempt
        telemetry.webhook_attempt(outcome.kind)
        count = int(record.get("attempt_count") or 0) + 1
        next_ms = 0
        if attempt.ok:
            result = "delivered"
        elif now_ms() - int(record.get("created_at") or 0) >= self.settings.webhook_give_up_s * 1000:
            result = "failed"
        else:
            result = "retry"
            next_ms = now_ms() + int(backoff_s(self.settings, count) * 1000)
        status = await self.deliveries.record(member, token, attempt, result, next_ms, self.settings.retention_s * 1000)
        deltas = telemetry.PENDING.take()
        if deltas:
            async with self.aio.pipeline(transaction=False) as pipe:
                telemetry.write(pipe, deltas)
                await pipe.execute()
        if status == "failed":
            log.warning("webhooks: delivery %s failed for good after %d attempts", member, count)
