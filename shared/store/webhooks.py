"""A tenant's webhooks and their deliveries in Redis.

`keys.webhooks(tenant)` is one hash: webhook id -> JSON `{kind, url, events, secret, created_at}` (kind `webhook`;
an A2A push config is kind `a2a` with its task's `job_id` and the client's `token`); the secret, token and
authorization are sealed with PARLEY_SECRETS_KEY when it is set (shared/sealing.py). FINISH_TURN and PAUSE_TURN
check only that the hash EXISTS before they write a turn's end to `keys.turn_ends()`, so a tenant without
webhooks costs nothing.

A delivery (`keys.webhook_delivery`) is one turn end for one webhook: its body is frozen when it is made (the job
as `GET /api/v1/jobs/{id}` shows it then), its id derived from the webhook's and the stream entry's
(`delivery_id`), so handling the entry twice makes it once. It is listed under its webhook
(`keys.webhook_deliveries`, the newest `MAX_LISTED`), and while it is pending it is in the deployment's due set
(`keys.webhook_due()`), from which CLAIM_DELIVERIES leases it to one worker at a time, and to no tenant more than
PARLEY_WEBHOOK_TENANT_CONCURRENCY at once (`keys.webhook_leases`; a tenant's due deliveries past that wait in
`keys.webhook_parked`), so one tenant's slow receivers cannot hold every worker's places.

The web reads and writes webhooks through `WebhookStore` (sync); the worker's dispatcher uses `Deliveries`
(`redis.asyncio`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
import redis.asyncio as aredis

from parley.shared.clock import iso, now_ms
from parley.shared.errors import NotFound, TooManyWebhooks
from parley.shared.events import WebhookEvent
from parley.shared.sealing import Sealer, Unsealable
from parley.shared.store import keys, scripts
from parley.shared.store.scripts.calls import ClaimDeliveriesCall, CreateDeliveryCall, RecordAttemptCall

log = logging.getLogger("parley.webhooks")

KIND_WEBHOOK = "webhook"
KIND_A2A = "a2a"
EVENTS = tuple(event.value for event in WebhookEvent)
MAX_URL_CHARS = 2048
MAX_LISTED = 100
"""Deliveries listed per webhook (the newest); older ones are still sent, and expire."""
MAX_A2A_PER_TASK = 10
"""Most A2A push configs one task may have."""
MAX_A2A_CONFIGS = 1000
"""Most A2A push configs one tenant may hold at once (those of tasks no longer kept are dropped first)."""
PROVISIONAL_MS = 60_000
"""A push config younger than this is kept although its task does not exist (yet): SendMessage stores its
config before it queues the task, so the task's first end finds it."""
MAX_ATTEMPTS_KEPT = 50
"""Attempts kept in a delivery's record (the newest); `attempt_count` counts them all."""
DELIVERY_STATUSES = ("pending", "delivered", "failed")
MAX_EXAMINED = 500
"""Most due deliveries one claim looks at (those of tenants at their cap are parked, so the next claim goes on past
them): a claim's work stays bounded however large one tenant's backlog grows."""


def check_url(url: str) -> str:
    """An http(s) URL with a host, no user or password and no fragment (422 otherwise)."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise ValueError(f"the URL is a string of at most {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise ValueError(f"not a valid URL: {error}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError("a webhook's URL is http:// or https://")
    if not parsed.host:
        raise ValueError("the URL has no host")
    if parsed.userinfo:
        raise ValueError("the URL may not hold a user or password")
    if parsed.fragment:
        raise ValueError("the URL may not have a #fragment")
    return str(parsed)


def check_events(events: list[str] | None) -> list[str]:
    """The event types asked for, each once, in the order given (None: all four)."""
    if events is None:
        return list(EVENTS)
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise ValueError(f"unknown event {str(unknown[0])[:80]!r}: events are {', '.join(EVENTS)}")
    if not events:
        raise ValueError("events may not be empty (leave it out for all of them)")
    return list(dict.fromkeys(events))


def new_webhook_id() -> str:
    return f"wh_{uuid.uuid4().hex}"


def new_secret() -> str:
    return f"whsec_{secrets.token_hex(24)}"


def delivery_id(webhook_id: str, entry_id: str) -> str:
    """The delivery of the turn-ends entry `entry_id` to `webhook_id`: the same however often the entry is handled."""
    return "dlv_" + hashlib.sha256(f"{webhook_id} {entry_id}".encode()).hexdigest()[:32]


def due_member(tenant: str, delivery: str) -> str:
    return f"{tenant} {delivery}"


@dataclass(frozen=True)
class Webhook:
    """One subscription. `events`: the types it wants; `job_id` (A2A only): the one task it follows."""

    id: str
    url: str
    events: list[str]
    secret: str = field(repr=False)
    created_at: int = 0
    kind: str = KIND_WEBHOOK
    job_id: str | None = None
    token: str | None = field(default=None, repr=False)
    config_id: str | None = None
    """A2A: the client's own name of the config (its `id`)."""
    authorization: str | None = field(default=None, repr=False)
    """A2A: the Authorization header's value (`<scheme> <credentials>`), when the client gave credentials."""
    legacy: bool = False
    """A2A: the config was set in 0.3's dialect (the task is sent as 0.3 shows it)."""

    def public(self, *, with_secret: bool = False) -> dict[str, Any]:
        """As `/api/v1/webhooks` shows it: the secret only when it was just made."""
        shown: dict[str, Any] = {"id": self.id, "url": self.url, "events": self.events,
                                 "created_at": iso(self.created_at)}  # fmt: skip
        if with_secret:
            shown["secret"] = self.secret
        return shown

    def wants(self, event_type: str, job_id: str) -> bool:
        if self.kind == KIND_A2A:
            return self.job_id == job_id
        return event_type in self.events


def encode_webhook(hook: Webhook, sealer: Sealer) -> str:
    """The hash value of a webhook, its secret (and an A2A config's token and authorization) sealed."""
    data: dict[str, Any] = {"kind": hook.kind, "url": hook.url, "events": hook.events,
                            "secret": sealer.seal(hook.secret), "created_at": hook.created_at}  # fmt: skip
    if hook.kind == KIND_A2A:
        data.update(job_id=hook.job_id, token=_seal(sealer, hook.token), config_id=hook.config_id,
                    authorization=_seal(sealer, hook.authorization), legacy=hook.legacy)  # fmt: skip
    return json.dumps(data)


def _seal(sealer: Sealer, value: str | None) -> str | None:
    return None if value is None else sealer.seal(value)


def _unseal(sealer: Sealer, value: str | None) -> str | None:
    return None if value is None else sealer.unseal(value)


def decode_webhook(webhook_id: str, raw: str | None, sealer: Sealer) -> Webhook | None:
    """The hash value as a webhook, its credentials unsealed; None for a missing or unreadable one (logged, without
    its secret: a sealed value no key of PARLEY_SECRETS_KEY opens makes it unreadable)."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Webhook(id=webhook_id, url=data["url"], events=list(data["events"]),
                       secret=sealer.unseal(data["secret"]), created_at=int(data.get("created_at") or 0),
                       kind=data.get("kind") or KIND_WEBHOOK, job_id=data.get("job_id"),
                       token=_unseal(sealer, data.get("token")), config_id=data.get("config_id"),
                       authorization=_unseal(sealer, data.get("authorization")),
                       legacy=bool(data.get("legacy")))  # fmt: skip
    except Unsealable as error:
        log.warning("webhook %r is left out: %s", webhook_id, error)
        return None
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("webhook %r has an unreadable record; left out", webhook_id)
        return None


def delivery_public(delivery: str, record: dict[str, str]) -> dict[str, Any]:
    """A delivery as `GET /api/v1/webhooks/{id}/deliveries` shows it."""
    attempts = json.loads(record.get("attempts") or "[]")
    shown = [{"at": iso(attempt.get("at")), **{name: attempt[name] for name in ("status_code", "error")
                                               if attempt.get(name) is not None},
              "duration_ms": attempt.get("duration_ms", 0)} for attempt in attempts]  # fmt: skip
    status = record.get("status", "pending")
    next_at = record.get("next_attempt_at") or None
    return {"id": delivery, "type": record.get("type", ""), "job_id": record.get("job_id", ""), "status": status,
            "attempts": shown, "attempt_count": int(record.get("attempt_count") or 0),
            "created_at": iso(record.get("created_at")),
            "next_attempt_at": iso(next_at) if status == "pending" else None}  # fmt: skip


class WebhookStore:
    """The web's reads and writes; `tenant` scopes every call."""

    def __init__(self, r: redis.Redis, max_webhooks: int, sealer: Sealer) -> None:
        """`sealer`: the settings' (PARLEY_SECRETS_KEY), which seals credentials as they are written."""
        self.r = r
        self.max_webhooks = max_webhooks
        self.sealer = sealer

    def all(self, tenant: str) -> list[Webhook]:
        """Every subscription of the tenant (webhooks and A2A push configs), oldest first."""
        raw: dict[str, str] = self.r.hgetall(keys.webhooks(tenant))  # type: ignore[assignment]
        hooks = [decode_webhook(webhook_id, value, self.sealer) for webhook_id, value in raw.items()]
        return sorted((hook for hook in hooks if hook is not None), key=lambda hook: (hook.created_at, hook.id))

    def listed(self, tenant: str, kind: str = KIND_WEBHOOK) -> list[Webhook]:
        return [hook for hook in self.all(tenant) if hook.kind == kind]

    def find(self, tenant: str, webhook_id: str, kind: str = KIND_WEBHOOK) -> Webhook | None:
        if len(webhook_id) > 100:
            return None
        hook = decode_webhook(webhook_id, self.r.hget(keys.webhooks(tenant), webhook_id), self.sealer)  # type: ignore[arg-type]
        return hook if hook is not None and hook.kind == kind else None

    def get(self, tenant: str, webhook_id: str) -> Webhook:
        hook = self.find(tenant, webhook_id)
        if hook is None:
            raise NotFound(f"webhook {webhook_id[:80]!r} not found")
        return hook

    def create(self, tenant: str, hook: Webhook, *, cap: int | None = None) -> Webhook:
        """Store a new subscription; 409 `too_many_webhooks` when the tenant holds `cap` (default: the webhook cap)
        of its kind already (checked and written in one transaction: two requests at once cannot both pass)."""
        key = keys.webhooks(tenant)
        limit = self.max_webhooks if cap is None else cap

        def write(pipe: redis.client.Pipeline) -> None:
            values: list[str] = pipe.hvals(key)  # type: ignore[assignment]
            held = sum(1 for value in values if _kind(value) == hook.kind)
            if held >= limit:
                raise TooManyWebhooks(f"this tenant has {limit} webhooks, the most it may hold "
                                      "(PARLEY_MAX_WEBHOOKS): delete one first")  # fmt: skip
            pipe.multi()
            pipe.hset(key, hook.id, encode_webhook(hook, self.sealer))

        self.r.transaction(write, key)
        return hook

    def task_configs(self, tenant: str, job_id: str) -> list[Webhook]:
        """The A2A push configs of one task, oldest first."""
        return [hook for hook in self.listed(tenant, KIND_A2A) if hook.job_id == job_id]

    def put_config(self, tenant: str, hook: Webhook) -> Webhook:
        """Store an A2A push config, replacing one of the same task and id. Configs of tasks no longer kept are
        dropped first; past MAX_A2A_PER_TASK for its task or MAX_A2A_CONFIGS for the tenant: 409."""
        key = keys.webhooks(tenant)
        configs = self.listed(tenant, KIND_A2A)
        with self.r.pipeline(transaction=False) as pipe:
            for config in configs:
                pipe.exists(keys.job(tenant, config.job_id or ""))
            kept = pipe.execute()
        settled = now_ms() - PROVISIONAL_MS  # younger: maybe a SendMessage's, stored just before its task
        gone = [config.id for config, exists in zip(configs, kept, strict=True)
                if not exists and config.id != hook.id and config.created_at < settled]  # fmt: skip
        if gone:
            self.r.hdel(key, *gone)

        def write(pipe: redis.client.Pipeline) -> None:
            values: dict[str, str] = pipe.hgetall(key)  # type: ignore[assignment]
            decoded = (decode_webhook(one, raw, self.sealer) for one, raw in values.items() if one != hook.id)
            others = [found for found in decoded if found is not None and found.kind == KIND_A2A]
            if sum(1 for found in others if found.job_id == hook.job_id) >= MAX_A2A_PER_TASK:
                raise TooManyWebhooks(f"this task has {MAX_A2A_PER_TASK} push notification configs, the most it may "
                                      "have: delete one first")  # fmt: skip
            if len(others) >= MAX_A2A_CONFIGS:
                raise TooManyWebhooks(f"this tenant's tasks have {MAX_A2A_CONFIGS} push notification configs, the "
                                      "most they may have: delete some first")  # fmt: skip
            pipe.multi()
            pipe.hset(key, hook.id, encode_webhook(hook, self.sealer))

        self.r.transaction(write, key)
        return hook

    def delete(self, tenant: str, webhook_id: str, kind: str = KIND_WEBHOOK) -> None:
        """Remove a subscription: its pending deliveries stop (CLAIM_DELIVERIES ends them `failed`). Read by its
        kind alone, so one whose secret no key opens any more (shared/sealing.py) can still be removed."""
        raw = self.r.hget(keys.webhooks(tenant), webhook_id) if len(webhook_id) <= 100 else None
        if raw is None or _kind(raw) != kind:  # type: ignore[arg-type]
            raise NotFound(f"webhook {webhook_id[:80]!r} not found")
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.webhooks(tenant), webhook_id)
            pipe.delete(keys.webhook_deliveries(tenant, webhook_id))
            pipe.execute()

    def deliveries(self, tenant: str, webhook_id: str, limit: int = MAX_LISTED) -> list[dict[str, Any]]:
        """The webhook's deliveries, newest first (those still kept)."""
        self.get(tenant, webhook_id)
        ids: list[str] = self.r.zrevrange(keys.webhook_deliveries(tenant, webhook_id), 0, limit - 1)  # type: ignore[assignment]
        with self.r.pipeline(transaction=False) as pipe:
            for one in ids:
                pipe.hgetall(keys.webhook_delivery(tenant, one))
            records = pipe.execute()
        return [delivery_public(one, record) for one, record in zip(ids, records, strict=True) if record]


def _kind(raw: str) -> str:
    try:
        return str(json.loads(raw).get("kind") or KIND_WEBHOOK)
    except (ValueError, AttributeError):
        return ""


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt as it is recorded."""

    at: int
    duration_ms: int
    status_code: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def encode(self) -> str:
        data: dict[str, Any] = {"at": self.at, "duration_ms": self.duration_ms}
        if self.status_code is not None:
            data["status_code"] = self.status_code
        if self.error is not None:
            data["error"] = self.error
        return json.dumps(data)


class Deliveries:
    """The dispatcher's side: subscriptions by tenant, deliveries made, claimed and recorded (`redis.asyncio`)."""

    def __init__(self, aio: aredis.Redis, sealer: Sealer) -> None:
        """`sealer`: the settings' (PARLEY_SECRETS_KEY), which unseals the credentials a delivery is sent with."""
        self.aio = aio
        self.sealer = sealer
        self._create = aio.register_script(scripts.CREATE_DELIVERY)
        self._claim = aio.register_script(scripts.CLAIM_DELIVERIES)
        self._record = aio.register_script(scripts.RECORD_ATTEMPT)

    async def subscriptions(self, tenant: str) -> list[Webhook]:
        raw = await self.aio.hgetall(keys.webhooks(tenant))
        hooks = [decode_webhook(webhook_id, value, self.sealer) for webhook_id, value in raw.items()]
        return [hook for hook in hooks if hook is not None]

    async def subscription(self, tenant: str, webhook_id: str) -> Webhook | None:
        return decode_webhook(webhook_id, await self.aio.hget(keys.webhooks(tenant), webhook_id), self.sealer)

    async def create(self, tenant: str, hook: Webhook, entry_id: str, event_type: str, job_id: str, body: bytes,
                     keep_ms: int) -> bool:  # fmt: skip
        """Make the delivery of this entry to `hook`, due now; False when it was made already."""
        delivery = delivery_id(hook.id, entry_id)
        created = now_ms()
        fields = {"tenant": tenant, "webhook": hook.id, "type": event_type, "job_id": job_id,
                  "body": body.decode(), "status": "pending", "created_at": created,
                  "next_attempt_at": created, "attempt_count": 0}  # fmt: skip
        call = CreateDeliveryCall(
            delivery=keys.webhook_delivery(tenant, delivery), index=keys.webhook_deliveries(tenant, hook.id),
            due=keys.webhook_due(), delivery_id=delivery, member=due_member(tenant, delivery),
            now_ms=created, keep_ms=keep_ms, max_listed=MAX_LISTED,
            fields=tuple(item for name, value in fields.items() for item in (name, str(value))),
        )  # fmt: skip
        return bool(await self._create(keys=call.keys(), args=call.args()))

    async def claim(self, token: str, limit: int, lease_ms: int, tenant_cap: int) -> list[str]:
        """Lease up to `limit` due deliveries to this claim (`token`), no tenant past `tenant_cap` attempts in flight
        across the deployment: their members, `<tenant> <delivery id>`."""
        if limit <= 0:
            return []
        call = ClaimDeliveriesCall(
            due=keys.webhook_due(), parked_tenants=keys.webhook_parked_tenants(), now_ms=now_ms(), lease_ms=lease_ms,
            limit=limit, token=token, delivery_prefix=keys.webhook_delivery("", "")[:-1],
            webhooks_prefix=keys.webhooks(""), tenant_cap=tenant_cap, leases_prefix=keys.webhook_leases(""),
            parked_prefix=keys.webhook_parked(""), max_examined=max(limit, MAX_EXAMINED),
        )  # fmt: skip
        claimed = await self._claim(keys=call.keys(), args=call.args())
        return [str(member) for member in claimed]

    async def read(self, tenant: str, delivery: str) -> dict[str, str]:
        return await self.aio.hgetall(keys.webhook_delivery(tenant, delivery))  # type: ignore[no-any-return]

    async def record(self, member: str, token: str, attempt: Attempt, outcome: str, next_ms: int,
                     keep_ms: int) -> str:  # fmt: skip
        """Record `attempt` and its `outcome` (delivered | retry | failed): the delivery's status after it."""
        tenant, _, delivery = member.partition(" ")
        call = RecordAttemptCall(
            delivery=keys.webhook_delivery(tenant, delivery), due=keys.webhook_due(),
            leases=keys.webhook_leases(tenant), member=member, token=token,
            call_id=uuid.uuid4().hex, attempt=attempt.encode(), outcome=outcome, next_ms=next_ms, keep_ms=keep_ms,
            max_attempts=MAX_ATTEMPTS_KEPT,
        )  # fmt: skip
        return str(await self._record(keys=call.keys(), args=call.args()))
