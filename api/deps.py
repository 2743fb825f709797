"""FastAPI dependencies as `Annotated` aliases: the runtime, the caller's tenant (its request rate
checked) for `/api/v1` and for the seed routes, and the caller's API key."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from parley.shared import logs
from parley.shared.errors import TooManyRequests, Unauthorized
from parley.shared.store import keys

from .runtime import WebRuntime

bearer = HTTPBearer(auto_error=False, description="An API key from PARLEY_API_KEYS.")


async def get_runtime(request: Request) -> WebRuntime:
    return request.app.state.rt  # type: ignore[no-any-return]


Runtime = Annotated[WebRuntime, Depends(get_runtime)]


def tenant_for_key(rt: WebRuntime, key: str | None) -> str:
    """The tenant owning `key`; 401 for a missing or unknown key (compared in constant time)."""
    if key:
        for known, tenant in rt.tenants_by_key.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return tenant
    raise Unauthorized("missing or unknown API key: send `Authorization: Bearer <key>`")


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def check_request_rate(rt: WebRuntime, tenant: str) -> None:
    """429 once the tenant sent PARLEY_TENANT_REQUESTS_PER_S requests in the current second, counted in
    Redis so the limit holds across every web process and every key of the tenant (one round trip)."""
    limit = rt.settings.tenant_requests_per_s
    if not limit:
        return
    key = keys.request_rate(tenant)
    async with rt.hub.redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, px=1000, nx=True)  # the window starts with its first request
        pipe.incr(key)
        _, count = await pipe.execute()
    if count > limit:
        raise TooManyRequests(f"this tenant sent more than {limit} requests this second; slow down", retry_after_s=1)


async def get_tenant(rt: Runtime, credentials: Credentials) -> str:
    tenant = tenant_for_key(rt, credentials.credentials if credentials else None)
    logs.bind(tenant=tenant)  # async dependency: runs in the request's task, so the route's logs carry it
    await check_request_rate(rt, tenant)
    return tenant


Tenant = Annotated[str, Depends(get_tenant)]


async def get_compat_tenant(rt: Runtime, credentials: Credentials) -> str:
    """The seed-article routes: keyless as PARLEY_COMPAT_TENANT when set, else like /api/v1."""
    if rt.settings.compat_tenant and credentials is None:
        tenant = rt.settings.compat_tenant
    else:
        tenant = tenant_for_key(rt, credentials.credentials if credentials else None)
    logs.bind(tenant=tenant)
    await check_request_rate(rt, tenant)
    return tenant


CompatTenant = Annotated[str, Depends(get_compat_tenant)]


async def get_api_key(credentials: Credentials) -> str:
    """The caller's key as sent ('' without one): per-key limits count by it."""
    return credentials.credentials if credentials else ""


ApiKey = Annotated[str, Depends(get_api_key)]
