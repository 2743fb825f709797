"""`/api/v1/webhooks`: the tenant's webhooks (register, list, read, delete) and each one's deliveries.

A registration is checked before anything is stored: the URL (http(s), no credentials or fragment in it, a host
that resolves to public addresses or ones PARLEY_PRIVATE_NETWORKS_ALLOWED names: else 422) and the event types
(`turn.finished`, `turn.failed`, `turn.canceled`, `turn.waiting`; default all four). The signing secret is shown
in the 201 answer only. The worker checks the address again at every delivery (worker/webhook_post.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from parley.shared.clock import now_ms
from parley.shared.store import webhooks as store
from parley.shared.store.webhooks import Webhook, WebhookStore

from ..deps import Runtime, Tenant
from ..errors import documented
from ..runtime import WebRuntime
from ..service.addresses import check_public_url

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], responses=documented(401, 404, 409, 422, 503))

PURPOSE = "webhooks must be public unless PARLEY_PRIVATE_NETWORKS_ALLOWED names them"


class WebhookCreate(BaseModel):
    """A webhook to register."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., description="Where each event is POSTed (http:// or https://).")
    events: list[str] | None = Field(None, description="Event types sent (default: all four).", max_length=16)

    _url = field_validator("url")(store.check_url)
    _events = field_validator("events")(store.check_events)


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: str | None


class WebhookCreated(WebhookPublic):
    secret: str = Field(..., description="Signs every delivery (Parley-Signature); shown here only.")


class DeliveryAttempt(BaseModel):
    at: str | None
    status_code: int | None = None
    error: str | None = None
    duration_ms: int


class DeliveryPublic(BaseModel):
    id: str = Field(..., description="Sent as Parley-Delivery-Id, the same on every attempt.")
    type: str
    job_id: str
    status: str = Field(..., description="pending | delivered | failed")
    attempts: list[DeliveryAttempt] = Field(..., description="Oldest first (the newest 50 are kept).")
    attempt_count: int
    created_at: str | None
    next_attempt_at: str | None = Field(None, description="When a pending delivery is tried next.")


class DeliveryList(BaseModel):
    data: list[DeliveryPublic]


class WebhookList(BaseModel):
    data: list[WebhookPublic]


def _store(rt: WebRuntime) -> WebhookStore:
    return WebhookStore(rt.clients.text, rt.settings.max_webhooks, rt.settings.sealer)


async def check_address(rt: WebRuntime, url: str) -> None:
    """422 when the URL's host does not resolve or reaches a private address the operator did not allow."""
    await check_public_url(rt, url, purpose=PURPOSE, field="url")


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(body: WebhookCreate, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """Register a webhook; its `secret` is in this answer only."""
    await check_address(rt, body.url)
    hook = Webhook(id=store.new_webhook_id(), url=body.url, events=store.check_events(body.events),
                   secret=store.new_secret(), created_at=now_ms())  # fmt: skip
    await run_in_threadpool(_store(rt).create, tenant, hook)
    return hook.public(with_secret=True)


@router.get("", response_model=WebhookList)
async def list_webhooks(rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """The tenant's webhooks, oldest first (no secrets)."""
    hooks = await run_in_threadpool(_store(rt).listed, tenant)
    return {"data": [hook.public() for hook in hooks]}


@router.get("/{webhook_id}", response_model=WebhookPublic)
async def get_webhook(webhook_id: str, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """One webhook (no secret)."""
    return (await run_in_threadpool(_store(rt).get, tenant, webhook_id)).public()


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, rt: Runtime, tenant: Tenant) -> Response:
    """Remove a webhook: nothing more is sent to it, pending deliveries included."""
    await run_in_threadpool(_store(rt).delete, tenant, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(webhook_id: str, rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """The webhook's deliveries, newest first (the newest 100 kept), each with its attempts."""
    return {"data": await run_in_threadpool(_store(rt).deliveries, tenant, webhook_id)}
